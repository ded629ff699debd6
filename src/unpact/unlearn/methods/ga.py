"""Gradient ascent on the forget answers (Jang et al., 2023; TOFU's GA / grad diff / KL baselines).

GA: −NLL(f); GA_GDR: + α·NLL(r); GA_KLR: + α·KL(π_ref ‖ π_θ) on r.
"""

from __future__ import annotations

from .base import Method, RetainWeight, UnlearnBatch, nll


class GA(Method):
    name = "GA"
    description = "gradient ascent on forget answers"
    reference = "Jang et al. 2023, Knowledge Unlearning for Mitigating Privacy Risks in LMs (arXiv 2210.01504)"
    forget_reduction = "answer_tokens"  # `nll`: a mean over the batch's answer tokens

    def forget_loss(self, model, batch: UnlearnBatch):
        f = nll(model, batch.forget)
        return -f, {"forget_nll": f.item()}


class GA_GDR(GA):  # noqa: N801 (the field's names)
    name = "GA_GDR"
    description = "gradient ascent on forget + gradient descent on retain answers"
    reference = "Maini et al. 2024, TOFU (grad diff; arXiv 2401.06121)"
    Hparams = RetainWeight
    retain = "gdr"


class GA_KLR(GA):  # noqa: N801
    name = "GA_KLR"
    description = "gradient ascent on forget + KL to the original model on retain"
    reference = "Maini et al. 2024, TOFU (KL; arXiv 2401.06121)"
    Hparams = RetainWeight
    retain = "klr"
