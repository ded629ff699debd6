"""What every unlearning method shares: the batch it sees, its hyper-parameters, the retain
regularisers, and the maths (answer NLL, sequence log-probs, KL, preference terms) written once over
the one scoring primitive."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

import torch
import torch.nn.functional as F

from ...errors import UnpactError
from ...scoring import Packed, answer_log_softmax, answer_token_logprobs


@dataclass
class UnlearnBatch:
    """One step's data. ``forget``: forget questions with their gold answers; ``forget_alt``: the same
    questions with a refusal answer (IdkNLL/IdkDPO); ``retain``: None from the trainer, which feeds
    retain items to `Method.retain_sum` in micro-batches. ``*_index``: positions in the forget/retain
    sets, to look up quantities cached in `Method.prepare`."""

    forget: Packed
    retain: Packed | None
    forget_index: torch.Tensor  # [B_f] long
    retain_index: torch.Tensor  # [B_r] long
    forget_alt: Packed | None = None


class PrepareData:
    """What `Method.prepare` may iterate over: every forget/retain item, in batches, with indices."""

    def __init__(self, make_batches):
        self._make = make_batches

    def batches(self, which: str) -> Iterator[tuple[Packed, torch.Tensor]]:
        """(packed batch, item indices) over ``which`` ∈ {"forget", "forget_alt", "forget_blank", "retain"}."""
        return self._make(which)


# -- shared maths --------------------------------------------------------------------------------


def nll(model, batch: Packed) -> torch.Tensor:
    """Mean negative log-likelihood over all answer tokens of the batch (scalar)."""
    return -answer_token_logprobs(model, batch).sum() / batch.answer_mask.sum().clamp(min=1)


def sequence_logprob(model, batch: Packed) -> torch.Tensor:
    """log π(y | x) summed over each item's answer tokens: [B]."""
    return answer_token_logprobs(model, batch).sum(dim=1)


def answer_lengths(batch: Packed) -> torch.Tensor:
    """Number of answer tokens per item: [B]."""
    return batch.answer_mask.sum(dim=1)


@torch.no_grad()
def cached_token_logprobs(model, batches) -> dict[int, torch.Tensor]:
    """The answer-token log-probs of every item the batches cover, unpadded: {index: [T_i]} (CPU).

    Computed once on the original model in `Method.prepare`: the cached reference of NPO/DPO/KeyNPO.
    """
    out = {}
    for packed, idx in batches:
        lp = answer_token_logprobs(model, packed).float().cpu()
        for row, i in enumerate(idx.tolist()):
            out[i] = lp[row, lp.shape[1] - int(packed.answer_mask[row].sum()):]
    return out


def cached_sequence_logprobs(model, batches) -> torch.Tensor:
    """log π(y|x) of the original model for every item the batches cover, by index: [N] (CPU)."""
    per_token = cached_token_logprobs(model, batches)
    return torch.stack([per_token[i].sum() for i in range(len(per_token))])


