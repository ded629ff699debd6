"""Leave-one-out prompt attribution, the unPact contribution:

    C(x_i, y) = LP(x, y) − LP(x \\ x_i, y)

for every token x_i of the question (the template and special tokens are not attributed). The n
ablations of every prompt, and the prompts of a whole list, go through the scorer as one list of
sequences, so batching and length bucketing happen once for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..scoring import Scorer


@dataclass
class Attribution:
    """One prompt's attribution.

    tokens: [n] question tokens as text; contributions: [n] C(x_i, y); lp: LP(x, y) of the intact
    prompt; ablated_lp: [n] LP with token i deleted; offsets: [n] character spans in the question.
    """

    question: str
    answer: str
    tokens: list[str]
    contributions: np.ndarray
    lp: float
    ablated_lp: np.ndarray
    offsets: list[tuple[int, int]] = field(default_factory=list)
    method: str = "loo_delete"

    def to_dict(self) -> dict:
        return {"question": self.question, "answer": self.answer, "method": self.method,
                "tokens": self.tokens, "contributions": [float(c) for c in self.contributions],
                "lp": float(self.lp)}


def loo_attributions(scorer: Scorer, questions: Sequence[str], answers: Sequence[str]) -> list[Attribution]:
    """Delete-one-token attributions of every (question, answer) pair, scored in one batched call."""
    fmt = scorer.fmt
    prompts, answer_ids = [], []
    encoded = [fmt.encode(q) for q in questions]
    for enc, answer in zip(encoded, answers, strict=True):
        a = fmt.encode_answer(answer)
        q = enc.question_ids
        variants = [enc] + [enc.with_question(q[:i] + q[i + 1:]) for i in range(len(q))]
        prompts += [v.ids for v in variants]
        answer_ids += [a] * len(variants)
    lp = scorer.score_ids(prompts, answer_ids).mean
    results, start = [], 0
    for k, enc in enumerate(encoded):
        n = len(enc.question_ids)
        full, ablated = float(lp[start]), lp[start + 1:start + 1 + n]
        start += n + 1
        results.append(Attribution(
            question=questions[k], answer=answers[k], tokens=fmt.token_strings(enc.question_ids),
            contributions=full - ablated, lp=full, ablated_lp=ablated, offsets=fmt.question_offsets(questions[k]),
        ))
    return results
