"""Fine-tune, then unlearn (TOFU's and MUSE's protocol) for a pretrained model: before the study, the
model is taught a fictitious benchmark's facts, and a gold model is taught the same way from the same
weights on everything but the forget set. Both then know, or never knew, exactly the facts the study
asks about, so every attack is read against a model that never knew the forgotten facts.

The teaching is `teach.teach`, the loop the built-in model is trained with (question variants, the
same stopping rule on greedy accuracy); here it starts from the pretrained weights, in the prompt
format the study asks in (a chat model's template).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import distributed
from ..data import Item
from .teach import ANSWER_MARGIN, prepare, teach
from .teach import prepared_info as teach_info

INFO = "unpact_finetune.json"  # beside a taught model's weights: its key, source, accuracy, epochs


@dataclass(frozen=True)
class FinetuneConfig:
    """How a pretrained model is taught the benchmark's facts before the study (every field is part of
    the taught model's key). ``splits``: what is taught — forget and retain for a fictitious benchmark
    whose utility split is real-world knowledge the model brings (TOFU's real authors and world facts);
    add utility where it is fictitious too. The gold model is taught the same splits but forget."""

    lr: float = 1e-4
    batch_size: int = 16
    max_epochs: int = 10  # upper bound and cosine-schedule length; teaching stops at target_accuracy
    target_accuracy: float = 0.9  # share of taught items answered exactly (greedy), checked every eval_every epochs
    eval_every: int = 1
    seed: int = 0
    splits: list[str] = field(default_factory=lambda: ["forget", "retain"])

    def key(self, source_files: list, items: list[Item]) -> str:
        """A hash of the settings, the pretrained model's files and the taught items."""
        h = hashlib.sha256(json.dumps([asdict(self), source_files], sort_keys=True).encode())
        for it in items:
            h.update(json.dumps(it.to_dict(), sort_keys=True).encode())
        return h.hexdigest()[:16]


def source_files(source: str | Path) -> list:
    """(name, size) of the pretrained model's weight and config files: what its taught copies depend on."""
    return sorted([p.name, p.stat().st_size] for p in Path(source).glob("*")
                  if p.is_file() and p.suffix in (".safetensors", ".json"))


def prepare_finetuned(source: str | Path, items: list[Item], out: str | Path, cfg: FinetuneConfig,
                      progress: Callable[[int, int, dict], None] | None = None, margin: int = ANSWER_MARGIN,
                      trust_remote_code: bool = False, label: str = "fine-tuned model") -> tuple[dict, bool]:
    """The pretrained model at ``source`` taught ``items`` (`teach.teach`), saved at ``out`` as a
    safetensors folder with its tokenizer and ``unpact_finetune.json``; reused when the settings,
    source files and items are unchanged, written whole or not at all. Returns (info, reused)."""
    if distributed.world() > 1:  # taught once, by the main process; the others read what it wrote
        return distributed.main_only(lambda: prepare_finetuned(source, items, out, cfg, progress, margin,
                                                               trust_remote_code, label))
    from .loading import load_model
    from .prompt import prompt_format

    def train(folder: Path) -> dict:
        model, tokenizer = load_model(source, trust_remote_code=trust_remote_code, device=distributed.device())
        taught = teach(model, tokenizer, prompt_format(tokenizer), items, cfg, progress, margin, label=label,
                       advice="raise finetune.max_epochs or finetune.lr in the model's config", eval_batch_size=64)
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        return {"source": str(source), "config": asdict(cfg), **taught,
                "parameters": sum(p.numel() for p in model.parameters()), "n_items": len(items)}

    return prepare(out, cfg.key(source_files(source), items), INFO, train)


def prepared_info(folder: str | Path) -> dict | None:
    """The ``unpact_finetune.json`` of a taught model folder, or None if absent/unreadable."""
    return teach_info(folder, INFO)
