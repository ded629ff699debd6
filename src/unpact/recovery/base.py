"""What every recovery attack shares: its key, its result, what it is given, and the registry.

An attack is one module of this package holding one `Attack` subclass decorated with `register`. The
class declares everything the rest of unpact derives from it: its name and help line (CLI help, the
``recovery.attacks`` check), whether it changes the weights or needs them (the audit refuses those for
a served model; reports keep them apart), the control its recovery is read against, and its settings
(a dataclass whose fields become ``recovery.<attack>_<field>`` in a study config, checked at load
time from each field's ``check`` metadata). Its `Attack.run` returns one `AttackRun` per `AttackKey`:
the prompts asked and the answers (or samples) they got, which the study judges with the one
correctness rule (`judge`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..data import Item
from ..errors import UnpactError, did_you_mean
from ..evaluation.correctness import DEFAULT_ROUGE_THRESHOLD, is_correct, item_correctness
from ..registry import Registry
from ..scoring import Scorer


@dataclass(frozen=True)
class AttackKey:
    """Which run of which attack a result belongs to.

    ``variant`` splits one attack into several runs (FocusOnKey's emphasis style, quantisation's bit
    width); ``keywords`` is FocusOnKey's keyword source (oracle, self, heuristic, or one of its two
    placebos); ``split`` is the items attacked (forget, or retain/utility for a do-no-harm control).
    `name` is the key as results files and reports write it (``focus_on_key:instruction``,
    ``quantize_int8``); `parse` reads it back.
    """

    attack: str
    variant: str = ""
    keywords: str = ""
    split: str = "forget"

    @property
    def name(self) -> str:
        """The key as written in metrics.json, records.jsonl and report columns."""
        return ATTACKS[self.attack].key_name(self)

    @property
    def is_placebo(self) -> bool:
        """A control run: the same rewrite with other words emphasised (FocusOnKey's placebos)."""
        return self.keywords.startswith("placebo")

    @property
    def changes_weights(self) -> bool:
        return ATTACKS[self.attack].changes_weights

    @staticmethod
    def parse(name: str) -> AttackKey:
        """The key of a result name written by `name` (every registered attack is asked in turn)."""
        for attack in ATTACKS.values():
            key = attack.parse_name(name)
            if key is not None:
                return key
        raise UnpactError(f"unknown attack result '{name}'{did_you_mean(name.split(':')[0], ATTACKS)}; "
                          f"known attacks: {', '.join(ATTACKS)}")


@dataclass
class AttackRun:
    """What one run of an attack asked and got, per attacked item (all lists of length [N]).

    ``samples`` ([N][n]) for an attack that draws several answers per prompt: the item counts as
    recovered if any is correct, and ``answers`` holds the first non-empty one. ``keywords`` ([N][k])
    for the runs that emphasise words.

    ``correct`` ([N] bool) for a white-box reading whose evidence is not a generated answer (the logit
    lens's layer ranks, a probe's choice among candidates): the attack judges each item itself and
    ``answers`` says in words what it found. ``details``: per-run figures kept with the result (a
    layer profile, the k of each many-shot prompt), JSON-ready; a list with one value per attacked
    item is read as per item (a study that attacks only the forgotten items spreads it over all N).

    An attack must accept an empty forget split (a model that forgot nothing) and then do no work
    for it."""

    prompts: list[str]
    answers: list[str]
    samples: list[list[str]] | None = None
    keywords: list[list[str]] | None = None
    correct: list[bool] | None = None
    details: dict | None = None


@dataclass
class AttackContext:
    """What the study hands an attack: the unlearned model and everything else it may use.

    ``rescore`` wraps a changed model (a weight attack's copy) in a scorer with the study's settings
    (dtype, batch sizes); ``base`` is the original model's stored result (its attributions give the
    oracle keywords) and ``answers`` the unlearned model's greedy answers per split. ``do_no_harm``:
    also the runs on other splits than forget (FocusOnKey's retain/utility rewrites); a control's
    attacks (the gold model, never-known items) are read on the forget items only and skip them."""

    scorer: Scorer
    splits: dict[str, list[Item]]
    seed: int
    rescore: Callable[[Any], Scorer]
    base: dict | None = None
    answers: dict | None = None
    alpha: float = 0.1
    beta: int = 3
    do_no_harm: bool = True

    @property
    def forget(self) -> list[Item]:
        return self.splits["forget"]

    @property
    def questions(self) -> list[str]:
        return [it.question for it in self.splits["forget"]]


def setting(default: Any, help: str, check: Callable[[Any], bool] | None = None, need: str = "",
            each: bool = False) -> Any:
    """A field of an attack's settings: its default, a help line and the check a study config's value
    must pass (``need`` says what to use instead; ``each``: checked on every element of a list)."""
    factory = (lambda: list(default)) if isinstance(default, list) else None
    meta = {"help": help, "check": check, "need": need, "each": each}
    if factory:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class NoSettings:
    """An attack with nothing to set."""


class Attack:
    """One way of bringing forgotten answers back. Subclasses set the class attributes and `run`."""

    name: ClassVar[str]
    help: ClassVar[str]
    # Where it runs among the attacks, and so its place in results and report columns.
    order: ClassVar[int]
    changes_weights: ClassVar[bool] = False
    needs_weights: ClassVar[bool] = False  # white-box: a served model cannot be attacked this way
    # What a white-box attack needs that a served model does not give, in a few words (the audit's
    # refusal names it): "changes the weights", "reads every layer's hidden states".
    needs: ClassVar[str] = "changes the weights"
    # Where a recovery by this attack says the fact still is (the report's "where it is still" row):
    # one of `CHANNELS`.
    channel: ClassVar[str] = "rewrite"
    # Runs in every study whatever ``recovery.attacks`` lists (the unPact attack itself).
    always: ClassVar[bool] = False
    # In ``recovery.attacks`` unless a config lists its own.
    default: ClassVar[bool] = True
    # What its recovery is read against, in words (`unpact attacks`): every attack's control is the
    # same attack where the knowledge is absent (`unpact.study.attacks`); an attack may add its own.
    control: ClassVar[str] = "the gold model under the same attack, else never-known retain items"
    Settings: ClassVar[type] = NoSettings
    # The settings' prefix in a study config: ``recovery.<prefix><field>``.
    prefix: ClassVar[str | None] = None

    @classmethod
    def config_prefix(cls) -> str:
        return f"{cls.name}_" if cls.prefix is None else cls.prefix

    @classmethod
    def key_name(cls, key: AttackKey) -> str:
        """How a result of this attack is named in results files (``name`` or ``name_variant``)."""
        return f"{cls.name}_{key.variant}" if key.variant else cls.name

    @classmethod
    def parse_name(cls, name: str) -> AttackKey | None:
        """The key of ``name`` if this attack wrote it, else None."""
        if name == cls.name:
            return AttackKey(cls.name)
        variant = name.removeprefix(cls.name + "_")
        return AttackKey(cls.name, variant) if variant != name and cls.owns_variant(variant) else None

    @classmethod
    def owns_variant(cls, variant: str) -> bool:
        """Whether ``variant`` is one this attack can produce (keeps ``few_shot`` from parsing as a
        variant of an attack named ``few``)."""
        return False

    # What to change when one of its prompts is too long for the model (`unpact.study.lengths`).
    length_advice: ClassVar[str] = "shorten the item's question"

    def run(self, ctx: AttackContext, settings: Any) -> dict[AttackKey, AttackRun]:
        """Attack the forget items of ``ctx`` (and any control splits) with ``settings``."""
        raise NotImplementedError

    def planned(self, ctx: AttackContext, settings: Any) -> Iterator[tuple[str, list[str]]]:
        """(split, one prompt per item of that split) for every prompt `run` will ask, known before
        any model exists (``ctx.scorer`` is None): where a prompt depends on the model (FocusOnKey's
        keywords), the longest it can be. The study checks their lengths at load time
        (`unpact.study.lengths`). The default: each forget question as written (sampling,
        quantisation and relearning ask those)."""
        yield "forget", ctx.questions


# The channels an attack can bring a fact back through, in the order the report shows them. "output"
# is the unlearned model asked plainly; every attack declares one of the others.
CHANNELS = {"output": "the plain answer", "rewrite": "a rewritten or prefixed prompt",
            "sampling": "sampled answers", "hidden": "hidden layers (logit lens, direction ablation)",
            "probe": "a linear probe on hidden states", "weights": "changed weights (quantisation, relearning)"}


class AttackRegistry(Registry[Attack]):
    """The registered attacks by name, in run order (their declared ``order``, not import order)."""

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(super().names(), key=lambda n: self._objects[n].order))

    def selectable(self) -> list[str]:
        """The names ``recovery.attacks`` may list (the others always run)."""
        return [n for n, a in self.items() if not a.always]

    def defaults(self) -> list[str]:
        """What ``recovery.attacks`` holds when a config does not say."""
        return [n for n in self.selectable() if self[n].default]


