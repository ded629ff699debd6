"""How long a study's answers may be, and whether every prompt it will build fits the model.

Both come from the data, before any model is trained (docs/design.md, Answer lengths):

- a split's generation budget is its longest gold answer in the model's tokens plus a margin
  (`GenerationConfig`), so a sentence answer is judged whole, not on its first few words;
- every sequence the study will put through the model — each question with its answer (scoring,
  training), each question with its budget (greedy answers), each attack's prompts, MUSE's KnowMem
  prompts — is measured, and the longest that does not fit is refused in one line naming the item,
  its split and the attack, with what to change. The built-in model, unless its config sets
  ``max_positions``, gets a context that holds them all (`context_for`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..config import GenerationConfig, StudyConfig
from ..data import SPLITS, Item
from ..data.benchmarks import Benchmark
from ..data.benchmarks.muse import knowmem_prompt
from ..errors import UnpactError
from ..recovery import ATTACKS, AttackContext
from ..recovery.base import settings_of
from .standard import KNOWMEM_MAX_NEW_TOKENS


def answer_budgets(fmt, splits: dict[str, list[Item]], generation: GenerationConfig) -> dict[str, int]:
    """Per split: the new tokens a generated answer may take ({split: int}, every split in SPLITS
    that has items): ``generation.max_new_tokens[split]`` where set, else the longest gold answer
    (EOS included) plus ``generation.margin``."""
    out = {}
    for split in SPLITS:
        items = splits.get(split) or []
        if not items:
            continue
        fixed = generation.max_new_tokens.get(split)
        out[split] = fixed or max(len(fmt.encode_answer(it.answer, eos=True)) for it in items) + generation.margin
    return out


@dataclass(frozen=True)
class Need:
    """One sequence the study will build: ``prompt`` tokens and ``extra`` after them (the answer
    scored, or the tokens generated), for ``item`` of ``split``, as ``use`` (e.g. "few_shot prompt")."""

    prompt: int
    extra: int
    item: str
    split: str
    use: str
    extra_is: str  # "answer" or "generated"
    advice: str

    @property
    def tokens(self) -> int:
        return self.prompt + self.extra


def needs(fmt, cfg: StudyConfig, splits: dict[str, list[Item]], bench: Benchmark | None = None,
          attacked: tuple[str, ...] = ("forget",)) -> Iterator[Need]:
    """Every sequence a study of ``cfg`` on ``splits`` will build (see the module docstring).
    ``attacked``: the splits the attacks run on as forget items — with no gold model the never-known
    retain items are attacked too (`unpact.study.attacks`)."""
    budgets = answer_budgets(fmt, splits, cfg.generation)
    widest = max(budgets.values(), default=cfg.generation.margin)
    for split in SPLITS:
        for it in splits.get(split) or []:
            q = len(fmt.encode(it.question).ids)
            answers = [it.answer, *it.perturbed_answers]
            longest = max(len(fmt.encode_answer(a, eos=True)) for a in answers)
            yield Need(q, longest, it.id, split, "question + answer", "answer", "shorten the item's question or answer")
            yield Need(q, budgets[split], it.id, split, "question (greedy answer)", "generated",
                       f"lower generation.margin or set generation.max_new_tokens.{split}")
            if it.paraphrased_question:
                yield Need(len(fmt.encode(it.paraphrased_question).ids), longest, it.id, split,
                           "paraphrased question + answer", "answer", "shorten the item's paraphrased_question")
    recovery = cfg.recovery
    for attack in ATTACKS.values():
        if not (attack.always or attack.name in recovery.attacks):
            continue
        settings = settings_of(attack, recovery)
        for target in attacked:
            view = splits if target == "forget" else {**splits, "forget": splits.get(target) or []}
            ctx = AttackContext(None, view, cfg.seed, None, alpha=cfg.attribution.alpha, beta=cfg.attribution.beta)
            for split, prompts in attack.planned(ctx, settings):
                named = target if split == "forget" else split
                for it, prompt in zip(view[split], prompts, strict=True):
                    yield Need(len(fmt.encode(prompt).ids), widest, it.id, named, f"{attack.name} prompt",
                               "generated", attack.length_advice)
    if bench is not None and bench.icl:
        for split in ("forget", "retain"):  # KnowMem drops demonstrations to fit; the question must
            for it in splits.get(split) or []:
                yield Need(len(fmt.encode_text(knowmem_prompt([], it.question))), KNOWMEM_MAX_NEW_TOKENS, it.id,
                           split, "MUSE KnowMem prompt", "generated", "shorten the item's question")


def longest(found: Iterator[Need]) -> tuple[Need | None, list[Need]]:
    """The longest need and all of them (as a list)."""
    every = list(found)
    return max(every, key=lambda n: n.tokens, default=None), every


def check(every: list[Need], context: int | None, model: str, builtin: bool = False) -> None:
    """Refuse the longest need past ``context`` tokens, in one line naming its item, split and use,
    how many others do not fit either, and what to change (``builtin``: the built-in model, whose
    context is a setting)."""
    if context is None:
        return
    over = [n for n in every if n.tokens > context]
    if not over:
        return
    worst = max(over, key=lambda n: n.tokens)
    others = f"; {len(over) - 1} more sequence(s) do not fit either" if len(over) > 1 else ""
    room = ("raise model.max_positions, or leave it out to size the context from the data" if builtin
            else "or use a model with a longer context")
    raise UnpactError(f"{worst.use} of {worst.split} item {worst.item!r} is {worst.tokens} tokens ({worst.prompt} prompt "
                      f"+ {worst.extra} {worst.extra_is}), past {model}'s context of {context}{others}; "
                      f"{worst.advice}, {room}")
