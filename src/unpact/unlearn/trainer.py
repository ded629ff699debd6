"""The one training loop every unlearning method runs in.

Each step pairs a forget batch with a retain batch and takes an AdamW step on the method's loss. The
whole batch schedule is drawn from the seed up front, so a run resumed from a checkpoint (weights and
optimiser state in safetensors, written atomically) continues exactly where it stopped. A non-finite
loss or gradient stops the run before the step, naming the step and the items, and leaves the last good
checkpoint in place.

Under several processes (``accelerate launch``; `unpact.distributed`) the same loop runs on every
process through one `accelerate.Accelerator` (DDP; FSDP or DeepSpeed when the user's accelerate config
asks): each step's forget and retain items are split between the processes, and each process's loss is
weighted so that the averaged gradient is the gradient of the whole step's loss — the same steps, the
same result as one process, up to float rounding. See `_backward`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import operator
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .. import distributed
from ..data import Item
from ..data.chunks import TextChunk
from ..errors import UnpactError
from ..io import write_json
from ..optim import adamw
from ..scoring import pack
from .methods import Method, PrepareData, UnlearnBatch, get_method
from .methods.base import Reduction


@dataclass
class UnlearnConfig:
    """Settings of one unlearning run; ``hparams`` go to the method (e.g. alpha, beta).

    ``lora_rank`` > 0 trains LoRA adapters (peft) instead of the weights and merges them at the end.
    ``checkpoint_every``: steps between checkpoints (0: after a minute of training at most, and after
    the last step; once per epoch under several processes, which must agree on it). ``hparams`` are typed and
    range-checked against the method's ``Hparams`` (`unpact.unlearn.methods.base.check_hparams`).
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
    hparams: dict[str, Any] = field(default_factory=dict)


# With the default ``checkpoint_every`` (0), at most this much training is lost to an interruption.
CHECKPOINT_SECONDS = 60.0


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
                 refusal: bool, blank: bool = False, alternates: int = 0):
        self.pairs = {"forget": [(_prompt(fmt, ex), _target(fmt, ex)) for ex in forget],
                      "retain": [(_prompt(fmt, ex), _target(fmt, ex)) for ex in retain]}
        if refusal:
            rng = random.Random(seed)
            self.pairs["forget_alt"] = [(p, fmt.encode_answer(rng.choice(refusals()), eos=True))
                                        for p, _ in self.pairs["forget"]]
        if blank:
            self.pairs["forget_blank"] = [(_blank_prompt(fmt, ex), a)
                                          for ex, (_, a) in zip(forget, self.pairs["forget"], strict=True)]
        if alternates:
            self._alternates(fmt, forget, seed, alternates)
        self.pad_id, self.device = pad_id, device

    def _alternates(self, fmt, forget: list[Example], seed: int, k: int) -> None:
        """``forget_alts``: up to ``k`` wrong answers per forget question, flat, and ``alts_of[i]`` the
        positions of item i's among them. The benchmark's perturbed answers where it has them (the
        built-in benchmark's and TOFU's: the same sentence with the fact swapped); else a refusal,
        the one alternative every benchmark has."""
        rng = random.Random(seed)
        self.pairs["forget_alts"], self.alts_of = [], []
        for ex, (prompt, _) in zip(forget, self.pairs["forget"], strict=True):
            answers = list(getattr(ex, "perturbed_answers", ()))[:k] or [rng.choice(refusals())]
            first = len(self.pairs["forget_alts"])
            self.pairs["forget_alts"] += [(prompt, fmt.encode_answer(a, eos=True)) for a in answers]
            self.alts_of.append(list(range(first, first + len(answers))))

    def packed(self, which: str, idx: list[int]):
        pairs = self.pairs[which]
        return pack([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], self.pad_id).to(self.device)

    def alternates(self, idx: list[int]) -> tuple:
        """The alternates of forget items ``idx``, packed, and each one's row in the forget batch: [A]."""
        flat = [a for i in idx for a in self.alts_of[i]]
        owner = [row for row, i in enumerate(idx) for _ in self.alts_of[i]]
        return self.packed("forget_alts", flat), torch.tensor(owner, device=self.device), torch.tensor(flat)

    def batches(self, which: str, size: int = 32):
        n = len(self.pairs[which])
        for i in range(0, n, size):
            idx = list(range(i, min(i + size, n)))
            yield self.packed(which, idx), torch.tensor(idx)


