"""What each stage of a study depends on, as the keys its cached results are stored with
(`cache.cached_stage`): a stage is reused exactly when its key is unchanged."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..config import StudyConfig
from ..data import SPLITS, Item
from ..data.benchmarks import Benchmark
from ..models.client import is_served
from ..models.finetune import source_files
from ..models.hub import is_hub
from ..models.registry import resolve_model
from .cache import digest

HELD_OUT = "never-known control held out of retain training"


def where(ref: str | Path) -> str:
    """A model's identity in cache keys: its resolved folder (a hub model's snapshot folder, which is
    named by its commit), or its URL."""
    if is_served(ref):
        return str(ref)
    return str((resolve_model(ref) if is_hub(ref) else Path(ref)).resolve())


class StudyKeys:
    """The key of every stage of a `Study`, from its config, items and model files."""

    cfg: StudyConfig
    out: Path
    model_dir: str | Path
    gold_dir: Path | None
    source: Path | None
    splits: dict[str, list[Item]]
    bench: Benchmark | None

    def teaches(self) -> bool:
        """Whether the original (and gold) model is a pretrained ``source`` taught the benchmark first."""
        return self.cfg.finetune is not None and self.source is not None

    def _model_files(self, folder: str | Path | None = None) -> list:
        """(name, size, modification time) of a model's files: a retrained model changes them
        (nothing for a served model: what is behind a URL cannot be seen, only its address)."""
        folder = folder or self.model_dir
        if is_served(folder):
            return []
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in resolve_model(folder).glob("*")
                      if p.is_file() and p.suffix in (".safetensors", ".json"))

    def _items_key(self) -> list:
        return [[it.to_dict() for it in self.splits[s]] for s in SPLITS]

    def _precision(self) -> list[str]:
        """The dtype as a part of the stage keys; empty when unset (keys from before the setting)."""
        return [self.cfg.dtype] if self.cfg.dtype else []

    def _extras(self) -> list:
        """The benchmark's evaluation material besides the splits (MUSE's ICL examples and VerbMem)."""
        b = self.bench
        return [] if b is None or not (b.icl or b.verbmem) else [[it.to_dict() for it in b.icl], b.verbmem]

    def base_key(self) -> str:
        """What the original model's answers and attributions depend on: settings, items, model files."""
        return digest([self.cfg.attribution, self.cfg.evaluation, self.cfg.generation, *self._precision(),
                       where(self.model_dir), self._model_files(), self._items_key(), self._extras()])

    def gold_key(self) -> str | None:
        """What the gold model's results depend on (None: no gold model). A built-in gold model's
        training settings and items determine it, so this is known before it is trained."""
        if self.gold_dir is None:
            return None
        trained = self._gold_training_key() if self._trains_gold() else None
        # the gold model is attacked as the methods are (its hit rates are their control): the
        # attacks' settings and the original model's keywords (base) are part of its result too
        return digest(["gold", str(self.gold_dir.resolve()), trained, None if trained else self._model_files(self.gold_dir),
                       self.cfg.evaluation, self.cfg.generation, *self._precision(), self._items_key(), self.cfg.recovery,
                       self.cfg.seed, self.base_key()])

    def method_key(self, index: int, base_key: str) -> str:
        """What one method's result depends on: the base, its settings, the attacks and the seed."""
        r = self.cfg.raw_text
        raw = None if r is None or self.bench is None else digest([r, self.bench.raw.get(r.forget),
                                                                     self.bench.raw.get(r.retain)])
        # which retain items a method trains on follows from the base and the seed (`training_sets`);
        # the tag names the rule, so results trained before the never-known control was held out of
        # retain are not reused (with a gold model nothing is held out, and its results stand)
        held = HELD_OUT if self.gold_dir is None else None
        return digest([base_key, asdict(self.cfg.methods[index]), self.cfg.recovery, self.cfg.evaluation,
                       self.cfg.generation, self.cfg.seed, self.gold_key(), raw, held])

    def _gold_training_key(self) -> str:
        """The key of the gold model's training: the built-in model's, or the taught one's (`finetune`)."""
        if self.teaches():
            return self.cfg.finetune.key(source_files(self.source), self._gold_items())
        return self.cfg.model.key(self._gold_items(), self._all_items())

    def _taught_items(self) -> list[Item]:
        """What the original model is taught with ``finetune``: the items of its splits."""
        return [it for s in self.cfg.finetune.splits for it in self.splits[s]]

    def _gold_items(self) -> list[Item]:
        """What a gold model is trained on: every split but forget (with ``finetune``, every taught one)."""
        splits = self.cfg.finetune.splits if self.teaches() else SPLITS
        return [it for s in splits if s != "forget" for it in self.splits[s]]

    def _all_items(self) -> list[Item]:
        return [it for s in SPLITS for it in self.splits[s]]

    def _trains_gold(self) -> bool:
        return self.gold_dir == self.out / "gold"
