"""Features: which question tokens are ablated (or summed, for gradient methods) together.

A feature is a list of question-token indices ("group") plus a label. Three kinds:

- ``tokens``: every question token on its own (the paper's form);
- ``words``: all sub-tokens of a word together, words taken from the question's character offsets
  (a word is a run of letters/digits/apostrophes; punctuation marks are words of their own), so an
  entity name split into several BPE pieces is attributed as one unit;
- user-given character spans of the (stripped) question, one feature per span.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UnpactError

FEATURE_KINDS = ("tokens", "words")
_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


@dataclass(frozen=True)
class Features:
    """groups: [n_features] lists of question-token indices; labels: [n_features] display strings."""

    groups: list[list[int]]
    labels: list[str]


def _overlapping(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    # A token belongs to a span when their character ranges overlap (a leading-space token such as
    # " Bram" has offsets starting at the space; the overlap test ignores that).
    return [i for i, (s, e) in enumerate(offsets) if s < end and e > start]


def token_features(tokens: Sequence[str]) -> Features:
    """One feature per question token."""
    return Features([[i] for i in range(len(tokens))], list(tokens))


def word_features(question: str, offsets: Sequence[tuple[int, int]], tokens: Sequence[str]) -> Features:
    """One feature per word of ``question.strip()``; every token lands in exactly one feature.

    A token spanning two words (rare with byte-level BPE) joins the first; a token overlapping no word
    (whitespace only) joins the next feature, or the last one at the end of the question.
    """
    text = question.strip()
    owner: list[int | None] = [None] * len(offsets)
    spans = [m.span() for m in _WORD.finditer(text)]
    for w, (s, e) in enumerate(spans):
        for i in _overlapping(offsets, s, e):
            if owner[i] is None:
                owner[i] = w
    for i in range(len(owner) - 1, -1, -1):  # orphans join the feature that follows them
        if owner[i] is None:
            owner[i] = owner[i + 1] if i + 1 < len(owner) else (max((o for o in owner if o is not None), default=0))
    used = sorted(set(owner))  # type: ignore[arg-type]
    groups = [[i for i, o in enumerate(owner) if o == w] for w in used]
    labels = ["".join(tokens[i] for i in g) for g in groups]
    return Features(groups, labels)


def span_features(question: str, offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> Features:
    """One feature per user-given character span (start, end) of ``question.strip()``.

    Tokens outside every span are not attributed. A span must lie in the question and cover at least
    one token; spans may overlap (each is ablated on its own).
    """
    text = question.strip()
    groups, labels = [], []
    for s, e in spans:
        if not (0 <= s < e <= len(text)):
            raise UnpactError(f"span ({s}, {e}) is not a non-empty range inside the question "
                              f"(0..{len(text)}): give (start, end) character offsets of {text!r}")
        g = _overlapping(offsets, s, e)
        if not g:
            raise UnpactError(f"span ({s}, {e}) = {text[s:e]!r} covers no question token: widen it")
        groups.append(g)
        labels.append(text[s:e])
    return Features(groups, labels)


def make_features(kind: str, question: str, offsets: Sequence[tuple[int, int]], tokens: Sequence[str],
                  spans: Sequence[tuple[int, int]] | None = None) -> Features:
    """Features of one question: user ``spans`` when given, else ``kind`` in {"tokens", "words"}."""
    if spans is not None:
        return span_features(question, offsets, spans)
    if kind == "tokens":
        return token_features(tokens)
    if kind == "words":
        return word_features(question, offsets, tokens)
    raise UnpactError(f"unknown feature kind {kind!r}: use one of {', '.join(FEATURE_KINDS)}")
