"""FocusOnKey: ask the unlearned model again with the question's keywords emphasised, weights untouched.

Keywords are always words of the question (never of the answer). The placebo control emphasises other
question words chosen at random, so a recovery can be told from an artefact of the rewrite itself.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..attribution import Attribution
from ..data.rewrites import EMPHASIS_STYLES, STOPWORDS, WORD, words
from ..errors import UnpactError
from ..scoring import Scorer


def keyword_words(attribution: Attribution, key: Sequence[int]) -> list[str]:
    """The question words that contain at least one KeyToken, in question order (each once)."""
    question = attribution.question.strip()
    out = []
    for m in WORD.finditer(question):
        if any(attribution.offsets[i][0] < m.end() and attribution.offsets[i][1] > m.start() for i in key):
            if m.group() not in out:
                out.append(m.group())
    return out


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
