"""Raw text as training windows, for unlearning from a corpus (MUSE ``raw/``, WMDP corpora) rather than
from question/answer pairs.

Each document is tokenized whole and cut into windows of ``chunk_tokens`` tokens. The first
``context_tokens`` of a window are its prompt, the rest its target, and consecutive windows overlap by
exactly the context, so every token after a document's first ``context_tokens`` is a target exactly
once and always has at least ``context_tokens`` of real text before it. A window is then a
(prompt, answer) pair like a QA item, so every unlearning method's loss applies unchanged: the loss
falls on the targets, and KeyNPO weighs each target token by how much the context raises it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import UnpactError


@dataclass(frozen=True)
class TextChunk:
    """One training window: ``id`` = ``<corpus>-<document>-<window>`` (1-based)."""

    id: str
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]


def chunk_texts(encode: Callable[[str], list[int]], texts: Sequence[str], corpus: str, chunk_tokens: int,
                context_tokens: int) -> list[TextChunk]:
    """Every window of every text (see the module docstring). ``encode``: text → token ids (the
    model's `PlainFormat.encode_text`, so a document starts as the tokenizer starts one)."""
    if not 1 <= context_tokens < chunk_tokens:
        raise UnpactError(f"raw text {corpus}: need 1 ≤ context_tokens ({context_tokens}) < chunk_tokens "
                          f"({chunk_tokens})")
    stride = chunk_tokens - context_tokens
    chunks = []
    for d, text in enumerate(texts, 1):
        ids = encode(text)
        for w, start in enumerate(range(0, max(len(ids) - context_tokens, 0), stride), 1):
            window = ids[start:start + chunk_tokens]
            chunks.append(TextChunk(f"{corpus}-{d:04d}-{w:04d}", tuple(window[:context_tokens]),
                                    tuple(window[context_tokens:])))
    if not chunks:
        raise UnpactError(f"raw text {corpus}: no text longer than context_tokens = {context_tokens} tokens; "
                          "give longer texts or a smaller raw_text.context_tokens")
    return chunks


def raw_training_sets(corpora: dict[str, Sequence[str]], cfg, encode: Callable[[str], list[int]]
                      ) -> tuple[list[TextChunk], list[TextChunk]]:
    """The forget and retain windows of a benchmark's raw ``corpora`` for unlearning from raw text:
    the corpora ``cfg.forget`` and ``cfg.retain`` (a `RawTextConfig`) cut by `chunk_texts`."""

    def windows(name: str) -> list[TextChunk]:
        if not corpora.get(name):
            raise UnpactError(f"raw_text: the benchmark has no raw corpus '{name}' (it has: "
                              f"{', '.join(sorted(corpora)) or 'none'}); name one of those in raw_text.forget/retain")
        return chunk_texts(encode, corpora[name], name, cfg.chunk_tokens, cfg.context_tokens)

    return windows(cfg.forget), windows(cfg.retain)
