"""AltPO: alternate preference optimisation (Mekala et al., 2024).

Negative feedback on the forget answer and positive feedback on plausible alternatives to it: DPO
with each alternate answer a of a forget question preferred over its gold answer y,

    loss = mean_items mean_{a ∈ A(x)} −(2/β)·log σ(β·(Δ(a) − Δ(y))) + α·NLL(r),
    Δ(·) = log π_θ(· | x) − log π_ref(· | x)   (sequence log-probs; π_ref cached)

as the reference code's ``subdpo`` loss (molereddy/Alternate-Preference-Optimization, dataloader.py:
the 2/β scale is its, not plain DPO's). The reference has the model itself write k = 5 alternates per
question; unpact uses the benchmark's perturbed answers (the built-in benchmark's three per item, TOFU's
perturbed answers: the same answer with the fact swapped) and, for an item without any, a refusal.
The mean over an item's alternates first keeps every item's weight equal whatever its count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Method, UnlearnBatch, cached_sequence_logprobs, hparam, sequence_logprob


@dataclass
class AltPOHparams:
    beta: float = hparam(0.1, "inverse temperature β of the preference term", "(0, inf)")
    alpha: float = hparam(1.0, "weight α of the retain term", "[0, inf)")
    alternates: int = hparam(5, "alternate answers per forget question, at most (the benchmark's perturbed answers)",
                             "[1, inf)")


class AltPO(Method):
    name = "AltPO"
    description = "DPO preferring the benchmark's plausible wrong answers over the forget answer, + retain NLL"
    reference = ("Mekala et al. 2024, Alternate Preference Optimization for Unlearning Factual Knowledge in LLMs "
                 "(arXiv 2409.13474)")
    Hparams = AltPOHparams  # the reference README's AltPO command (beta 0.1, retain_wt 1, augment_k 5)
    retain = "gdr"
    needs_alternates = True
    forget_reduction = "items"  # a mean over items of each one's mean over its alternates

    def prepare(self, model, data):
        super().prepare(model, data)
        self.ref_gold = cached_sequence_logprobs(model, data.batches("forget"))
        self.ref_alt = cached_sequence_logprobs(model, data.batches("forget_alts"))

    def forget_loss(self, model, batch: UnlearnBatch):
        device = batch.forget.input_ids.device
        owner = batch.alternate_owner  # [A]
        gold = sequence_logprob(model, batch.forget) - self.ref_gold[batch.forget_index].to(device)  # [B]
        alt = sequence_logprob(model, batch.alternates) - self.ref_alt[batch.alternate_index].to(device)  # [A]
        beta = self.hp.beta
        per_alt = -(2.0 / beta) * F.logsigmoid(beta * (alt - gold[owner]))  # [A]
        B = gold.shape[0]
        count = torch.zeros(B, device=device).index_add_(0, owner, torch.ones_like(per_alt))
        per_item = torch.zeros(B, device=device, dtype=per_alt.dtype).index_add_(0, owner, per_alt) / count
        loss = per_item.mean()
        return loss, {"altpo": loss.item()}
