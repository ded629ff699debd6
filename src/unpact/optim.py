"""The optimiser every training loop uses (the built-in model, unlearning, the relearning attack)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adamw(params: Iterable[torch.nn.Parameter], lr: float, **settings) -> torch.optim.AdamW:
    """AdamW without weight decay, fused into one kernel where torch has one for the parameters.

    Same update rule as the per-parameter loop, equal up to float rounding (which a long run, like the
    built-in model's training, carries into visibly different end points; the same seed still gives
    the same numbers). Why fused: one kernel over all parameters instead of a Python loop over them,
    which on a model of a few hundred million parameters saves a large share of each step and so of a
    short unlearning run (measured in the README). ``settings`` go to `torch.optim.AdamW` (e.g. ``betas``).
    """
    params = list(params)
    fused = bool(params) and all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused or None, **settings)