ATTACKS = AttackRegistry("attack")


def register(cls: type[Attack]) -> type[Attack]:
    """Class decorator: make an attack known to studies, audits, configs, reports and the CLI."""
    if not dataclasses.is_dataclass(cls.Settings):
        raise TypeError(f"attack {cls.name}: Settings must be a dataclass")
    if cls.channel not in CHANNELS or cls.channel == "output":
        raise TypeError(f"attack {cls.name}: channel {cls.channel!r} is not one of {', '.join(list(CHANNELS)[1:])}")
    ATTACKS.add(cls.name, cls(), help=cls.help)
    return cls


def settings_fields() -> Iterator[tuple[str, Attack, dataclasses.Field]]:
    """(config field name, attack, settings field) for every attack's settings, in attack order."""
    for attack in ATTACKS.values():
        for f in dataclasses.fields(attack.Settings):
            yield attack.config_prefix() + f.name, attack, f


def settings_of(attack: Attack, recovery: Any) -> Any:
    """``attack``'s settings dataclass, read from a study's flat ``recovery`` config."""
    values = {f.name: getattr(recovery, attack.config_prefix() + f.name) for f in dataclasses.fields(attack.Settings)}
    return attack.Settings(**values)


def check_settings(recovery: Any, fail: Callable[[str, Any, str], None]) -> None:
    """Run every settings field's check on ``recovery``; ``fail(path, value, need)`` on the first bad one."""
    for name, _, f in settings_fields():
        check, value = f.metadata.get("check"), getattr(recovery, name)
        if check is None:
            continue
        if f.metadata.get("each"):
            for i, v in enumerate(value):
                if not check(v):
                    fail(f"recovery.{name}[{i}]", v, f.metadata["need"])
        elif not check(value):
            fail(f"recovery.{name}", value, f.metadata["need"])


