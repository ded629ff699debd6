"""FocusOnKey: ask the unlearned model again with the question's keywords emphasised, weights untouched.

Keywords are always words of the question (never of the answer). Keyword sources: *oracle* (KeyTokens
of the original model), *self* (KeyTokens the unlearned model itself gives its own answer — what a
real attacker has) and *heuristic* (no model, `data.rewrites.heuristic_keywords`). Two placebo
controls emphasise other question words — random ones, and those holding the lowest contributions —
so a recovery can be told from an artefact of the rewrite itself.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..attribution import Attribution, key_tokens, loo_attributions
from ..attribution.keytokens import most_key_tokens
from ..data.rewrites import EMPHASIS_STYLES, STOPWORDS, WORD, heuristic_keywords, words
from ..errors import UnpactError
from ..scoring import Scorer
from .base import Attack, AttackContext, AttackKey, AttackRun, register, setting


def words_of_tokens(question: str, offsets: Sequence[tuple[int, int]], tokens: Sequence[int]) -> list[str]:
    """The question words overlapping any of ``tokens`` (by character ``offsets``), in order, each once."""
    out: list[str] = []
    for m in WORD.finditer(question.strip()):
        if any(offsets[i][0] < m.end() and offsets[i][1] > m.start() for i in tokens) and m.group() not in out:
            out.append(m.group())
    return out


def keyword_words(attribution: Attribution, key: Sequence[int]) -> list[str]:
    """The question words that contain at least one KeyToken, in question order (each once)."""
    return words_of_tokens(attribution.question, attribution.offsets, key)


def lowest_contribution_words(question: str, offsets: Sequence[tuple[int, int]], contributions: Sequence[float],
                              n_tokens: int) -> list[str]:
    """Placebo keywords: the words holding the ``n_tokens`` lowest-contribution question tokens."""
    order = sorted(range(len(contributions)), key=lambda i: contributions[i])
    return words_of_tokens(question, offsets, order[:max(1, n_tokens)])


def placebo_words(question: str, keywords: Sequence[str], rng: random.Random) -> list[str]:
    """As many random question words as ``keywords``, avoiding the keywords where the question allows."""
    all_words = list(dict.fromkeys(words(question)))
    others = [w for w in all_words if w not in keywords and w.lower() not in STOPWORDS] or \
        [w for w in all_words if w not in keywords] or all_words
    return rng.sample(others, k=min(len(keywords), len(others)))


def _longest_words(question: str, n: int | None) -> list[str]:
    """The ``n`` longest distinct words of ``question`` (all of them when ``n`` is None), in question order."""
    distinct = list(dict.fromkeys(words(question)))
    keep = set(sorted(distinct, key=len, reverse=True)[:n] if n is not None else distinct)
    return [w for w in distinct if w in keep]


def rewrite(question: str, keywords: Sequence[str], style: str) -> str:
    """``question`` rewritten by the named emphasis style."""
    if style not in EMPHASIS_STYLES:
        raise UnpactError(f"unknown emphasis style '{style}'; choose one of: {', '.join(EMPHASIS_STYLES)}")
    return EMPHASIS_STYLES[style](question, keywords)


def focus_on_key(scorer: Scorer, questions: Sequence[str], keywords: Sequence[Sequence[str]],
                 style: str = "instruction") -> tuple[list[str], list[str]]:
    """Rewrite every question with its keywords and answer greedily; returns (rewritten, answers)."""
    rewritten = [rewrite(q, kw, style) for q, kw in zip(questions, keywords, strict=True)]
    return rewritten, scorer.generate(rewritten) if rewritten else []


# the keyword sources and the names their results are written under, in run order
SOURCES = {"oracle": "focus_on_key", "self": "focus_on_key_self", "heuristic": "focus_on_key_heuristic",
           "placebo": "placebo", "placebo_low": "placebo_low"}
_SOURCE_OF = {v: k for k, v in SOURCES.items()}


@dataclass
class FocusOnKeySettings:
    styles: list[str] = setting(["instruction"], "emphasis styles, each a rewrite of every forget question",
                                lambda s: s in EMPHASIS_STYLES, f"choose from {', '.join(EMPHASIS_STYLES)}", each=True)


@register
class FocusOnKey(Attack):
    """The unPact attack: each forgotten question asked again with its keywords emphasised, per
    emphasis style and keyword source (oracle, self, heuristic), beside two placebo rewrites (random
    and lowest-contribution words) and the oracle rewrite of retain/utility items (do no harm)."""

    name = "focus_on_key"
    help = "FocusOnKey: the question with its KeyToken words emphasised"
    order = 0
    always = True
    control = ("the gold model or never-known items under the same rewrite; placebo rewrites emphasising other "
               "words (finding 2)")
    Settings = FocusOnKeySettings
    prefix = ""  # its one setting is the study's ``recovery.styles``

    @classmethod
    def key_name(cls, key: AttackKey) -> str:
        name = f"{SOURCES[key.keywords]}:{key.variant}"
        return name if key.split == "forget" else f"{name}:{key.split}"

    @classmethod
    def parse_name(cls, name: str) -> AttackKey | None:
        parts = name.split(":")
        if len(parts) not in (2, 3) or parts[0] not in _SOURCE_OF:
            return None
        return AttackKey(cls.name, parts[1], _SOURCE_OF[parts[0]], parts[2] if len(parts) == 3 else "forget")

    length_advice = "leave the longest emphasis style out of recovery.styles"

    def planned(self, ctx: AttackContext, settings: FocusOnKeySettings):
        # Each source emphasises at most as many words as a prompt can have KeyTokens (the placebos
        # as many as the KeyTokens, the heuristic 3), and each style adds its markup per keyword or
        # lists the keywords once: the longest words, as many as that, make the longest rewrite.
        most = most_key_tokens(ctx.alpha, ctx.beta)
        for style in settings.styles:
            for split in ("forget", "retain", "utility"):
                yield split, [rewrite(it.question, _longest_words(it.question, most), style) for it in ctx.splits[split]]

    def run(self, ctx: AttackContext, settings: FocusOnKeySettings) -> dict[AttackKey, AttackRun]:
        if not settings.styles:
            return {}
        sources = self.keyword_sources(ctx)
        # every rewrite of every style, source and split, asked in one generation (`Scorer.generate`
        # buckets them by length and answers a prompt that recurs, e.g. where two sources pick the
        # same words, once): fuller batches than one call per run
        runs: dict[AttackKey, tuple[list[str], list[list[str]] | None]] = {}
        for style in settings.styles:
            for source, keywords in sources.items():
                runs[AttackKey(self.name, style, source)] = (
                    [rewrite(q, kw, style) for q, kw in zip(ctx.questions, keywords, strict=True)], keywords)
            for split in ("retain", "utility") if ctx.do_no_harm else ():
                oracle = [b["keywords"] for b in ctx.base["attributions"][split]]
                runs[AttackKey(self.name, style, "oracle", split)] = (
                    [rewrite(it.question, kw, style) for it, kw in zip(ctx.splits[split], oracle, strict=True)], None)
        replies = iter(ctx.scorer.generate([p for prompts, _ in runs.values() for p in prompts]))
        return {key: AttackRun(prompts, [next(replies) for _ in prompts], keywords=keywords)
                for key, (prompts, keywords) in runs.items()}

    @staticmethod
    def keyword_sources(ctx: AttackContext) -> dict[str, list[list[str]]]:
        """Per keyword source, the keywords of every forget item."""
        items, base_rows = ctx.forget, ctx.base["attributions"]["forget"]
        oracle = [b["keywords"] for b in base_rows]
        # self: the unlearned model attributes its own greedy answer — all a real attacker can do
        own = ctx.answers["forget"]["answers"]
        asked = [i for i, ans in enumerate(own) if ans.strip()]
        own_attr = loo_attributions(ctx.scorer, [items[i].question for i in asked], [own[i] for i in asked])
        self_kw: list[list[str]] = [[] for _ in items]
        for i, attr in zip(asked, own_attr, strict=True):
            self_kw[i] = keyword_words(attr, key_tokens(attr.contributions, ctx.alpha, ctx.beta))
        fmt = ctx.scorer.fmt
        low = [lowest_contribution_words(it.question, fmt.question_offsets(it.question), b["contributions"],
                                         len(b["key"])) for it, b in zip(items, base_rows, strict=True)]
        return {
            "oracle": oracle,
            "self": self_kw,
            "heuristic": [heuristic_keywords(it.question) for it in items],
            "placebo": [placebo_words(it.question, kw, random.Random(f"{ctx.seed}:{it.id}"))
                        for it, kw in zip(items, oracle, strict=True)],
            "placebo_low": low,
        }
