"""The built-in model: a locally trained byte-level BPE tokenizer and a ~1M-parameter Llama-style LM
that memorises the built-in benchmark, taught by the loop every taught model shares (`teach`: each
item under its question variants until greedy accuracy reaches the target).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .. import distributed
from ..data import Item
from ..data.rewrites import EMPHASIS_STYLES
from .prompt import PlainFormat
from .teach import ANSWER_MARGIN, exact_correct, prepare, teach, training_questions
from .teach import prepared_info as teach_info

__all__ = ["ANSWER_MARGIN", "BuiltinModelConfig", "build_model", "builtin_tokenizer", "context_for", "exact_correct",
           "prepare_builtin", "prepared_info", "sized", "train_builtin", "train_tokenizer", "training_questions"]

SPECIAL = {"pad": "<pad>", "bos": "<s>", "eos": "</s>"}
INFO = "unpact_builtin.json"  # beside a prepared model's weights: its settings key, accuracy, epochs, size


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
    """Train the tokenizer and model on ``items`` until greedy accuracy ≥ ``cfg.target_accuracy``
    (`teach.teach`).

    ``tokenizer_items``: train the tokenizer on these instead (the gold model shares the original
    model's tokenizer, as a model retrained from the same base would, so both score the same tokens).
    Accuracy is judged on whole answers: each may take its split's longest answer plus ``margin``
    tokens (`sized` sets the context where ``cfg`` leaves it open).

    Saves a standard Hugging Face folder (config.json, model.safetensors, tokenizer files) at ``out``
    and returns the info `prepare_builtin` writes beside it (settings, accuracy, epochs, size).
    ``progress(epoch, max_epochs, logs)`` is called after every epoch.
    """
    cfg = cfg or BuiltinModelConfig()
    tokenizer = builtin_tokenizer(tokenizer_items or items, cfg)
    cfg = sized(cfg, tokenizer, items, margin)
    model = build_model(cfg, tokenizer)
    taught = teach(model, tokenizer, PlainFormat(tokenizer), items, cfg, progress, margin)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"config": asdict(cfg), **taught, "parameters": sum(p.numel() for p in model.parameters()),
            "n_items": len(items)}


def prepare_builtin(items: list[Item], out: str | Path, cfg: BuiltinModelConfig | None = None,
                    progress: Callable[[int, int, dict], None] | None = None,
                    tokenizer_items: list[Item] | None = None, margin: int = ANSWER_MARGIN) -> tuple[dict, bool]:
    """Reuse the model at ``out`` if it was prepared with the same settings and data, else train it
    (``tokenizer_items``: see `train_builtin`); written whole or not at all (`teach.prepare`), with
    ``unpact_builtin.json`` (the settings key, measured accuracy, epochs, seconds) beside the weights.
    Returns (info, reused).
    """
    if distributed.world() > 1:
        # every process would train the same model into the same folder: the main one does, alone,
        # and the others wait, then read what it wrote
        return distributed.main_only(lambda: prepare_builtin(items, out, cfg, progress, tokenizer_items, margin))
    cfg = sized(cfg or BuiltinModelConfig(), builtin_tokenizer(tokenizer_items or items, cfg or BuiltinModelConfig()),
                items, margin)
    return prepare(out, cfg.key(items, tokenizer_items), INFO,
                   lambda folder: train_builtin(items, folder, cfg, progress, tokenizer_items, margin))


def prepared_info(folder: str | Path) -> dict | None:
    """The ``unpact_builtin.json`` of a prepared built-in model folder, or None if absent/unreadable."""
    return teach_info(folder, INFO)
