"""Negative preference optimisation (Zhang et al., 2024) and SimNPO (Fan et al., 2024).

NPO: −(2/β)·mean log σ(−β·(log π_θ(y_f) − log π_ref(y_f))), sequence log-probs; log π_ref cached.
SimNPO: γ·(−(2/β)·mean log σ(β·(NLL̄(f) − δ))), NLL̄ the length-normalised NLL; no reference model.

SimNPO's names follow open-unlearning (configs/trainer/SimNPO.yaml, src/trainer/unlearn/simnpo.py):
``delta`` is the margin, 0.0 (the paper's γ, which sits outside the β: β·NLL̄ − γ_paper = β·(NLL̄ − δ)
with δ = γ_paper/β, the same at 0), and ``gamma`` = 0.125 weighs the forget term (the paper's code
calls it ``npo_coeff``). Before issue #21 unpact used 0.125 as the margin with forget weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from .base import (
    Method,
    UnlearnBatch,
    answer_lengths,
    cached_sequence_logprobs,
    hparam,
    npo_term,
    sequence_logprob,
)

BETA_HELP = "inverse temperature β of the NPO term (small β: gradient ascent; large β: saturates sooner)"


@dataclass
class NPOHparams:
    beta: float = hparam(0.1, BETA_HELP, "(0, inf)")


@dataclass
class NPORetainHparams(NPOHparams):
    alpha: float = hparam(1.0, "weight α of the retain term", "[0, inf)")


class NPO(Method):
    name = "NPO"
    description = "negative preference optimisation on forget answers"
    reference = "Zhang et al. 2024, Negative Preference Optimization (arXiv 2404.05868)"
    Hparams = NPOHparams
    tradeoff = "beta"  # no retain term: β sets how soon the forget term saturates
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
    Hparams = NPORetainHparams
    retain = "gdr"


class NPO_KLR(NPO):  # noqa: N801
    name = "NPO_KLR"
    description = "NPO on forget + KL to the original model on retain"
    Hparams = NPORetainHparams
    retain = "klr"


@dataclass
class SimNPOHparams:
    beta: float = hparam(4.5, "inverse temperature β of the length-normalised NPO term", "(0, inf)")
    delta: float = hparam(0.0, "margin δ subtracted from the length-normalised NLL", "[0, inf)")
    gamma: float = hparam(0.125, "weight γ of the forget term", "(0, inf)")
    alpha: float = hparam(1.0, "weight α of the retain term", "[0, inf)")


class SimNPO(Method):
    name = "SimNPO"
    description = "reference-free NPO on the length-normalised NLL with margin δ, weight γ, + retain NLL"
    reference = "Fan et al. 2024, Simplicity Prevails: Rethinking NPO for LLM Unlearning (arXiv 2410.07163)"
    Hparams = SimNPOHparams  # open-unlearning's configs/trainer/SimNPO.yaml
    retain = "gdr"
    forget_reduction = "items"  # a mean over items of each one's length-normalised NLL

    def forget_loss(self, model, batch: UnlearnBatch):
        nll_bar = -sequence_logprob(model, batch.forget) / answer_lengths(batch.forget)  # [B]
        hp = self.hp
        loss = hp.gamma * -(2.0 / hp.beta) * F.logsigmoid(hp.beta * (nll_bar - hp.delta)).mean()
        return loss, {"simnpo": loss.item()}
