"""Negative preference optimisation with a gradient-descent retain term (NPO_GDR).

Objective: −(2/β)·mean log σ(−β·(log π_θ(y_f|x_f) − log π_ref(y_f|x_f))) + α·NLL(r)
(Zhang et al., 2024, "Negative Preference Optimization"). log π_ref is computed once in `prepare`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, RetainGD, UnlearnBatch, sequence_logprob


class NPO_GDR(RetainGD, Method):  # noqa: N801
    name = "NPO_GDR"
    description = "negative preference optimisation on forget answers + gradient descent on retain answers"
    defaults = {"beta": 0.1, "alpha": 1.0}

    def prepare(self, model, forget_batches):
        size = max(int(idx.max()) for _, idx in forget_batches) + 1
        self.ref_logprob = torch.zeros(size)
        with torch.no_grad():
            for packed, idx in forget_batches:
                self.ref_logprob[idx] = sequence_logprob(model, packed).float().cpu()

    def loss(self, model, batch: UnlearnBatch):
        beta = self.hparams["beta"]
        logratio = sequence_logprob(model, batch.forget) - self.ref_logprob[batch.forget_index].to(batch.forget.input_ids.device)
        npo = -(2.0 / beta) * F.logsigmoid(-beta * logratio).mean()
        retain, retain_nll = self.retain_term(model, batch)
        return npo + retain, {"npo": float(npo.detach()), "retain_nll": retain_nll}
