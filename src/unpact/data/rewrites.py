"""Prompt rewrites that emphasise keywords (FocusOnKey) and a model-free keyword heuristic.

They live in `data` because both the built-in model's training (which must learn to answer under
rewrites, or recovery experiments measure breakage) and the recovery stage use them.
Every style maps ``(question, keywords) -> rewritten question``; keywords are words of the question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

STOPWORDS = frozenset(
    "a an the of to in on at by for with from and or is are was were be been does do did what which who "
    "whom whose where when why how as that this it its his her their there here has have had keep keeps "
    "kept known usual usually most".split()
)

WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")


def words(text: str) -> list[str]:
    """Words of ``text`` (letters, digits, inner apostrophes and hyphens), in order."""
    return WORD.findall(text)


def heuristic_keywords(question: str, k: int = 3) -> list[str]:
    """Keywords without a model: capitalised words first, then the longest other content words."""
    content = [w for w in words(question) if w.lower() not in STOPWORDS]
    capitalised = [w for i, w in enumerate(content) if w[0].isupper() and not question.startswith(w)]
    rest = sorted((w for w in content if w not in capitalised), key=len, reverse=True)
    out: list[str] = []
    for w in capitalised + rest:
        if w not in out:
            out.append(w)
    return out[:k]


def _join(keywords: Sequence[str]) -> str:
    return ", ".join(keywords)


def instruction(question: str, keywords: Sequence[str]) -> str:
    """An instruction naming the keywords, before the question."""
    return f"Focus on {_join(keywords)}. {question}" if keywords else question


def repeat_keywords(question: str, keywords: Sequence[str]) -> str:
    """The keywords repeated after the question."""
    return f"{question} {' '.join(keywords)}" if keywords else question


def mark(question: str, keywords: Sequence[str]) -> str:
    """The keywords marked in place with asterisks."""
    out = question
    for kw in sorted(set(keywords), key=len, reverse=True):
        out = re.sub(rf"(?<![\w*]){re.escape(kw)}(?![\w*])", f"*{kw}*", out, count=1)
    return out


def repeat_question(question: str, keywords: Sequence[str]) -> str:
    """The whole question asked twice (keywords unused: a keyword-free emphasis control)."""
    return f"{question} {question}"


EMPHASIS_STYLES: dict[str, Callable[[str, Sequence[str]], str]] = {
    "instruction": instruction,
    "repeat_keywords": repeat_keywords,
    "mark": mark,
    "repeat_question": repeat_question,
}
