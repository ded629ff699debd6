"""PDU: primal-dual unlearning with a retain constraint (Entesari et al., 2025).

Unlearning as a constrained problem: flatten the model's next-token distribution on the forget
answers subject to the retain loss staying below a bound,

    min_θ  L_f(θ) = mean_k (max_v z_k,v − mean_v z_k,v)²   s.t.  NLL_θ(R) ≤ ε_R,

solved by gradient steps on the Lagrangian L_f + λ·NLL(r) and, after ``warmup_epochs``, a dual ascent
step per optimiser step, λ ← max(0, λ + η·(NLL(r) − ε_R)) on the step's retain NLL (open-unlearning's
PDU, src/trainer/unlearn/pdu.py, ``dual_update_upon: step``). The forget term is the squared margin of
the top logit over the mean logit at each answer position (the reference's convex surrogate for the
entropy; it is invariant to shifting the logits, so log-softmax stands in for them). λ starts at α.

The bound: open-unlearning leaves ``retain_loss_eps`` to the user (no default). unpact states it
relative to the original model, ε_R = NLL_ref(R) + ``eps`` (the original model's mean retain NLL per
answer token, measured once before training, plus a slack in nats), as its README advises choosing it
("look at the value of the retain loss of the pretrained model and choose an appropriately larger
value"), so one default serves every model.
The reference takes the margin at the answer tokens' own positions; unpact at the positions that
predict them, as every other loss here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...scoring import answer_log_softmax, answer_token_logprobs
from .base import Method, UnlearnBatch, hparam


def logit_margin_sq(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over answer tokens of (max_v − mean_v)² of the log-distribution: [B, T, V], [B, T] → scalar."""
    margin = logp.max(-1).values - logp.mean(-1)  # [B, T]
    return (margin ** 2 * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class PDUHparams:
    alpha: float = hparam(100.0, "initial dual variable λ, the retain term's weight", "[0, inf)")
    eps: float = hparam(0.1, "slack of the retain constraint in nats: NLL(R) ≤ the original model's + eps", "[0, inf)")
    dual_lr: float = hparam(5.0, "dual step size η (0: λ stays α)", "[0, inf)")
    warmup_epochs: int = hparam(5, "epochs before the dual variable starts to move", "[0, inf)")


class PDU(Method):
    name = "PDU"
    description = "flatten forget-answer logits subject to a retain-NLL bound, by primal-dual steps"
    reference = ("Entesari et al. 2025, Constrained Entropic Unlearning: A Primal-Dual Framework for LLMs "
                 "(arXiv 2506.05314)")
    # the authors' TOFU settings (open-unlearning's community/methods/PDU/run.sh: λ₀ = 100, η = 5, 5 warm-up
    # epochs; their README: the squared logit margin is large, so λ₀ must be), but for eps (module doc)
    Hparams = PDUHparams
    retain = "gdr"
    tradeoff = "eps"  # the constraint's bound; α is only λ's starting point
    forget_reduction = "answer_tokens"  # `logit_margin_sq`: a mean over the answer tokens

    def prepare(self, model, data):
        super().prepare(model, data)
        total, count = 0.0, 0.0
        with torch.no_grad():
            for packed, _ in data.batches("retain"):
                total -= answer_token_logprobs(model, packed).sum().item()
                count += packed.answer_mask.sum().item()
        self.bound = total / max(count, 1.0) + self.hp.eps
        self.dual = self.hp.alpha

    @property
    def retain_weight(self) -> float:
        return getattr(self, "dual", self.hp.alpha)

    def after_step(self, parts, epochs_done):
        if epochs_done >= self.hp.warmup_epochs:
            self.dual = max(0.0, self.dual + self.hp.dual_lr * (parts[self.retain_name] - self.bound))

    def state(self):
        return {"dual": self.dual}

    def load_state(self, state):
        self.dual = state.get("dual", self.dual)

    def forget_loss(self, model, batch: UnlearnBatch):
        f = batch.forget
        loss = logit_margin_sq(answer_log_softmax(model, f), f.answer_mask)
        return loss, {"logit_margin_sq": loss.item(), "dual": self.retain_weight}