def npo_term(logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """−(2/β)·mean log σ(−β·logratio), logratio = log π_θ(y) − log π_ref(y): [B] → scalar."""
    return -(2.0 / beta) * F.logsigmoid(-beta * logratio).mean()


def dpo_term(win_logratio: torch.Tensor, lose_logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """−mean log σ(β·(win_logratio − lose_logratio)) (Rafailov et al., 2023): [B], [B] → scalar."""
    return -F.logsigmoid(beta * (win_logratio - lose_logratio)).mean()


# -- the method interface -------------------------------------------------------------------------

Reduction = Literal["items", "answer_tokens", "refusal_tokens", "all_tokens"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)


class Method:
    """An unlearning objective: ``forget_loss`` plus an optional retain regulariser.

    Subclasses set ``name``, ``description``, ``reference`` (the paper), ``defaults``,
    ``forget_reduction`` and implement ``forget_loss``; ``retain`` is None, ``"gdr"`` (α·NLL(r)) or
    ``"klr"`` (α·KL(π_ref‖π_θ) on r). ``prepare`` runs once, before training, on the original model:
    reference quantities are cached there, so no second model stays in memory. ``finalize`` runs once
    after training.

    ``forget_reduction`` is what ``forget_loss`` is a mean over: ``"items"`` (the forget items),
    ``"answer_tokens"`` (the tokens of their gold answers), ``"refusal_tokens"`` (the tokens of their
    refusal answers, ``forget_alt``) or ``"all_tokens"`` (every non-padding token of the forget
    sequences). It has no default: when a step is split between processes, each process's forget loss
    is weighted by its share of these terms, and a wrong guess would give a wrong gradient silently.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    reference: ClassVar[str] = ""
    defaults: ClassVar[dict[str, float]] = {}
    retain: ClassVar[str | None] = None
    needs_refusals: ClassVar[bool] = False
    needs_blank_questions: ClassVar[bool] = False  # forget prompts with the question deleted (KeyNPO)
    forget_reduction: ClassVar[Reduction]

    def __init__(self, **hparams: float):
        if getattr(self, "forget_reduction", None) not in REDUCTIONS:
            raise UnpactError(f"method {self.name}: forget_reduction must be one of {', '.join(REDUCTIONS)} "
                              "(what its forget_loss is a mean over)")
        unknown = set(hparams) - set(self.defaults)
        if unknown:
            raise UnpactError(f"method {self.name}: unknown hyper-parameter(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(self.defaults) or 'none'}")
        self.hparams = {**self.defaults, **hparams}

    def prepare(self, model, data: PrepareData) -> None:
        """Cache reference quantities of the original model (default: KL reference if ``klr``)."""
        if self.retain == "klr":
            self.ref_retain: dict[int, torch.Tensor] = {}
            with torch.no_grad():
                for packed, idx in data.batches("retain"):
                    logp = answer_log_softmax(model, packed).cpu()
                    for row, i in enumerate(idx.tolist()):
                        n = int(packed.answer_mask[row].sum())
                        self.ref_retain[i] = logp[row, logp.shape[1] - n:]  # [T_i, V], unpadded

    def trainable_parameters(self, model) -> list[torch.nn.Parameter]:
        """The parameters the optimiser updates (default: all)."""
        return [p for p in model.parameters() if p.requires_grad]

    @property
    def has_retain(self) -> bool:
        return self.retain is not None

    @property
    def retain_name(self) -> str:
        return {"gdr": "retain_nll", "klr": "retain_kl"}.get(self.retain or "", "retain")

    def forget_loss(self, model, batch: UnlearnBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The forget objective on one batch (scalar), and its named parts for logging."""
        raise NotImplementedError

    def retain_tokens(self, retain: Packed) -> torch.Tensor:
        """How many tokens the retain term averages over in this retain batch."""
        return retain.answer_mask.sum()

    def retain_sum(self, model, retain: Packed, index: torch.Tensor) -> torch.Tensor:
        """The retain term summed over the batch's tokens (the trainer divides by `retain_tokens` of
        the whole retain batch, so it may feed the batch in micro-batches to save memory)."""
        if self.retain == "gdr":
            return -answer_token_logprobs(model, retain).sum()
        if self.retain == "klr":
            logp = answer_log_softmax(model, retain)
            ref = self._ref_batch(retain, index)
            return ((ref.exp() * (ref - logp)).sum(-1) * retain.answer_mask).sum()
        raise NotImplementedError(f"{self.name} has no retain term")

    def finalize(self, model) -> None:
        """Post-training step (TaskVector's weight arithmetic); default nothing."""

    def _ref_batch(self, retain: Packed, index: torch.Tensor) -> torch.Tensor:
        """The cached reference distributions of a retain batch, right-aligned like the batch: [B, T, V]."""
        B, T = retain.answer_mask.shape
        refs = [self.ref_retain[i] for i in index.tolist()]
        out = torch.zeros(B, T, refs[0].shape[-1])
        for row, r in enumerate(refs):
            out[row, T - r.shape[0]:] = r
        return out.to(retain.input_ids.device)
