"""The one training loop every unlearning method runs in.

Each step pairs a forget batch with a retain batch and takes an AdamW step on the method's loss. The
whole batch schedule is drawn from the seed up front, so a run resumed from a checkpoint (weights and
optimiser state in safetensors, written atomically) continues exactly where it stopped. A non-finite
loss or gradient stops the run before the step, naming the step and the items, and leaves the last good
checkpoint in place.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data import Item
from ..data.chunks import TextChunk
from ..errors import UnpactError
from ..io import write_json
from ..scoring import pack
from .methods import Method, PrepareData, UnlearnBatch, get_method


@dataclass
class UnlearnConfig:
    """Settings of one unlearning run; ``hparams`` go to the method (e.g. alpha, beta).

    ``lora_rank`` > 0 trains LoRA adapters (peft) instead of the weights and merges them at the end.
    ``checkpoint_every``: steps between checkpoints (0: once per epoch).
    """

    method: str = "GA_GDR"
    epochs: int = 10
    lr: float = 3e-4
    batch_size: int = 8
    retain_batch_size: int = 32
    max_grad_norm: float = 1.0
    seed: int = 0
    lora_rank: int = 0
    checkpoint_every: int = 0
    hparams: dict[str, float] = field(default_factory=dict)


@lru_cache(maxsize=1)
def refusals() -> tuple[str, ...]:
    """TOFU's "I don't know"-style answers (bundled, MIT licence)."""
    text = resources.files("unpact.data").joinpath("resources/idontknow.jsonl").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def schedule(n_forget: int, n_retain: int, cfg: UnlearnConfig) -> list[tuple[list[int], list[int]]]:
    """Every step's (forget indices, retain indices), drawn from ``cfg.seed``."""
    rng = random.Random(cfg.seed)
    steps, pool = [], []
    for _ in range(cfg.epochs):
        order = rng.sample(range(n_forget), n_forget)
        for i in range(0, n_forget, cfg.batch_size):
            while len(pool) < cfg.retain_batch_size:
                pool += rng.sample(range(n_retain), n_retain)
            steps.append((order[i:i + cfg.batch_size], pool[:cfg.retain_batch_size]))
            pool = pool[cfg.retain_batch_size:]
    return steps


Example = Item | TextChunk


def _prompt(fmt, ex: Example) -> list[int]:
    return list(ex.prompt_ids) if isinstance(ex, TextChunk) else fmt.encode(ex.question).ids


def _target(fmt, ex: Example) -> list[int]:
    return list(ex.target_ids) if isinstance(ex, TextChunk) else fmt.encode_answer(ex.answer, eos=True)


def _blank_prompt(fmt, ex: Example) -> list[int]:
    """The prompt with what conditions the answer deleted: a question's text (template kept), or a
    text window's whole context (the document start stays, so the target is not predicted from nothing)."""
    if isinstance(ex, TextChunk):
        return fmt.text_bos or [fmt.tokenizer.eos_token_id]
    enc = fmt.encode(ex.question)
    return enc.ids[:enc.span[0]] + enc.ids[enc.span[1]:]


class _Data:
    """Token ids of every forget/retain example (and refusal targets), packed on demand. Examples are
    QA items or raw-text windows (`TextChunk`); a window's context plays the question."""

    def __init__(self, fmt, forget: list[Example], retain: list[Example], pad_id: int, device, seed: int,
                 refusal: bool, blank: bool = False):
        self.pairs = {"forget": [(_prompt(fmt, ex), _target(fmt, ex)) for ex in forget],
                      "retain": [(_prompt(fmt, ex), _target(fmt, ex)) for ex in retain]}
        if refusal:
            rng = random.Random(seed)
            self.pairs["forget_alt"] = [(p, fmt.encode_answer(rng.choice(refusals()), eos=True))
                                        for p, _ in self.pairs["forget"]]
        if blank:
            self.pairs["forget_blank"] = [(_blank_prompt(fmt, ex), a)
                                          for ex, (_, a) in zip(forget, self.pairs["forget"], strict=True)]
        self.pad_id, self.device = pad_id, device

    def packed(self, which: str, idx: list[int]):
        pairs = self.pairs[which]
        return pack([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], self.pad_id).to(self.device)

    def batches(self, which: str, size: int = 32):
        n = len(self.pairs[which])
        for i in range(0, n, size):
            idx = list(range(i, min(i + size, n)))
            yield self.packed(which, idx), torch.tensor(idx)


