"""KeyNPO: NPO whose forget loss concentrates on the answer tokens that carry the knowledge.

unPact traces catastrophic forgetting to penalising every answer token alike (finding 3). Here each
forget answer token k gets a weight from the original model: how much the question raises its
log-probability, Δ_k = log π_ref(y_k | x ⊕ y_<k) − log π_ref(y_k | x∖q ⊕ y_<k) (the whole question
deleted — the LOO contribution of the question to that token). w = max(Δ, 0) / Σ max(Δ, 0), uniform
when no token depends on the question. Tokens that follow from the answer's own prefix (a name's
second half, EOS) get ~0 weight and are left alone. The weighted log-ratio is scaled by the answer
length, so uniform weights give exactly NPO:

    logratio = T · Σ_k w_k (log π_θ(y_k) − log π_ref(y_k));  loss = NPO(logratio) + α·NLL(r)
"""

from __future__ import annotations

import torch

from ...scoring import answer_token_logprobs
from .base import Method, UnlearnBatch, cached_token_logprobs, npo_term
from .npo import NPORetainHparams


class KeyNPO(Method):
    name = "KeyNPO"
    description = "NPO weighted towards the answer tokens the question makes likely, + retain NLL (unpact)"
    reference = "this toolkit; builds on Zhang et al. 2024 (NPO) and unPact finding 3"
    Hparams = NPORetainHparams
    retain = "gdr"
    needs_blank_questions = True
    forget_reduction = "items"  # `npo_term`: a mean over items of weighted log-ratios

    def prepare(self, model, data):
        super().prepare(model, data)
        self.ref = cached_token_logprobs(model, data.batches("forget"))
        blank = cached_token_logprobs(model, data.batches("forget_blank"))
        self.weights = {}
        for i, ref in self.ref.items():
            gain = (ref - blank[i]).clamp(min=0)
            self.weights[i] = gain / gain.sum() if gain.sum() > 0 else torch.full_like(gain, 1 / len(gain))

    def forget_loss(self, model, batch: UnlearnBatch):
        lp = answer_token_logprobs(model, batch.forget)  # [B, T], right-aligned answers
        B, T = lp.shape
        ref, w = torch.zeros(B, T), torch.zeros(B, T)
        for row, i in enumerate(batch.forget_index.tolist()):
            n = len(self.ref[i])
            ref[row, T - n:], w[row, T - n:] = self.ref[i], self.weights[i] * n
        ref, w = ref.to(lp), w.to(lp)
        logratio = (w * (lp - ref) * batch.forget.answer_mask).sum(1)
        loss = npo_term(logratio, self.hparams["beta"])
        return loss, {"key_npo": loss.item()}
