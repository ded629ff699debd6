"""Teaching a causal LM a benchmark's facts until it answers them: the built-in model from scratch
(`builtin`), and a pretrained model before it unlearns part of what it was taught (`finetune`,
TOFU's and MUSE's fine-tune-then-unlearn protocol). One loop serves both, so a fact is "known" by
the same test whichever model learnt it (docs/design.md, Built-in benchmark and model).

Every item is taught under several question variants (`training_questions`): a model taught only
the plain question answers a fraction of its facts once a prompt is rewritten, and keyword-emphasis
"recovery" could not then be told from breakage.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from ..data import Item
from ..data.rewrites import EMPHASIS_STYLES, STOPWORDS, words
from ..errors import UnpactError
from ..io import write_json
from ..optim import adamw
from ..scoring import Scorer, answer_token_logprobs, pack

# New tokens a greedy answer may take beyond the longest gold answer (the study's default margin).
ANSWER_MARGIN = 8


class TeachSettings(Protocol):
    """What `teach` reads of a model config (`BuiltinModelConfig`, `FinetuneConfig`)."""

    lr: float
    batch_size: int
    max_epochs: int
    target_accuracy: float
    eval_every: int
    seed: int


def training_questions(item: Item, rng: random.Random) -> list[str]:
    """The question variants one epoch teaches ``item`` under: the question, its paraphrase, and for
    items that are not forgotten later a random keyword-emphasis rewrite (random question words as
    keywords). Forget items get no rewrite, so that FocusOnKey's emphasis finds no trained shortcut."""
    variants = [item.question] + ([item.paraphrased_question] if item.paraphrased_question else [])
    if item.split != "forget":
        content = [w for w in words(item.question) if w.lower() not in STOPWORDS] or words(item.question)
        keywords = rng.sample(content, k=min(len(content), rng.randint(1, 3)))
        style = rng.choice(sorted(EMPHASIS_STYLES))
        variants.append(EMPHASIS_STYLES[style](rng.choice(variants), keywords))
    return variants


def exact_correct(scorer: Scorer, items: list[Item], max_new_tokens: int | None = None) -> tuple[list[bool], int]:
    """Per item: is the greedy answer exactly the gold answer (case-insensitive)? Also how many
    wrong answers ran to ``max_new_tokens`` (cut by the generation length, not finished)."""
    budget = max_new_tokens or scorer.max_new_tokens
    answers = scorer.generate([it.question for it in items], budget)
    ok = [a.strip().lower() == it.answer.strip().lower() for a, it in zip(answers, items, strict=True)]
    cut = sum(not good and len(scorer.fmt.encode_answer(a)) >= budget for a, good in zip(answers, ok, strict=True))
    return ok, cut


def teach(model, tokenizer, fmt, items: list[Item], cfg: TeachSettings,
          progress: Callable[[int, int, dict], None] | None = None, margin: int = ANSWER_MARGIN,
          label: str = "built-in model", advice: str = "raise max_epochs or lr in the model config",
          eval_batch_size: int = 256) -> dict:
    """Train ``model`` in place on ``items`` (answer tokens only, under `training_questions`) until its
    greedy accuracy (exact answers, `exact_correct`) reaches ``cfg.target_accuracy``.

    AdamW with a warm-up and a cosine schedule over ``cfg.max_epochs``; items the last check got wrong
    are seen twice more in the next epoch (the last percent converges much sooner). Each answer may
    take the longest answer plus ``margin`` tokens. ``progress(epoch, max_epochs, logs)`` after every
    epoch. Returns {"epochs", "accuracy"}; raises UnpactError, saying whether answers were cut short
    (then more training cannot help) or ``advice``, when the target is not reached.
    """
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    budget = max(len(fmt.encode_answer(it.answer, eos=True)) for it in items) + margin
    scorer = Scorer(model, tokenizer, fmt, batch_size=eval_batch_size, max_new_tokens=budget)
    opt = adamw([p for p in model.parameters() if p.requires_grad], cfg.lr, betas=(0.9, 0.98))
    steps_per_epoch = math.ceil(sum(len(training_questions(it, random.Random(0))) for it in items) / cfg.batch_size)
    total = cfg.max_epochs * steps_per_epoch
    warmup = max(1, min(100, total // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.1, 0.5 * (1 + math.cos(math.pi * min(s, total) / total))))
    answers = {it.id: fmt.encode_answer(it.answer, eos=True) for it in items}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    accuracy, epoch, missed, cut = 0.0, 0, [], 0
    model.train()
    for epoch in range(1, cfg.max_epochs + 1):
        pairs = [(fmt.encode(q).ids, answers[it.id]) for it in items for q in training_questions(it, rng)]
        pairs += [(fmt.encode(it.question).ids, answers[it.id]) for it in missed for _ in range(2)]
        rng.shuffle(pairs)
        losses = []
        for i in range(0, len(pairs), cfg.batch_size):
            chunk = pairs[i:i + cfg.batch_size]
            batch = pack([p for p, _ in chunk], [a for _, a in chunk], pad)
            lp = answer_token_logprobs(model, batch)
            loss = -lp.sum() / batch.answer_mask.sum()
            if not torch.isfinite(loss):
                raise UnpactError(f"{label}: the training loss became {loss.item()} in epoch {epoch}; lower lr "
                                  f"(now {cfg.lr:g}) in the model config")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        logs = {"loss": sum(losses) / len(losses)}
        if epoch % cfg.eval_every == 0 or epoch == cfg.max_epochs:
            model.eval()
            ok, cut = exact_correct(scorer, items)
            model.train()
            missed = [it for it, good in zip(items, ok, strict=True) if not good]
            accuracy = logs["accuracy"] = 1 - len(missed) / len(items)
        if progress:
            progress(epoch, cfg.max_epochs, logs)
        if accuracy >= cfg.target_accuracy:
            break
    model.eval()
    if accuracy < cfg.target_accuracy:
        why = (f"{cut} of {len(missed)} wrong answers ran to the generation length of {budget} tokens (longest "
               "answer + generation.margin); raise generation.margin, or max_epochs if they ramble on"
               if cut else f"no answer was cut by the generation length of {budget} tokens: the model has not learnt "
               f"every fact; {advice}")
        raise UnpactError(f"{label} reached only {accuracy:.1%} greedy accuracy in {cfg.max_epochs} epochs "
                          f"(target {cfg.target_accuracy:.0%}); {why}")
    return {"epochs": epoch, "accuracy": accuracy}


def prepared_info(folder: str | Path, name: str) -> dict | None:
    """The info file ``name`` a teaching run wrote into a model folder, or None if absent/unreadable."""
    try:
        return json.loads((Path(folder) / name).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def prepare(out: str | Path, key: str, info_name: str, train: Callable[[Path], dict]) -> tuple[dict, bool]:
    """Reuse the model at ``out`` when its info file ``info_name`` carries ``key`` and its weights are
    there; else ``train(folder)`` into a temporary sibling that replaces ``out`` only when complete,
    so an interrupted run never leaves a half-taught model behind. ``train`` saves the model and
    returns its info, which is written with ``key``. Returns (info, reused)."""
    out = Path(out)
    info = prepared_info(out, info_name)
    if info and info.get("key") == key and any(out.glob("*.safetensors")):
        return info, True
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        info = {"key": key, **train(tmp), "train_seconds": round(time.perf_counter() - t0, 1)}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed or interrupted run leaves nothing behind
        raise
    write_json(tmp / info_name, info)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return info, False