def _save_checkpoint(folder: Path, model, opt, step: int, key: str) -> None:
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({n: p.detach().contiguous().cpu() for n, p in model.named_parameters()}, tmp / "model.safetensors")
    state = {f"{i}.{k}": v.contiguous().cpu() for i, s in opt.state_dict()["state"].items()
             for k, v in s.items() if torch.is_tensor(v)}
    save_file(state, tmp / "optimizer.safetensors")
    write_json(tmp / "state.json", {"step": step, "key": key})
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _load_checkpoint(folder: Path, model, opt, key: str) -> int:
    """Restore weights and optimiser state; returns the number of steps already done (0: none)."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return 0
    if state.get("key") != key:
        raise UnpactError(f"{folder}: the checkpoint was made with other settings; "
                          "delete it or run without --resume")
    weights = load_file(folder / "model.safetensors")
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(weights[n])
    flat = load_file(folder / "optimizer.safetensors")
    sd = opt.state_dict()
    sd["state"] = {}
    for name, tensor in flat.items():
        i, k = name.split(".", 1)
        sd["state"].setdefault(int(i), {})[k] = tensor
    opt.load_state_dict(sd)
    return int(state["step"])


def _backward(method: Method, model, batch: UnlearnBatch, data: _Data, r_idx: list[int],
              cfg: UnlearnConfig) -> tuple[float, dict[str, float]]:
    """Accumulate the gradient of forget_loss + α·retain term; returns the loss value and its parts.

    The forget term and each retain micro-batch of ``cfg.batch_size`` items are separate backward
    passes, so activations of at most one forget-batch-sized chunk are alive at a time: the retain
    term costs no more activation memory than the forget term (the gradient is the same as one pass).
    """
    forget, parts = method.forget_loss(model, batch)
    forget.backward()
    loss = forget.item()
    if method.has_retain:
        total = method.retain_tokens(data.packed("retain", r_idx)).clamp(min=1)
        weight = method.hparams.get("alpha", 1.0) / total
        retain = 0.0
        for i in range(0, len(r_idx), cfg.batch_size):
            chunk = r_idx[i:i + cfg.batch_size]
            part = method.retain_sum(model, data.packed("retain", chunk), torch.tensor(chunk))
            (weight * part).backward()
            retain += part.item()
        parts[method.retain_name] = retain / total.item()
        loss += method.hparams.get("alpha", 1.0) * parts[method.retain_name]
    return loss, parts


def _wrap_lora(model, rank: int):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UnpactError("lora_rank > 0 needs peft: pip install 'unpact[lora]'") from None
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))


def unlearn(model, tokenizer, fmt, forget: list[Example], retain: list[Example], cfg: UnlearnConfig,
            progress: Callable[[int, int, dict], None] | None = None,
            checkpoint_dir: str | Path | None = None, resume: bool = False):
    """Unlearn ``forget`` from ``model`` while keeping ``retain``; returns (model, training logs).

    Examples are QA items or raw-text windows (`unpact.data.chunks.chunk_texts`), for every method.

    The model is changed in place (with LoRA, the adapters are merged into it at the end).
    ``progress(step, total_steps, logs)`` is called after every step. With ``checkpoint_dir``, a
    checkpoint is written every ``cfg.checkpoint_every`` steps (default once per epoch); with
    ``resume``, training continues from the checkpoint found there.
    """
    if not forget:
        raise UnpactError("the forget set is empty; nothing to unlearn")
    if not retain:
        raise UnpactError("the retain set is empty; unpact's methods need retain items")
    method: Method = get_method(cfg.method, **cfg.hparams)
    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device
    data = _Data(fmt, forget, retain, tokenizer.pad_token_id, device, cfg.seed, method.needs_refusals,
                 method.needs_blank_questions)
    steps = schedule(len(forget), len(retain), cfg)
    per_epoch = math.ceil(len(forget) / cfg.batch_size)
    every = cfg.checkpoint_every or per_epoch
    key = json.dumps(asdict(cfg), sort_keys=True)

    model.eval()  # reference quantities come from the original model
    method.prepare(model, PrepareData(data.batches))
    train_model = _wrap_lora(model, cfg.lora_rank) if cfg.lora_rank > 0 else model
    params = method.trainable_parameters(train_model)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    ckpt = Path(checkpoint_dir) / "checkpoint" if checkpoint_dir else None
    done = _load_checkpoint(ckpt, train_model, opt, key) if (ckpt and resume) else 0
    if ckpt and not resume:
        shutil.rmtree(ckpt, ignore_errors=True)

    history: list[dict] = []
    t0 = time.perf_counter()
    train_model.train()
    for step in range(done + 1, len(steps) + 1):
        f_idx, r_idx = steps[step - 1]
        batch = UnlearnBatch(data.packed("forget", f_idx), None, torch.tensor(f_idx), torch.tensor(r_idx),
                             data.packed("forget_alt", f_idx) if method.needs_refusals else None)
        opt.zero_grad(set_to_none=True)
        loss, parts = _backward(method, train_model, batch, data, r_idx, cfg)
        # a finite loss can still have a NaN gradient (0 * inf in the backward pass); stepping on it would
        # write NaN weights, and the next checkpoint would save them as the "last good" one
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        if not (math.isfinite(loss) and math.isfinite(norm)):
            what = f"loss became {loss}" if not math.isfinite(loss) else f"gradient norm became {norm}"
            ids = ", ".join(forget[j].id for j in f_idx[:3])
            kept = f"; the last good checkpoint is in {ckpt}" if ckpt and ckpt.is_dir() else ""
            raise UnpactError(f"{cfg.method}: {what} at step {step} (forget items {ids}, ...); "
                              f"lower the learning rate or the number of epochs{kept}")
        opt.step()
        history.append({"loss": loss, **parts})
        if ckpt and (step % every == 0 or step == len(steps)):
            _save_checkpoint(ckpt, train_model, opt, step, key)
        if progress:
            progress(step, len(steps), history[-1])
    if cfg.lora_rank > 0:
        model = train_model.merge_and_unload()
    method.finalize(model)
    model.eval()
    seconds = time.perf_counter() - t0
    epochs_run = (len(steps) - done) / per_epoch
    return model, {
        "method": method.name, "hparams": method.hparams, "config": asdict(cfg), "steps": len(steps),
        "resumed_from_step": done, "seconds": round(seconds, 2),
        "seconds_per_epoch": round(seconds / epochs_run, 3) if epochs_run else None,
        "final_loss": history[-1]["loss"] if history else None,
        "trainable_parameters": sum(p.numel() for p in params),
    }
