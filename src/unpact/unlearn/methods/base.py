"""What every unlearning method shares: the batch it sees, its hyper-parameters, the retain
regularisers, and the maths (answer NLL, sequence log-probs, KL, preference terms) written once over
the one scoring primitive."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args, get_type_hints

import torch
import torch.nn.functional as F

from ...errors import UnpactError, did_you_mean
from ...scoring import Packed, answer_log_softmax, answer_token_logprobs


@dataclass
class UnlearnBatch:
    """One step's data. ``forget``: forget questions with their gold answers; ``forget_alt``: the same
    questions with a refusal answer (IdkNLL/IdkDPO); ``retain``: None from the trainer, which feeds
    retain items to `Method.retain_sum` in micro-batches. ``*_index``: positions in the forget/retain
    sets, to look up quantities cached in `Method.prepare`. ``alternates``: wrong but plausible answers
    to the forget questions (AltPO), several per item."""

    forget: Packed
    retain: Packed | None
    forget_index: torch.Tensor  # [B_f] long
    retain_index: torch.Tensor  # [B_r] long
    forget_alt: Packed | None = None
    alternates: Packed | None = None  # AltPO: every alternate answer of the batch's items, flat: [A, T]
    alternate_owner: torch.Tensor | None = None  # [A] long: each alternate's row in ``forget``
    alternate_index: torch.Tensor | None = None  # [A] long: its position in the whole alternate set


class PrepareData:
    """What `Method.prepare` may iterate over: every forget/retain item, in batches, with indices."""

    def __init__(self, make_batches):
        self._make = make_batches

    def batches(self, which: str) -> Iterator[tuple[Packed, torch.Tensor]]:
        """(packed batch, item indices) over ``which`` ∈ {"forget", "forget_alt", "forget_alts",
        "forget_blank", "retain"}."""
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


# -- typed hyper-parameters -----------------------------------------------------------------------

# PyYAML follows YAML 1.1, where `5e-4` is a string and only `5.0e-4` a float; people write the former.
EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_RANGE = re.compile(r"([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+)\s*([\])])")


@dataclass(frozen=True)
class Range:
    """An interval of valid values, written as in maths: ``(0, inf)``, ``[0, 1]``, ``[1, inf)``."""

    text: str

    def __post_init__(self):
        if not _RANGE.fullmatch(self.text):
            raise ValueError(f"bad range {self.text!r}; write it like (0, inf) or [0, 1]")

    def __contains__(self, value: float) -> bool:
        left, low, high, right = _RANGE.fullmatch(self.text).groups()
        low, high = float(low), float(high)
        above = value > low or (left == "[" and value == low)
        below = value < high or (right == "]" and value == high)
        return above and below

    def __str__(self) -> str:
        return self.text


def hparam(default: float | int, help: str, range: str) -> Any:  # noqa: A002 (the field's words)
    """A field of a method's hyper-parameters: its default, one help line and its valid range."""
    return field(default=default, metadata={"help": help, "range": Range(range)})


@dataclass
class NoHparams:
    """A method with nothing to set."""


@dataclass
class RetainWeight:
    alpha: float = hparam(1.0, "weight α of the retain term", "[0, inf)")


def hparam_fields(hparams_cls: type) -> list[tuple[dataclasses.Field, type]]:
    """(field, its type: int or float) for every hyper-parameter of a method, in declaration order."""
    hints = get_type_hints(hparams_cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(hparams_cls)]


def check_hparams(method: type[Method], values: Mapping[str, Any], where: str) -> dict[str, float | int]:
    """The one check of a method's hyper-parameters (study configs, ``unpact unlearn --set``,
    `get_method`): known names, numbers of the declared type (integers stay integers; an integral
    float such as ``--set layer=9`` becomes one), inside the declared range. Returns the given values
    converted, without defaults; errors are one line naming ``where`` + the key (``where`` is the key
    path's prefix, e.g. ``config methods[2].hparams.``)."""
    fields = {f.name: (f, tp) for f, tp in hparam_fields(method.Hparams)}
    takes = f"{method.name} takes {', '.join(fields) or 'none'}"
    out: dict[str, float | int] = {}
    for key, value in values.items():
        if key not in fields:
            raise UnpactError(f"{where}{key}: unknown hyper-parameter of {method.name}"
                              f"{did_you_mean(str(key), fields)}; {takes}")
        f, tp = fields[key]
        if isinstance(value, str) and EXPONENT_FLOAT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UnpactError(f"{where}{key}: expected {'an integer' if tp is int else 'a number'}, got {value!r}")
        if tp is int:
            if value != int(value):
                raise UnpactError(f"{where}{key}: expected an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if value not in f.metadata["range"]:
            raise UnpactError(f"{where}{key}: {value!r} is out of range {f.metadata['range']}; "
                              f"{key} is the {f.metadata['help']}")
        out[key] = value
    return out


# -- the method interface -------------------------------------------------------------------------

Reduction = Literal["items", "answer_tokens", "refusal_tokens", "all_tokens"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)


class Method:
    """An unlearning objective: ``forget_loss`` plus an optional retain regulariser.

    Subclasses set ``name``, ``description``, ``reference`` (the paper), ``Hparams`` (a dataclass of
    `hparam` fields: default, help line, range; ``defaults`` is derived from it), ``forget_reduction``
    and implement ``forget_loss``; ``retain`` is None, ``"gdr"`` (α·NLL(r)) or
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
    Hparams: ClassVar[type] = NoHparams
    defaults: ClassVar[dict[str, float | int]] = {}  # derived from Hparams
    retain: ClassVar[str | None] = None
    needs_refusals: ClassVar[bool] = False
    needs_blank_questions: ClassVar[bool] = False  # forget prompts with the question deleted (KeyNPO)
    needs_alternates: ClassVar[bool] = False  # wrong but plausible answers to every forget question (AltPO)
    forget_reduction: ClassVar[Reduction]
    # The hyper-parameter that trades forgetting against keeping, which `unpact tune` sweeps beside the
    # step size: the retain weight α unless a class names another; None: the step size alone.
    tradeoff: ClassVar[str | None]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.defaults = {f.name: f.default for f, _ in hparam_fields(cls.Hparams)}
        if "tradeoff" not in cls.__dict__:
            cls.tradeoff = "alpha" if "alpha" in cls.defaults else None

    def __init__(self, **hparams: float | int):
        if getattr(self, "forget_reduction", None) not in REDUCTIONS:
            raise UnpactError(f"method {self.name}: forget_reduction must be one of {', '.join(REDUCTIONS)} "
                              "(what its forget_loss is a mean over)")
        self.hp = self.Hparams(**check_hparams(type(self), hparams, f"method {self.name}: hparams."))
        self.hparams = dataclasses.asdict(self.hp)

    @property
    def skipped_answer_tokens(self) -> int:
        """Leading answer tokens of each item an ``answer_tokens`` forget loss leaves out (CE-U)."""
        return 0

    @property
    def retain_weight(self) -> float:
        """The weight α of the retain term at this step (PDU's changes as training goes)."""
        return self.hparams.get("alpha", 1.0)

    def after_step(self, parts: dict[str, float], epochs_done: int) -> None:
        """Called after every optimiser step with the step's logged loss parts (the same on every
        process) and the number of epochs finished before the step; PDU updates its dual variable here."""

    def state(self) -> dict[str, float]:
        """What `after_step` changed, for checkpoints (default: nothing)."""
        return {}

    def load_state(self, state: dict[str, float]) -> None:
        """Restore `state` when a run resumes."""

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
