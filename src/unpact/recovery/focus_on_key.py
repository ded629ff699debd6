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

from ..attribution import Attribution
from ..data.rewrites import EMPHASIS_STYLES, STOPWORDS, WORD, words
from ..errors import UnpactError
from ..scoring import Scorer


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
