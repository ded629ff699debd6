"""Gradient ascent on the forget set with a gradient-descent retain term (GA_GDR).

Objective: −NLL(f) + α·NLL(r)  (Maini et al., 2024, TOFU "grad diff").
"""

from __future__ import annotations

from .base import Method, RetainGD, UnlearnBatch, nll


class GA_GDR(RetainGD, Method):  # noqa: N801 (the field's name for it)
    name = "GA_GDR"
    description = "gradient ascent on forget answers + gradient descent on retain answers"
    defaults = {"alpha": 1.0}

    def loss(self, model, batch: UnlearnBatch):
        forget_nll = nll(model, batch.forget)
        retain, retain_nll = self.retain_term(model, batch)
        return -forget_nll + retain, {"forget_nll": float(forget_nll.detach()), "retain_nll": retain_nll}
