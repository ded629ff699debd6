"""The built-in model: a locally trained byte-level BPE tokenizer and a ~1M-parameter Llama-style LM
that memorises the built-in benchmark.

Retain and utility items are trained under the plain question, its paraphrase and a random emphasis
rewrite (with random question words as keywords); forget items only under the plain question and the
paraphrase. Without the rewrites a tiny model answers only a fraction of *known* items once a prompt
is rewritten, and keyword-emphasis "recovery" could not be told from breakage (docs/design.md,
Built-in benchmark and model).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .. import distributed
from ..data import Item
from ..data.rewrites import EMPHASIS_STYLES, STOPWORDS, words
from ..errors import UnpactError
from ..io import write_json
from ..optim import adamw
from ..scoring import Scorer, answer_token_logprobs, pack
from .prompt import PlainFormat

SPECIAL = {"pad": "<pad>", "bos": "<s>", "eos": "</s>"}


@dataclass(frozen=True)
class BuiltinModelConfig:
    """Architecture and training settings of the built-in model (part of the prepared-model key)."""

    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    # The context in tokens. None: sized from the data, to hold every sequence the study builds
    # (`unpact.study.lengths`), or the training sequences and answers when trained on its own.
    max_positions: int | None = None
    lr: float = 2e-3
    batch_size: int = 32
    max_epochs: int = 24  # also the cosine schedule's length; training stops at target_accuracy
    target_accuracy: float = 0.99
    eval_every: int = 1
    seed: int = 0

    def key(self, items: list[Item], tokenizer_items: list[Item] | None = None) -> str:
        """A hash of the settings and the training data: a prepared model is reused only if it matches."""
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        for it in items:
            h.update(json.dumps(it.to_dict(), sort_keys=True).encode())
        for it in tokenizer_items or []:
            h.update(b"tokenizer:" + json.dumps(it.to_dict(), sort_keys=True).encode())
        return h.hexdigest()[:16]


# The built-in model's context when the data needs no more; the demo's model has always had it.
MIN_CONTEXT = 128
# New tokens a greedy answer may take beyond the longest gold answer (the study's default margin).
ANSWER_MARGIN = 8


def context_for(tokens: int) -> int:
    """The built-in model's context for sequences of up to ``tokens``: the next power of two, at
    least `MIN_CONTEXT`. The rotary position encoding has no learned positions, so the context only
    bounds what is accepted; a coarse size keeps a small change of data from changing the prepared
    model's settings (and so its key)."""
    size = MIN_CONTEXT
    while size < tokens:
        size *= 2
    return size


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(SPECIAL["bos"])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL['bos']} $A", pair=f"{SPECIAL['bos']} $A $B", special_tokens=[(SPECIAL["bos"], bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL["bos"], eos_token=SPECIAL["eos"],
                                   pad_token=SPECIAL["pad"], clean_up_tokenization_spaces=False)


