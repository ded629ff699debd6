"""Where a study's time goes: wall seconds per stage, and (when asked) the seconds spent inside the
model and the tokens it was given, so a stage can be compared with its floor.

A stage is a named span (``with stage("answers"):``); stages nest, and a span's time is charged to
the innermost open stage only, so the stages of a cell add up to its wall time. Nothing is recorded
unless a `Recorder` is active (``with Recorder() as rec:``), so the study pays nothing otherwise.

``Recorder(model_time=True)`` also installs global module hooks: the time between the outermost
module's forward entry and exit, and inside ``torch.autograd.backward``, is "model time"; the
non-padding positions fed to the outermost forward (``attention_mask`` over the fed positions, or
every position) are the stage's tokens, split into inference and training (grad enabled). The hooks
cost a few microseconds per module call: the study benchmark uses them, runs do not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

_active: ContextVar[Recorder | None] = ContextVar("unpact_timing", default=None)


@dataclass
class StageTime:
    """What one stage cost: wall and model seconds, tokens fed for inference and for training."""

    wall: float = 0.0
    model: float = 0.0
    infer_tokens: int = 0
    train_tokens: int = 0
    calls: int = 0  # outermost forward calls (a generation step is one)


@dataclass
class Recorder:
    """Per-stage `StageTime`, in the order the stages were first entered."""

    model_time: bool = False
    stages: dict[str, StageTime] = field(default_factory=dict)

    def __post_init__(self):
        self._stack: list[str] = []
        self._mark = 0.0
        self._depth = 0  # forward nesting: only the outermost module's call is counted
        self._entered = 0.0
        self._handles: list = []

    def _charge(self) -> None:
        now = time.perf_counter()
        if self._stack:
            self.stages[self._stack[-1]].wall += now - self._mark
        self._mark = now

    def push(self, name: str) -> None:
        self._charge()
        self.stages.setdefault(name, StageTime())
        self._stack.append(name)

    def pop(self) -> None:
        self._charge()
        self._stack.pop()

    def _current(self) -> StageTime | None:
        return self.stages[self._stack[-1]] if self._stack else None

    # -- model time and tokens (global hooks) ----------------------------------------------------

    def _pre(self) -> None:
        self._depth += 1
        if self._depth == 1:
            self._entered = time.perf_counter()

    def _post(self, args, kwargs) -> None:
        self._depth -= 1
        if self._depth or (st := self._current()) is None:
            return
        st.model += time.perf_counter() - self._entered
        st.calls += 1
        if kwargs is None:  # the forward raised: its keyword inputs are not passed (see `fed_tokens`)
            return
        ids = kwargs.get("input_ids", args[0] if args and torch.is_tensor(args[0]) else None)
        self._count(st, ids if ids is not None else kwargs.get("inputs_embeds"), kwargs.get("attention_mask"))

    @staticmethod
    def _count(st: StageTime, fed, mask) -> None:
        if fed is None or fed.dim() < 2:
            return
        n_fed = fed.shape[1]
        if torch.is_tensor(mask) and mask.dim() == 2 and mask.shape[1] >= n_fed:
            tokens = int(mask[:, -n_fed:].sum())  # padding is work, not tokens
        else:
            tokens = int(fed.shape[0] * n_fed)
        if torch.is_grad_enabled():
            st.train_tokens += tokens
        else:
            st.infer_tokens += tokens

    def _install(self) -> None:
        from torch.nn.modules import module as nn_module

        self._handles = [nn_module.register_module_forward_pre_hook(_hook_pre),
                         nn_module.register_module_forward_hook(_hook_post, with_kwargs=True, always_call=True)]
        self._backward = torch.autograd.backward

        def backward(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return self._backward(*args, **kwargs)
            finally:
                if (st := self._current()) is not None:
                    st.model += time.perf_counter() - t0

        torch.autograd.backward = backward

    def _uninstall(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        torch.autograd.backward = self._backward

    def __enter__(self) -> Recorder:
        self._token = _active.set(self)
        self._mark = time.perf_counter()
        if self.model_time:
            self._install()
        return self

    def __exit__(self, *exc) -> None:
        self._charge()
        if self.model_time:
            self._uninstall()
        _active.reset(self._token)

    def table(self) -> dict[str, dict]:
        """{stage: {wall_s}} and, with ``model_time``, also model_s, infer_tokens, train_tokens and
        calls; rounded for a JSON file."""
        out = {}
        for name, st in self.stages.items():
            out[name] = {"wall_s": round(st.wall, 3)}
            if self.model_time:
                out[name].update(model_s=round(st.model, 3), infer_tokens=st.infer_tokens,
                                 train_tokens=st.train_tokens, calls=st.calls)
        return out


# Module hooks are global (a pre-hook sees no keyword arguments, so tokens are read on the way out);
# each call finds the active recorder.
def _hook_pre(module, args):
    if (rec := _active.get()) is not None:
        rec._pre()


def _hook_post(module, args, kwargs, output=None):
    # always_call: a forward that raises still unwinds the nesting depth, or every later call would go
    # uncounted. Torch then calls the hook as (module, args, result=None), without the keyword inputs.
    if (rec := _active.get()) is not None:
        rec._post(args, kwargs if isinstance(kwargs, dict) else None)


def fed_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
    """Count the tokens of a forward that its caller stopped with an exception (`Scorer.states_before`),
    which the hooks cannot see; nothing when no recorder with ``model_time`` is active."""
    rec = _active.get()
    if rec is not None and rec.model_time and (st := rec._current()) is not None:
        rec._count(st, input_ids, attention_mask)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Charge the time inside to stage ``name`` of the active recorder (nothing when none is)."""
    rec = _active.get()
    if rec is None:
        yield
        return
    rec.push(name)
    try:
        yield
    finally:
        rec.pop()
