"""Token-weighted gradient ascent: WGA (Wang et al., 2025) and SatImp (Yang et al., 2025).

Both ascend the forget answers' NLL token by token, weighting each token by a function of its current
probability p_k = π_θ(y_k | x ⊕ y_<k), held constant in the gradient (open-unlearning's
`compute_wga_loss` / `compute_satimp_loss`, src/trainer/utils.py):

    WGA:    w_k = p_k^β                       loss = mean_k w_k · log p_k + α·NLL(r)
    SatImp: w_k = p_k^β₁ · (1 − p_k)^β₂       loss = γ · mean_k w_k · log p_k + α·NLL(r)

the means over the batch's answer tokens. Plain GA's gradient is largest on the tokens the model
already finds unlikely (∂ −log p / ∂ logit ∝ 1 − p stays, but the log explodes near p = 0); the
weights move the effort to the tokens still remembered (WGA) and, for SatImp, away from the few
that are certain anyway (saturation) as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...scoring import Packed, answer_token_logprobs
from .base import Method, UnlearnBatch, hparam


def weighted_ascent(logp: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over answer tokens of w_k · log p_k, w held constant: [B, T] ×3 → scalar."""
    return (weight.detach() * logp * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class WGAHparams:
    beta: float = hparam(1.0, "exponent β of the weight p^β (0: plain gradient ascent)", "[0, inf)")
    alpha: float = hparam(1.0, "weight α of the retain term", "[0, inf)")


class WGA(Method):
    name = "WGA"
    description = "gradient ascent with each forget token weighted by its probability p^β, + retain NLL"
    reference = ("Wang et al. 2025, Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond "
                 "(arXiv 2502.19301; tmlr-group/G-effect)")
    Hparams = WGAHparams  # open-unlearning's configs/trainer/WGA.yaml
    retain = "gdr"
    forget_reduction = "answer_tokens"  # `weighted_ascent`: a mean over the answer tokens

    def weights(self, p: torch.Tensor) -> torch.Tensor:
        return p ** self.hp.beta

    def forget_loss(self, model, batch: UnlearnBatch):
        f: Packed = batch.forget
        logp = answer_token_logprobs(model, f)  # [B, T]
        loss = weighted_ascent(logp, self.weights(logp.detach().exp()), f.answer_mask)
        return loss, {"weighted_ga": loss.item()}


@dataclass
class SatImpHparams:
    beta1: float = hparam(5.0, "saturation exponent β₁ of the weight p^β₁ (1 − p)^β₂", "[0, inf)")
    beta2: float = hparam(1.0, "importance exponent β₂ of the weight p^β₁ (1 − p)^β₂", "[0, inf)")
    gamma: float = hparam(0.1, "weight γ of the forget term", "(0, inf)")
    alpha: float = hparam(1.0, "weight α of the retain term", "[0, inf)")


class SatImp(WGA):
    name = "SatImp"
    description = "gradient ascent with forget tokens weighted by saturation and importance p^β₁(1−p)^β₂, + retain NLL"
    reference = "Yang et al. 2025, Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning (arXiv 2505.11953)"
    # open-unlearning's configs/trainer/SatImp.yaml (its class defaults swap γ and α; the config runs)
    Hparams = SatImpHparams

    def weights(self, p: torch.Tensor) -> torch.Tensor:
        return p ** self.hp.beta1 * (1 - p) ** self.hp.beta2

    def forget_loss(self, model, batch: UnlearnBatch):
        loss, _ = super().forget_loss(model, batch)
        loss = self.hp.gamma * loss
        return loss, {"satimp": loss.item()}