def build_model(cfg: BuiltinModelConfig, tokenizer):
    """A freshly initialised Llama-style causal LM sized by ``cfg`` (seeded; a context left open is
    `MIN_CONTEXT`: `sized` opens it wider where the data needs it)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions or MIN_CONTEXT, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        # No padding_idx: its embedding row would stay exactly zero, and the pad embedding is the
        # integrated-gradients baseline (a zero baseline is wrong for RMSNorm models).
        pad_token_id=None,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def training_questions(item: Item, rng: random.Random) -> list[str]:
    """The question variants one epoch trains ``item`` under (see the module docstring)."""
    variants = [item.question] + ([item.paraphrased_question] if item.paraphrased_question else [])
    if item.split != "forget":
        content = [w for w in words(item.question) if w.lower() not in STOPWORDS] or words(item.question)
        keywords = rng.sample(content, k=min(len(content), rng.randint(1, 3)))
        style = rng.choice(sorted(EMPHASIS_STYLES))
        variants.append(EMPHASIS_STYLES[style](rng.choice(variants), keywords))
    return variants


def _corpus(items: list[Item]) -> list[str]:
    rng = random.Random(0)
    texts = []
    for it in items:
        for q in training_questions(it, rng) + [it.paraphrased_question or ""]:
            texts.append(f"Question: {q}\nAnswer: {it.answer}")
        texts.extend(it.perturbed_answers)
    for style in EMPHASIS_STYLES:  # so every rewrite's wrapper words are whole tokens
        texts.append(EMPHASIS_STYLES[style]("Question: a b?", ["a", "b"]))
    return texts


def builtin_tokenizer(items: list[Item], cfg: BuiltinModelConfig):
    """The tokenizer `train_builtin` trains for ``items`` (deterministic, well under a second), so
    that lengths can be measured before the model is trained."""
    return train_tokenizer(_corpus(items), cfg.vocab_size)


def exact_correct(scorer: Scorer, items: list[Item], max_new_tokens: int | None = None) -> tuple[list[bool], int]:
    """Per item: is the greedy answer exactly the gold answer (case-insensitive)? Also how many
    wrong answers ran to ``max_new_tokens`` (cut by the generation length, not finished)."""
    budget = max_new_tokens or scorer.max_new_tokens
    answers = scorer.generate([it.question for it in items], budget)
    ok = [a.strip().lower() == it.answer.strip().lower() for a, it in zip(answers, items, strict=True)]
    cut = sum(not good and len(scorer.fmt.encode_answer(a)) >= budget for a, good in zip(answers, ok, strict=True))
    return ok, cut


def sized(cfg: BuiltinModelConfig, tokenizer, items: list[Item], margin: int = ANSWER_MARGIN) -> BuiltinModelConfig:
    """``cfg`` with its context set where it is None: to hold every training sequence, and every
    question with its answer budget (the longest answer plus ``margin``)."""
    if cfg.max_positions is not None:
        return cfg
    fmt = PlainFormat(tokenizer)
    rng = random.Random(0)
    budget = max(len(fmt.encode_answer(it.answer, eos=True)) for it in items) + margin
    longest = max(len(fmt.encode(q).ids) for it in items for q in training_questions(it, rng))
    return replace(cfg, max_positions=context_for(longest + budget))


def train_builtin(items: list[Item], out: str | Path, cfg: BuiltinModelConfig | None = None,
                  progress: Callable[[int, int, dict], None] | None = None,
                  tokenizer_items: list[Item] | None = None, margin: int = ANSWER_MARGIN) -> dict:
    """Train the tokenizer and model on ``items`` until greedy accuracy ≥ ``cfg.target_accuracy``.

    ``tokenizer_items``: train the tokenizer on these instead (the gold model shares the original
    model's tokenizer, as a model retrained from the same base would, so both score the same tokens).
    Accuracy is judged on whole answers: each may take its split's longest answer plus ``margin``
    tokens (`sized` sets the context where ``cfg`` leaves it open).

    Saves a standard Hugging Face folder (config.json, model.safetensors, tokenizer files,
    ``unpact_builtin.json`` with the settings key and measured accuracy) at ``out``; returns that info.
    ``progress(epoch, max_epochs, logs)`` is called after every epoch.
    """
    cfg = cfg or BuiltinModelConfig()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    t0 = time.perf_counter()
    tokenizer = builtin_tokenizer(tokenizer_items or items, cfg)
    cfg = sized(cfg, tokenizer, items, margin)
    model = build_model(cfg, tokenizer)
    fmt = PlainFormat(tokenizer)
    budget = max(len(fmt.encode_answer(it.answer, eos=True)) for it in items) + margin
    scorer = Scorer(model, tokenizer, fmt, batch_size=256, max_new_tokens=budget)
    opt = adamw(model.parameters(), cfg.lr, betas=(0.9, 0.98))
    steps_per_epoch = math.ceil(sum(len(training_questions(it, random.Random(0))) for it in items) / cfg.batch_size)
    total = cfg.max_epochs * steps_per_epoch
    warmup = min(100, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.1, 0.5 * (1 + math.cos(math.pi * min(s, total) / total))))
    answers = {it.id: fmt.encode_answer(it.answer, eos=True) for it in items}
    accuracy, epoch, missed, cut = 0.0, 0, [], 0
    model.train()
    for epoch in range(1, cfg.max_epochs + 1):
        pairs = [(fmt.encode(q).ids, answers[it.id]) for it in items for q in training_questions(it, rng)]
        # Items the last check got wrong are seen twice more: the last percent converges much sooner.
        pairs += [(fmt.encode(it.question).ids, answers[it.id]) for it in missed for _ in range(2)]
        rng.shuffle(pairs)
        losses = []
        for i in range(0, len(pairs), cfg.batch_size):
            chunk = pairs[i:i + cfg.batch_size]
            batch = pack([p for p, _ in chunk], [a for _, a in chunk], tokenizer.pad_token_id)
            lp = answer_token_logprobs(model, batch)
            loss = -lp.sum() / batch.answer_mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        logs = {"loss": sum(losses) / len(losses)}
        if epoch % cfg.eval_every == 0 or epoch == cfg.max_epochs:
            ok, cut = exact_correct(scorer, items)
            missed = [it for it, good in zip(items, ok, strict=True) if not good]
            accuracy = logs["accuracy"] = 1 - len(missed) / len(items)
        if progress:
            progress(epoch, cfg.max_epochs, logs)
        if accuracy >= cfg.target_accuracy:
            break
    if accuracy < cfg.target_accuracy:
        # say whether the answers were cut short: then more training cannot help
        why = (f"{cut} of {len(missed)} wrong answers ran to the generation length of {budget} tokens (longest "
               "answer + generation.margin); raise generation.margin, or max_epochs if they ramble on"
               if cut else f"no answer was cut by the generation length of {budget} tokens: the model has not learnt "
               "every fact; raise max_epochs or lr in the model config")
        raise UnpactError(f"built-in model reached only {accuracy:.1%} greedy accuracy in {cfg.max_epochs} epochs "
                          f"(target {cfg.target_accuracy:.0%}); {why}")
    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    info = {"key": cfg.key(items, tokenizer_items), "config": asdict(cfg), "epochs": epoch, "accuracy": accuracy,
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(time.perf_counter() - t0, 1), "n_items": len(items)}
    write_json(out / "unpact_builtin.json", info)
    return info


def prepared_info(folder: str | Path) -> dict | None:
    """The ``unpact_builtin.json`` of a prepared model folder, or None if absent/unreadable."""
    try:
        return json.loads((Path(folder) / "unpact_builtin.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def prepare_builtin(items: list[Item], out: str | Path, cfg: BuiltinModelConfig | None = None,
                    progress: Callable[[int, int, dict], None] | None = None,
                    tokenizer_items: list[Item] | None = None, margin: int = ANSWER_MARGIN) -> tuple[dict, bool]:
    """Reuse the model at ``out`` if it was prepared with the same settings and data, else train it
    (``tokenizer_items``: see `train_builtin`).

    Training writes to a temporary sibling folder that replaces ``out`` only when complete, so an
    interrupted run never leaves a half-written model behind. Returns (info, reused).
    """
    if distributed.world() > 1:
        # every process would train the same model into the same folder: the main one does, alone,
        # and the others wait, then read what it wrote
        return distributed.main_only(lambda: prepare_builtin(items, out, cfg, progress, tokenizer_items, margin))
    cfg = cfg or BuiltinModelConfig()
    cfg = sized(cfg, builtin_tokenizer(tokenizer_items or items, cfg), items, margin)
    out = Path(out)
    info = prepared_info(out)
    if info and info.get("key") == cfg.key(items, tokenizer_items) and (out / "model.safetensors").is_file():
        return info, True
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    info = train_builtin(items, tmp, cfg, progress, tokenizer_items, margin)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return info, False
