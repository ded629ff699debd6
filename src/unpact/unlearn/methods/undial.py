"""UNDIAL: unlearning by self-distillation to adjusted logits (Dong et al., 2024).

The student (the model being trained) is distilled towards the original model's next-token
distribution with the logit of the token to forget lowered by β:

    q_k = softmax(z_ref,k − β·onehot(y_k));  loss = mean_k CE(q_k, π_θ(· | x ⊕ y_<k)) + α·NLL(r)

over the forget answers' tokens (open-unlearning's `compute_undial_loss`, src/trainer/utils.py; it
distils every position of the sequence, prompt included — unpact, like all its methods, the answer).
The target is a fixed distribution that keeps everything the model knew except the forgotten token,
so the loss is bounded below, unlike gradient ascent: it cannot run away. softmax is shift-invariant,
so the cached reference log-softmax stands in for z_ref.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...scoring import answer_log_softmax
from .base import Method, UnlearnBatch, hparam


@dataclass
class UNDIALHparams:
    beta: float = hparam(10.0, "how far β the forget token's logit is lowered in the teacher", "[0, inf)")
    alpha: float = hparam(0.0, "weight α of the retain term (open-unlearning's UNDIAL runs without)", "[0, inf)")


class UNDIAL(Method):
    name = "UNDIAL"
    description = "self-distillation to the original logits with the forget token's logit lowered by β"
    reference = ("Dong et al. 2024, UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in LLMs "
                 "(arXiv 2402.10052; dong-river/LLM_unlearning)")
    Hparams = UNDIALHparams  # open-unlearning's configs/trainer/UNDIAL.yaml
    retain = "gdr"
    tradeoff = "beta"  # α is 0 by default: how far the teacher lowers the forget token is the trade-off
    forget_reduction = "answer_tokens"  # a mean of cross-entropies over the answer tokens

    def prepare(self, model, data):
        super().prepare(model, data)
        self.teacher: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for packed, idx in data.batches("forget"):
                logp = answer_log_softmax(model, packed).cpu()
                for row, i in enumerate(idx.tolist()):
                    n = int(packed.answer_mask[row].sum())
                    self.teacher[i] = logp[row, logp.shape[1] - n:]  # [T_i, V], unpadded

    def forget_loss(self, model, batch: UnlearnBatch):
        f = batch.forget
        logp = answer_log_softmax(model, f)  # [B, T, V]
        B, T, V = logp.shape
        ref = torch.zeros(B, T, V)
        for row, i in enumerate(batch.forget_index.tolist()):
            t = self.teacher[i]
            ref[row, T - t.shape[0]:] = t
        ref = ref.to(logp)
        lowered = ref - self.hp.beta * F.one_hot(f.answer_ids, V).to(logp)
        target = torch.softmax(lowered, -1)  # [B, T, V]
        ce = -(target * logp).sum(-1)  # [B, T]
        loss = (ce * f.answer_mask).sum() / f.answer_mask.sum().clamp(min=1)
        return loss, {"undial_ce": loss.item()}