def _save_checkpoint(folder: Path, model, opt, step: int, key: str, method_state: dict | None = None) -> None:
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({n: p.detach().contiguous().cpu() for n, p in model.named_parameters()}, tmp / "model.safetensors")
    state = {f"{i}.{k}": v.contiguous().cpu() for i, s in opt.state_dict()["state"].items()
             for k, v in s.items() if torch.is_tensor(v)}
    save_file(state, tmp / "optimizer.safetensors")
    write_json(tmp / "state.json", {"step": step, "key": key, "method": method_state or {}})
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _load_checkpoint(folder: Path, model, opt, key: str, method: Method | None = None) -> int:
    """Restore weights, optimiser state and the method's own (PDU's dual variable); returns the number
    of steps already done (0: none)."""
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
    if method is not None:
        method.load_state(state.get("method", {}))
    return int(state["step"])


def _forget_units(reduction: Reduction, data: _Data, idx: list[int], skip: int = 0) -> float:
    """How many terms a forget loss with this reduction (`Method.forget_reduction`) averages over on
    the forget items ``idx``: the items, their gold or refusal answer tokens, or all their tokens;
    ``skip``: leading answer tokens per item the loss leaves out (`Method.skipped_answer_tokens`)."""
    if reduction == "items":
        return float(len(idx))
    if reduction == "all_tokens":
        return float(sum(len(p) + len(a) for p, a in (data.pairs["forget"][i] for i in idx)))
    which = {"answer_tokens": "forget", "refusal_tokens": "forget_alt"}[reduction]
    return float(sum(max(len(data.pairs[which][i][1]) - skip, 0) for i in idx))


def _added(values):
    # no leading 0 as in sum(): a lone process logs its values exactly as they are, -0.0 included
    return functools.reduce(operator.add, values)


def _backward(method: Method, run: _OneProcess | _DataParallel, data: _Data, f_idx: list[int],
              r_idx: list[int], cfg: UnlearnConfig) -> tuple[float, dict[str, float]]:
    """Accumulate this process's share of the gradient of one step's loss, forget + α·retain (all-reduced
    under several processes); returns the whole step's loss and its parts, as one process logs them.

    The one place the loss is put together, for one process and for several. The step's forget
    indices ``f_idx`` and retain indices ``r_idx`` are each split between the W processes
    (`distributed.shard`); process p's loss is W · (its share of the forget terms, by
    `Method.forget_reduction`) · forget loss of its items + W · α / (retain tokens of the whole step) ·
    its retain sum, so the gradient DDP averages is the gradient of the whole step's loss. One process
    is W = 1 holding the whole step, share 1.0: both factors are exact, its gradient is that of
    forget + α·retain.

    The forget term and each retain micro-batch of ``cfg.batch_size`` items are separate backward
    passes, so activations of at most one forget-batch-sized chunk are alive at a time, with gradient
    synchronisation off but for the last (one all-reduce per step). DeepSpeed's engine expects one
    backward per optimiser step: there the passes' losses are summed into one backward. A process
    whose forget share is empty runs the forget loss of one item with weight 0 (DDP needs a gradient
    for every parameter from every process).
    """
    W = distributed.world()
    f_mine = [f_idx[i] for i in distributed.shard(f_idx)]
    r_mine = [r_idx[i] for i in distributed.shard(r_idx)]
    units = functools.partial(_forget_units, method.forget_reduction, data, skip=method.skipped_answer_tokens)
    # clamped to 1 like the losses' own denominators (a step with no answer tokens has a zero forget
    # loss, weighted 0); a real count is untouched, so one process's share is exactly 1.0
    share = units(f_mine) / max(units(f_idx), 1.0) if f_mine else 0.0
    run_f = f_mine or f_idx[:1]
    alpha = method.retain_weight
    if method.has_retain:
        total = method.retain_tokens(data.packed("retain", r_idx)).clamp(min=1)
    logged: dict = {"forget": 0.0, "parts": {}, "retain": 0.0}

    def forget_pass() -> torch.Tensor:
        batch = UnlearnBatch(data.packed("forget", run_f), None, torch.tensor(run_f), torch.tensor(r_mine),
                             data.packed("forget_alt", run_f) if method.needs_refusals else None,
                             *(data.alternates(run_f) if method.needs_alternates else (None, None)))
        loss, parts = method.forget_loss(run.wrapped, batch)
        logged["forget"], logged["parts"] = share * loss.item(), {k: share * v for k, v in parts.items()}
        return loss * (W * share)

    def retain_pass(chunk: list[int]) -> torch.Tensor:
        part = method.retain_sum(run.wrapped, data.packed("retain", chunk), torch.tensor(chunk))
        logged["retain"] += part.item()
        return (W * alpha / total) * part

    passes = [forget_pass]
    if method.has_retain:
        passes += [lambda c=r_mine[i:i + cfg.batch_size]: retain_pass(c)
                   for i in range(0, len(r_mine), cfg.batch_size)]
    if run.deepspeed:
        run.backward(sum(make_loss() for make_loss in passes))
    else:
        for k, make_loss in enumerate(passes):
            with run.no_sync() if k < len(passes) - 1 else contextlib.nullcontext():
                run.backward(make_loss())
    # the logged values: sums over the processes, in rank order (the same on every process)
    every = distributed.gather([(logged["forget"], logged["parts"], logged["retain"])])
    loss = _added(f for f, _, _ in every)
    parts = {k: _added(p[k] for _, p, _ in every) for k in every[0][1]}
    if method.has_retain:
        parts[method.retain_name] = _added(r for _, _, r in every) / total.item()
        loss += alpha * parts[method.retain_name]
    return loss, parts


