"""Relearning attack: a few fine-tuning steps on retain or related data, then ask again.

Like quantisation this **changes the weights**. If unlearning only hid the forget answers, a handful
of gradient steps on *other* facts (retain items, or facts related to the forgotten ones) can bring
them back (Hu et al. 2024, *Jogging the memory of unlearned LLMs through targeted relearning
attacks*; Lynch et al. 2024). Train on forget items themselves only as a ceiling, not as an attack.

Why not `unpact.unlearn.unlearn`: that loop is built around a forget set and a method's objective —
its schedule counts epochs over the forget set and pairs each forget batch with retain batches, and
no registered method simply minimises NLL and keeps the result (TaskVector does, then negates the
weight change). Relearning is "k AdamW steps on answer NLL over one item set", so it is written here
in a few lines over the same pieces: `pack` for the batches and the methods' `nll` for the loss, with
the trainer's optimiser settings (AdamW without weight decay, gradient norm clipped).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..data import Item
from ..errors import UnpactError
from ..optim import adamw
from ..scoring import pack
from ..unlearn.methods.base import nll
from .base import Attack, AttackContext, AttackKey, AttackRun, register, setting


def relearn_schedule(n_items: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Item indices of every step: consecutive slices of a stream of seeded shuffles of the items.

    Every item is seen once before any is seen twice, as in epochs, but the run stops after exactly
    ``steps`` batches of ``min(batch_size, n_items)`` items, wherever that falls in an epoch.
    """
    rng = random.Random(seed)
    size = min(batch_size, n_items)
    pool: list[int] = []
    out = []
    for _ in range(steps):
        while len(pool) < size:
            pool += rng.sample(range(n_items), n_items)
        out.append(pool[:size])
        pool = pool[size:]
    return out


def relearn(model: torch.nn.Module, tokenizer, fmt, items: Sequence[Item], steps: int = 10, lr: float = 3e-4,
            batch_size: int = 8, seed: int = 0, max_grad_norm: float = 1.0) -> torch.nn.Module:
    """A copy of ``model`` fine-tuned for ``steps`` AdamW steps on the answer NLL of ``items``.

    Each step's loss is the mean negative log-likelihood of the gold answer tokens (with EOS, as in
    training and unlearning) given ``fmt``'s prompt, over a batch of ``batch_size`` items. The batches
    come from ``seed`` (`relearn_schedule`) and torch is seeded with it in a forked RNG state, so the
    same call gives the same weights (bit for bit on CPU) and the caller's random stream is untouched.
    ``model`` is not changed; the copy (a ``deepcopy``, on the same device) is returned in eval mode.
    The copy trains in float32 and comes back in ``model``'s dtype: in bfloat16 a step of lr 1e-5 is
    below the rounding step of most weights and would be lost.
    """
    if not items:
        raise UnpactError("relearning needs at least one item to train on")
    if steps < 1 or batch_size < 1:
        raise UnpactError(f"relearning needs steps ≥ 1 and batch_size ≥ 1, got steps={steps}, batch_size={batch_size}")
    dtype = next(model.parameters()).dtype
    tuned = copy.deepcopy(model).float()
    device = next(tuned.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pairs = [(fmt.encode(it.question).ids, fmt.encode_answer(it.answer, eos=True)) for it in items]
    params = list(tuned.parameters())
    for p in params:
        p.requires_grad_(True)  # a model loaded for inference may come frozen
    opt = adamw(params, lr)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout, where the model has any
        tuned.train()
        for idx in relearn_schedule(len(pairs), steps, batch_size, seed):
            batch = pack([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], pad_id).to(device)
            opt.zero_grad(set_to_none=True)
            nll(tuned, batch).backward()
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
    return tuned.to(dtype).eval()


@dataclass
class RelearnSettings:
    steps: int = setting(10, "AdamW steps of answer NLL on the retain items", lambda n: n >= 1, "use at least 1 step")
    lr: float = setting(1e-3, "relearning learning rate", lambda lr: lr > 0, "use a positive learning rate")


@register
class Relearn(Attack):
    """A copy of the unlearned model fine-tuned on the retain items (`relearn`), asked again."""

    name = "relearn"
    help = "a few fine-tuning steps on retain items, then ask again"
    order = 5
    changes_weights = True
    needs_weights = True
    channel = "weights"
    Settings = RelearnSettings

    def run(self, ctx: AttackContext, settings: RelearnSettings) -> dict[AttackKey, AttackRun]:
        s = ctx.scorer
        if not ctx.questions:  # nothing forgotten to ask: no relearning
            return {AttackKey(self.name): AttackRun([], [])}
        relearned = relearn(s.model, s.tokenizer, s.fmt, ctx.splits["retain"], steps=settings.steps,
                            lr=settings.lr, seed=ctx.seed)
        return {AttackKey(self.name): AttackRun(ctx.questions, ctx.rescore(relearned).generate(ctx.questions))}
