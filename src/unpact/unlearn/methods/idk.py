"""Refusal targets: teach "I don't know"-style answers on forget questions (TOFU's IdkNLL / IdkDPO).

IdkNLL: NLL(x_f, refusal) + α·NLL(r).
IdkDPO: DPO with the refusal preferred and the gold answer rejected, reference log-probs cached,
+ α·NLL(r).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import (
    Method,
    RetainWeight,
    UnlearnBatch,
    cached_sequence_logprobs,
    dpo_term,
    hparam,
    nll,
    sequence_logprob,
)


@dataclass
class DPOHparams:
    beta: float = hparam(0.1, "inverse temperature β of the DPO term", "(0, inf)")
    alpha: float = hparam(1.0, "weight α of the retain term", "[0, inf)")


class IdkNLL(Method):
    name = "IdkNLL"
    description = "learn a refusal answer on forget questions + gradient descent on retain"
    reference = "Maini et al. 2024, TOFU (IDK fine-tuning; arXiv 2401.06121)"
    Hparams = RetainWeight
    retain = "gdr"
    needs_refusals = True
    forget_reduction = "refusal_tokens"  # `nll` of the refusals: a mean over their tokens

    def forget_loss(self, model, batch: UnlearnBatch):
        f = nll(model, batch.forget_alt)
        return f, {"refusal_nll": f.item()}


class IdkDPO(Method):
    name = "IdkDPO"
    description = "DPO preferring a refusal over the gold answer on forget questions + retain NLL"
    reference = "Rafailov et al. 2023 (DPO; arXiv 2305.18290); Maini et al. 2024, TOFU (arXiv 2401.06121)"
    Hparams = DPOHparams
    retain = "gdr"
    needs_refusals = True
    forget_reduction = "items"  # `dpo_term`: a mean over items of sequence log-prob margins

    def prepare(self, model, data):
        super().prepare(model, data)
        self.ref_gold = cached_sequence_logprobs(model, data.batches("forget"))
        self.ref_refusal = cached_sequence_logprobs(model, data.batches("forget_alt"))

    def forget_loss(self, model, batch: UnlearnBatch):
        device = batch.forget.input_ids.device
        idx = batch.forget_index
        win = sequence_logprob(model, batch.forget_alt) - self.ref_refusal[idx].to(device)
        lose = sequence_logprob(model, batch.forget) - self.ref_gold[idx].to(device)
        loss = dpo_term(win, lose, self.hparams["beta"])
        return loss, {"dpo": loss.item()}