def judge(run: AttackRun, items: Sequence[Item], threshold: float) -> np.ndarray:
    """Boolean [N]: did the run recover each item's answer (any of its samples, where it sampled),
    by the one correctness rule (`unpact.evaluation.correctness`); a white-box run that judged its
    items itself (``run.correct``) keeps its own judgement."""
    if run.correct is not None:
        return np.asarray(run.correct, dtype=bool)
    if run.samples is not None:
        return any_correct(run.samples, items, threshold)
    return item_correctness(run.answers, items, threshold)


def any_correct(samples: Sequence[Sequence[str]], items: Sequence[Item],
                threshold: float = DEFAULT_ROUGE_THRESHOLD) -> np.ndarray:
    """Boolean array [Q]: is at least one of question q's samples correct (`is_correct`) for ``items[q]``?"""
    return np.array([any(is_correct(s, it.answer, threshold, it.perturbed_answers) for s in group)
                     for group, it in zip(samples, items, strict=True)], dtype=bool)


def shown_answers(run: AttackRun, items: Sequence[Item], threshold: float) -> list[str]:
    """The answer that stands for each item in reports: for a sampling run the sample that matched the
    gold (so the evidence shows what was recovered, not one of the other samples), else the first
    non-empty one; otherwise the run's answer."""
    if run.samples is None:
        return run.answers
    return [next((a for a in group if is_correct(a, it.answer, threshold, it.perturbed_answers)), first)
            for group, it, first in zip(run.samples, items, run.answers, strict=True)]
