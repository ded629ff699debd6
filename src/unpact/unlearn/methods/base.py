"""What every unlearning method shares: the batch it sees, its hyper-parameters, and the maths
(answer NLL, sequence log-probs) written once over the one scoring primitive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ...scoring import Packed, answer_token_logprobs


@dataclass
class UnlearnBatch:
    """A forget batch, a retain batch, and the forget items' positions in the forget set
    (to look up cached reference quantities)."""

    forget: Packed
    retain: Packed
    forget_index: torch.Tensor  # [B_f] long


def nll(model, batch: Packed) -> torch.Tensor:
    """Mean negative log-likelihood over all answer tokens of the batch (scalar)."""
    return -answer_token_logprobs(model, batch).sum() / batch.answer_mask.sum().clamp(min=1)


def sequence_logprob(model, batch: Packed) -> torch.Tensor:
    """log π(y | x) summed over each item's answer tokens: [B]."""
    return answer_token_logprobs(model, batch).sum(dim=1)


class Method:
    """An unlearning objective. Subclasses set ``name``, ``description``, ``defaults`` and ``loss``.

    ``prepare`` runs once before training with the model still in its original state; methods that
    need reference quantities compute and cache them there, so no second model stays in memory.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    defaults: ClassVar[dict[str, float]] = {}

    def __init__(self, **hparams: float):
        unknown = set(hparams) - set(self.defaults)
        if unknown:
            from ...errors import UnpactError

            raise UnpactError(f"method {self.name}: unknown hyper-parameter(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(self.defaults) or 'none'}")
        self.hparams = {**self.defaults, **hparams}

    def prepare(self, model, forget_batches: list[tuple[Packed, torch.Tensor]]) -> None:
        """Cache reference quantities; ``forget_batches`` = (packed batch, forget indices) pairs."""

    def loss(self, model, batch: UnlearnBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective to minimise on one batch, and its named parts for logging."""
        raise NotImplementedError


class RetainGD:
    """Mixin: the gradient-descent retain term α·NLL(r) (the "GDR" of GA_GDR/NPO_GDR)."""

    def retain_term(self, model, batch: UnlearnBatch) -> tuple[torch.Tensor, float]:
        r = nll(model, batch.retain)
        return self.hparams["alpha"] * r, float(r.detach())
