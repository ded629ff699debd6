"""Negative preference optimisation (Zhang et al., 2024) and SimNPO (Fan et al., 2024).

NPO: −(2/β)·mean log σ(−β·(log π_θ(y_f) − log π_ref(y_f))), sequence log-probs; log π_ref cached.
SimNPO: −(2/β)·mean log σ(β·NLL̄(f) − γ), NLL̄ the length-normalised NLL; no reference model.
"""

from __future__ import annotations

import torch.nn.functional as F

from .base import Method, UnlearnBatch, answer_lengths, cached_sequence_logprobs, npo_term, sequence_logprob


class NPO(Method):
    name = "NPO"
    description = "negative preference optimisation on forget answers"
    reference = "Zhang et al. 2024, Negative Preference Optimization"
    defaults = {"beta": 0.1}
    forget_reduction = "items"  # `npo_term`: a mean over items of sequence log-ratios

    def prepare(self, model, data):
        super().prepare(model, data)
        self.ref_forget = cached_sequence_logprobs(model, data.batches("forget"))

    def forget_loss(self, model, batch: UnlearnBatch):
        logratio = sequence_logprob(model, batch.forget) - self.ref_forget[batch.forget_index].to(batch.forget.input_ids.device)
        loss = npo_term(logratio, self.hparams["beta"])
        return loss, {"npo": loss.item()}


class NPO_GDR(NPO):  # noqa: N801
    name = "NPO_GDR"
    description = "NPO on forget + gradient descent on retain answers"
    defaults = {"beta": 0.1, "alpha": 1.0}
    retain = "gdr"


class NPO_KLR(NPO):  # noqa: N801
    name = "NPO_KLR"
    description = "NPO on forget + KL to the original model on retain"
    defaults = {"beta": 0.1, "alpha": 1.0}
    retain = "klr"


class SimNPO(Method):
    name = "SimNPO"
    description = "reference-free NPO with length-normalised NLL and margin γ, + retain NLL"
    reference = "Fan et al. 2024, Simplicity Prevails: Rethinking NPO for LLM Unlearning"
    defaults = {"beta": 4.5, "gamma": 0.125, "alpha": 1.0}  # open-unlearning's defaults
    retain = "gdr"
    forget_reduction = "items"  # a mean over items of each one's length-normalised NLL

    def forget_loss(self, model, batch: UnlearnBatch):
        nll_bar = -sequence_logprob(model, batch.forget) / answer_lengths(batch.forget)
        beta, gamma = self.hparams["beta"], self.hparams["gamma"]
        loss = -(2.0 / beta) * F.logsigmoid(beta * nll_bar - gamma).mean()
        return loss, {"simnpo": loss.item()}
