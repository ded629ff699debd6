"""CE-U: cross-entropy unlearning (2025).

At every answer token the target is the model's own next-token distribution with the true token
removed (its logit set to −∞), held constant: q_k = softmax(z_k with z_k[y_k] = −∞), and

    loss = mean_k CE(q_k, π_θ(· | x ⊕ y_<k))

over the answer tokens after each answer's first ``skip`` (open-unlearning's `compute_batch_ceu`,
src/trainer/unlearn/ceu.py; the paper's footnote leaves out the first answer token, which the
question alone often determines). Where gradient ascent's gradient grows without bound as p → 0,
this one is p_k − 0 on the true token and vanishes once the token is gone. No retain term, as in
the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...scoring import answer_log_softmax
from .base import Method, UnlearnBatch, hparam


@dataclass
class CEUHparams:
    skip: int = hparam(1, "leading answer tokens of each item left out of the loss", "[0, inf)")


class CEU(Method):
    name = "CEU"
    description = "CE-U: cross-entropy to the model's own distribution with the true token removed"
    reference = "Yang 2025, CE-U: Cross Entropy Unlearning (arXiv 2503.01224)"
    Hparams = CEUHparams  # open-unlearning's configs/trainer/CEU.yaml
    forget_reduction = "answer_tokens"  # a mean over the answer tokens after each item's first `skip`

    @property
    def skipped_answer_tokens(self) -> int:
        return self.hp.skip

    def forget_loss(self, model, batch: UnlearnBatch):
        f = batch.forget
        logp = answer_log_softmax(model, f)  # [B, T, V]
        # answers are right-aligned: a row's k-th answer token is where the running count of its mask is k
        mask = f.answer_mask * (f.answer_mask.cumsum(1) > self.hp.skip)  # [B, T]
        removed = logp.detach().masked_fill(F.one_hot(f.answer_ids, logp.shape[-1]).bool(), float("-inf"))
        target = torch.softmax(removed, -1)
        ce = -(target * logp).sum(-1)  # [B, T]
        loss = (ce * mask).sum() / mask.sum().clamp(min=1)
        return loss, {"ceu": loss.item()}
