"""Task-vector negation (Ilharco et al., 2023), as used in MUSE's unlearning baselines.

Fine-tune a copy of the weights further on the forget set (θ_ft), then set θ ← θ − s·(θ_ft − θ):
subtracting the direction that learning the forget set moves the weights in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Method, UnlearnBatch, hparam, nll


@dataclass
class TaskVectorHparams:
    scale: float = hparam(1.0, "scale s of the subtracted task vector θ_ft − θ", "(0, inf)")


class TaskVector(Method):
    name = "TaskVector"
    description = "fine-tune on forget answers, then subtract the scaled weight difference"
    reference = "Ilharco et al. 2023, Editing Models with Task Arithmetic (arXiv 2212.04089)"
    Hparams = TaskVectorHparams
    tradeoff = "scale"
    forget_reduction = "answer_tokens"  # `nll`: a mean over the batch's answer tokens

    def prepare(self, model, data):
        # The one extra copy of the weights the method needs (θ), kept on the CPU.
        self.initial = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}

    def forget_loss(self, model, batch: UnlearnBatch):
        f = nll(model, batch.forget)
        return f, {"forget_nll": f.item()}

    def finalize(self, model):
        s = self.hparams["scale"]
        with torch.no_grad():
            for name, p in model.named_parameters():
                theta = self.initial[name].to(p)
                p.copy_(theta - s * (p - theta))
