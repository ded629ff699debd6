"""The penalisation profile (unPact finding 3): which answer tokens lost probability after unlearning.

Per answer token (EOS included, as trained), Δ = log p_after − log p_before. Tokens of content words
are "keyword" tokens; function words, punctuation and EOS are the rest. A method that penalises only
what it should leaves retain/utility answers alone; one that penalises every token indiscriminately
pushes Δ down on retain/utility items too, on keyword and non-keyword tokens alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.rewrites import STOPWORDS

PENALISED = 0.1  # a token counts as penalised when it lost more than 0.1 nats of log-probability


def keyword_token_mask(fmt, answer: str) -> tuple[list[int], np.ndarray]:
    """Answer token ids as trained (with EOS) and, per token, whether it belongs to a content word: [T]."""
    ids = fmt.encode_answer(answer, eos=True)
    eos = fmt.tokenizer.eos_token_id
    keyword = []
    for text, i in zip(fmt.token_strings(ids), ids, strict=True):
        word = "".join(c for c in text if c.isalnum()).lower()
        keyword.append(i != eos and bool(word) and word not in STOPWORDS)
    return ids, np.array(keyword, dtype=bool)


def penalisation_profile(before: Sequence[np.ndarray], after: Sequence[np.ndarray], keyword: Sequence[np.ndarray],
                         threshold: float = PENALISED) -> dict:
    """Aggregate Δ log p over items. Each argument is a list of [T_i] arrays (same items, same tokens).

    Returns the mean Δ on keyword and on other tokens (None if there are none), and the share of each
    group that lost more than ``threshold`` nats.
    """
    delta = np.concatenate([np.asarray(a) - np.asarray(b) for b, a in zip(before, after, strict=True)]) \
        if before else np.zeros(0)
    mask = np.concatenate(keyword) if keyword else np.zeros(0, dtype=bool)

    def summary(values: np.ndarray) -> tuple[float | None, float | None]:
        return (float(values.mean()), float((values < -threshold).mean())) if values.size else (None, None)

    kw_mean, kw_share = summary(delta[mask])
    other_mean, other_share = summary(delta[~mask])
    return {"keyword_delta": kw_mean, "other_delta": other_mean,
            "keyword_penalised": kw_share, "other_penalised": other_share, "n_tokens": int(delta.size)}