class _OneProcess:
    """The training step's machinery in one plain process: the model and optimiser as they are, a
    plain backward per pass, nothing to synchronise, checkpoints written directly."""

    deepspeed = False

    def __init__(self, model, opt, params: list[torch.nn.Parameter]):
        self.model = self.wrapped = model
        self.opt, self.params = opt, params
        self.device = next(model.parameters()).device

    def no_sync(self):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm(self, max_norm: float) -> float:
        """The gradient norm before clipping."""
        return float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))

    def save_checkpoint(self, folder: Path, step: int, key: str, method_state: dict) -> None:
        _save_checkpoint(folder, self.model, self.opt, step, key, method_state)

    def finish(self):
        return self.model


class _DataParallel:
    """The training step's machinery under several processes, through an `accelerate.Accelerator`.

    Every process holds the same model and optimiser state and draws the same schedule; `_backward`
    splits each step between them. Parameters the method does not train are frozen for the run (DDP
    would otherwise wait for their gradients), and thawed at the end.

    Checkpoints are written by the main process; with FSDP or DeepSpeed, where the weights and the
    optimiser state are split across processes, none are written (a warning says so).
    """

    def __init__(self, model, opt, params: list[torch.nn.Parameter]):
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        self.accelerator = Accelerator()
        trainable = {id(p) for p in params}
        self.frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in trainable]
        for p in self.frozen:
            p.requires_grad_(False)
        self.model, self.params, self.raw_opt = model, params, opt
        self.wrapped, self.opt = self.accelerator.prepare(model, opt)
        if isinstance(self.wrapped, torch.nn.parallel.DistributedDataParallel):
            # the buffers (rotary frequencies) are the same everywhere, and a broadcast before forward
            # passes is a collective that processes with different numbers of passes must not be in
            # (set after construction: the constructor argument is deprecated in torch 2.13, the
            # attribute works on every version)
            self.wrapped.broadcast_buffers = False
        kind = self.accelerator.distributed_type
        self.sharded_state = kind in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        self.fsdp, self.deepspeed = kind == DistributedType.FSDP, kind == DistributedType.DEEPSPEED
        self.warned = False

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def no_sync(self):
        return self.accelerator.no_sync(self.wrapped)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip_grad_norm(self, max_norm: float) -> float:
        """The gradient norm before clipping (0.0 when DeepSpeed reports none)."""
        # FSDP clips through its own (sharded) parameters; DeepSpeed clips inside its engine and may
        # report no norm
        norm = self.accelerator.clip_grad_norm_(list(self.wrapped.parameters()) if self.fsdp else self.params,
                                                max_norm)
        return 0.0 if norm is None else float(norm)

    def save_checkpoint(self, folder: Path, step: int, key: str, method_state: dict) -> None:
        if self.sharded_state:
            if not self.warned:
                warnings.warn("no training checkpoints under FSDP or DeepSpeed (the weights and optimiser state "
                              "are split across processes); an interrupted run starts over", stacklevel=3)
                self.warned = True
            return
        distributed.main_only(lambda: _save_checkpoint(folder, self.model, self.raw_opt, step, key, method_state))

    def finish(self):
        """The trained model, unwrapped, with its parameters' ``requires_grad`` as before, and no DDP
        hooks left on it (later training in one process, e.g. the relearning attack, must not wait
        for the others)."""
        model = self.accelerator.unwrap_model(self.wrapped)
        self.wrapped = self.opt = None
        self.accelerator.free_memory()  # drops its references and collects: DDP's gradient buckets go
        for p in self.frozen:
            p.requires_grad_(True)
        return model


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
    checkpoint is written every ``cfg.checkpoint_every`` steps (default: once a minute of training at
    most, and after the last step, so a large model does not spend its time writing them); with
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
                 method.needs_blank_questions, method.hparams["alternates"] if method.needs_alternates else 0)
    steps = schedule(len(forget), len(retain), cfg)
    per_epoch = math.ceil(len(forget) / cfg.batch_size)
    every = cfg.checkpoint_every or per_epoch
    key = json.dumps(asdict(cfg), sort_keys=True)

    model.eval()  # reference quantities come from the original model
    method.prepare(model, PrepareData(data.batches))
    train_model = _wrap_lora(model, cfg.lora_rank) if cfg.lora_rank > 0 else model
    params = method.trainable_parameters(train_model)
    opt = adamw(params, cfg.lr)
    ckpt = Path(checkpoint_dir) / "checkpoint" if checkpoint_dir else None
    done = _load_checkpoint(ckpt, train_model, opt, key, method) if (ckpt and resume) else 0
    if ckpt and not resume:
        distributed.main_only(lambda: shutil.rmtree(ckpt, ignore_errors=True))
    run = (_DataParallel if distributed.world() > 1 else _OneProcess)(train_model, opt, params)
    data.device = run.device  # the accelerator may have moved the model (a process's own GPU)

    history: list[dict] = []
    t0 = saved = time.perf_counter()
    by_time = not cfg.checkpoint_every and distributed.world() == 1
    train_model.train()
    for step in range(done + 1, len(steps) + 1):
        f_idx, r_idx = steps[step - 1]
        run.opt.zero_grad(set_to_none=True)
        loss, parts = _backward(method, run, data, f_idx, r_idx, cfg)
        # a finite loss can still have a NaN gradient (0 * inf in the backward pass); stepping on it would
        # write NaN weights, and the next checkpoint would save them as the "last good" one
        norm = run.clip_grad_norm(cfg.max_grad_norm)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            what = f"loss became {loss}" if not math.isfinite(loss) else f"gradient norm became {norm}"
            ids = ", ".join(forget[j].id for j in f_idx[:3])
            kept = f"; the last good checkpoint is in {ckpt}" if ckpt and ckpt.is_dir() else ""
            raise UnpactError(f"{cfg.method}: {what} at step {step} (forget items {ids}, ...); "
                              f"lower the learning rate or the number of epochs{kept}")
        run.opt.step()
        method.after_step(parts, (step - 1) // per_epoch)
        history.append({"loss": loss, **parts})
        due = time.perf_counter() - saved >= CHECKPOINT_SECONDS if by_time else step % every == 0
        if ckpt and (due or step == len(steps)):
            run.save_checkpoint(ckpt, step, key, method.state())
            saved = time.perf_counter()
        if progress:
            progress(step, len(steps), history[-1])
    t_end = time.perf_counter()
    train_model = run.finish()
    teardown = time.perf_counter() - t_end  # freeing DDP's buffers: not training time
    if cfg.lora_rank > 0:
        model = train_model.merge_and_unload()
    method.finalize(model)
    model.eval()
    seconds = time.perf_counter() - t0 - teardown
    epochs_run = (len(steps) - done) / per_epoch
    return model, {
        "method": method.name, "hparams": method.hparams, "config": asdict(cfg), "steps": len(steps),
        "resumed_from_step": done, "seconds": round(seconds, 2),
        "seconds_per_epoch": round(seconds / epochs_run, 3) if epochs_run else None,
        "final_loss": history[-1]["loss"] if history else None,
        "trainable_parameters": sum(p.numel() for p in params),
    }
