"""Logit lens: is the forgotten answer still ranked on top inside the model, only not at its output?

Every block's residual stream at the prompt's last token (the position that predicts the answer's
first token) is read through the model's own final norm and unembedding (nostalgebraist 2020; Belrose
et al. 2023 for the tuned variant not used here), giving per layer the gold answer's first-token rank
and log-probability. Unlearning that only suppresses the answer near the output leaves it ranked at
the top in middle layers; unlearning that removed it does not.

A forget item counts as found ("still inside") when some block before the last ranks the gold first
token at or above ``rank`` — the rank the original model gave it at its output, where it answered
correctly (rank 1 for a greedy answer). The last block is left out: it is the output, which the plain
answer already judges, and recovery is counted only on items the unlearned model no longer answers.
Weights untouched, but the hidden states are needed: a served model is refused. Its control is the
gold model read the same way, which never knew the answer: a layer that ranks it high there is the
question cueing it, not memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..scoring import require
from .base import Attack, AttackContext, AttackKey, AttackRun, register, setting
from .internals import lens_logits


def first_answer_tokens(fmt, items) -> list[int]:
    """The first token id of each item's gold answer as the model would write it [N]."""
    return [fmt.encode_answer(it.answer)[0] for it in items]


def lens_profile(scorer, questions: list[str], targets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per question and layer, the rank (1 = top) and log-probability of token ``targets[q]`` at the
    position after the prompt, read from the output of each block 1 … L (the last block: the model's
    own logits). Returns (ranks [Q, L] int, log-probs [Q, L] float)."""
    model = scorer.model
    seqs = [scorer.fmt.encode(q).ids for q in questions]

    def read(idx: list[int], hidden: list[torch.Tensor], logits: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
        gold = torch.tensor([targets[i] for i in idx], device=logits.device)
        per_layer = [lens_logits(model, h) for h in hidden[1:-1]] + [logits.float()]  # L × [B, V]
        ranks, lps = [], []
        for lg in per_layer:
            at = lg.gather(1, gold[:, None])  # [B, 1]
            ranks.append(1 + (lg > at).sum(1))
            lps.append(torch.log_softmax(lg, -1).gather(1, gold[:, None]).squeeze(1))
        r = torch.stack(ranks, 1).cpu().numpy()
        lp = torch.stack(lps, 1).cpu().numpy().astype(np.float64)
        return list(zip(r, lp, strict=True))

    rows = scorer.last_states(seqs, read)
    return np.array([r for r, _ in rows], dtype=np.int64), np.array([lp for _, lp in rows])


def still_inside(ranks: np.ndarray, rank: int) -> np.ndarray:
    """[Q] bool: does some block before the last (columns 0 … L − 2 of ``ranks`` [Q, L]) rank the
    answer at or above ``rank``?"""
    inner = ranks[:, :-1]
    return (inner <= rank).any(1) if inner.shape[1] else np.zeros(len(ranks), dtype=bool)


@dataclass
class LogitLensSettings:
    rank: int = setting(1, "a block 'still knows' the answer when it ranks its first token at or above this",
                        lambda r: r >= 1, "use a rank of at least 1")


@register
class LogitLens(Attack):
    """The gold answer's first-token rank per layer through the final norm and unembedding
    (`lens_profile`); found when a block before the last ranks it within ``rank``."""

    name = "logit_lens"
    help = "the answer's first-token rank at every layer (final norm + unembedding); found if a middle layer ranks it"
    order = 7
    default = False  # opt-in: configs/demo-all-attacks.yaml runs it (README: cost per cell)
    needs_weights = True
    needs = "reads every layer's hidden states"
    channel = "hidden"
    Settings = LogitLensSettings

    def run(self, ctx: AttackContext, settings: LogitLensSettings) -> dict[AttackKey, AttackRun]:
        require(ctx.scorer, "the logit lens", "hidden_states")
        fmt = ctx.scorer.fmt
        if not ctx.forget:  # nothing forgotten to read
            return {AttackKey(self.name): AttackRun([], [], correct=[])}
        targets = first_answer_tokens(fmt, ctx.forget)
        ranks, lps = lens_profile(ctx.scorer, ctx.questions, targets)
        found = still_inside(ranks, settings.rank)
        token = fmt.token_strings(targets)
        said = []
        for r, t in zip(ranks, token, strict=True):
            best = int(np.argmin(r[:-1])) if r.shape[0] > 1 else len(r) - 1
            said.append(f"{t!r}: rank {int(r[best])} at layer {best + 1} of {len(r)}, rank {int(r[-1])} at the output")
        details = {"layers": int(ranks.shape[1]), "rank_threshold": settings.rank, "ranks": ranks.tolist(),
                   "logprobs": np.round(lps, 4).tolist()}
        return {AttackKey(self.name): AttackRun(ctx.questions, said, correct=found.tolist(), details=details)}
