"""The one training loop every unlearning method runs in.

Each step pairs a forget batch with a retain batch (retain items cycle, reshuffled), asks the method
for its loss, and takes an AdamW step. A non-finite loss stops the run naming the step and the items.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ..data import Item
from ..errors import UnpactError
from ..scoring import pack
from .methods import UnlearnBatch, get_method


@dataclass
class UnlearnConfig:
    """Settings of one unlearning run; ``hparams`` go to the method (e.g. alpha, beta)."""

    method: str = "GA_GDR"
    epochs: int = 10
    lr: float = 3e-4
    batch_size: int = 8
    retain_batch_size: int = 32
    max_grad_norm: float = 1.0
    seed: int = 0
    hparams: dict[str, float] = field(default_factory=dict)


def _encode(fmt, items: list[Item]) -> list[tuple[list[int], list[int]]]:
    # Unlearning targets the answer tokens as trained (with EOS), under the plain question.
    return [(fmt.encode(it.question).ids, fmt.encode_answer(it.answer, eos=True)) for it in items]


def _packed(pairs, idx: list[int], pad_id: int):
    return pack([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], pad_id)


def unlearn(model, tokenizer, fmt, forget: list[Item], retain: list[Item], cfg: UnlearnConfig,
            progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Unlearn ``forget`` from ``model`` in place while keeping ``retain``; returns training logs.

    ``progress(step, total_steps, logs)`` is called after every step.
    """
    if not forget:
        raise UnpactError("the forget set is empty; nothing to unlearn")
    if not retain:
        raise UnpactError("the retain set is empty; the GDR methods need retain items")
    method = get_method(cfg.method, **cfg.hparams)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    pad = tokenizer.pad_token_id
    device = next(model.parameters()).device
    f_pairs, r_pairs = _encode(fmt, forget), _encode(fmt, retain)
    f_batches = [list(range(i, min(i + cfg.batch_size, len(forget)))) for i in range(0, len(forget), cfg.batch_size)]

    model.eval()  # reference quantities come from the original model, without dropout
    method.prepare(model, [(_packed(f_pairs, b, pad).to(device), torch.tensor(b)) for b in f_batches])

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    total = cfg.epochs * len(f_batches)
    retain_order: list[int] = []
    history: list[dict] = []
    t0 = time.perf_counter()
    model.train()
    step = 0
    for _ in range(cfg.epochs):
        order = list(range(len(forget)))
        rng.shuffle(order)
        for i in range(0, len(order), cfg.batch_size):
            f_idx = order[i:i + cfg.batch_size]
            if len(retain_order) < cfg.retain_batch_size:
                retain_order += rng.sample(range(len(retain)), len(retain))
            r_idx, retain_order = retain_order[:cfg.retain_batch_size], retain_order[cfg.retain_batch_size:]
            batch = UnlearnBatch(_packed(f_pairs, f_idx, pad).to(device), _packed(r_pairs, r_idx, pad).to(device),
                                 torch.tensor(f_idx))
            loss, parts = method.loss(model, batch)
            step += 1
            if not math.isfinite(loss.item()):
                ids = ", ".join(forget[j].id for j in f_idx[:3])
                raise UnpactError(f"{cfg.method}: loss became {loss.item()} at step {step} (forget items {ids}, ...); "
                                  "lower the learning rate or the number of epochs")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            logs = {"loss": loss.item(), **parts}
            history.append(logs)
            if progress:
                progress(step, total, logs)
    model.eval()
    return {"method": method.name, "hparams": method.hparams, "config": asdict(cfg), "steps": step,
            "seconds": round(time.perf_counter() - t0, 2), "final_loss": history[-1]["loss"] if history else None}
