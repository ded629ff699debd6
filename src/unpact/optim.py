"""The optimiser every training loop uses (the built-in model, unlearning, the relearning attack)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adamw(params: Iterable[torch.nn.Parameter], lr: float, **settings) -> torch.optim.AdamW:
    """AdamW without weight decay, fused into one kernel where torch has one for the parameters.

    Same update rule as the per-parameter loop, equal up to float rounding (which a long run, like the
    built-in model's training, carries into visibly different end points; the same seed still gives
    the same numbers). Why fused: on Gemma 3 270M (268M parameters, 2 CPU cores) one step takes
    0.16 s fused against 1.28 s looped and 0.98 s with ``foreach`` — 1 s a step, 10–20% of a short
    unlearning run. ``settings`` go to `torch.optim.AdamW` (e.g. ``betas``).
    """
    params = list(params)
    fused = bool(params) and all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused or None, **settings)
