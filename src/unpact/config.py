"""Study configuration: dataclasses loaded from YAML and validated at load time.

Errors name the key path (``methods[1].lr``), the bad value and what is expected.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .attribution import DEFAULT_ALPHA, DEFAULT_BETA
from .data.rewrites import EMPHASIS_STYLES
from .errors import UnpactError
from .evaluation import DEFAULT_DESTRUCTIVE_THRESHOLD, DEFAULT_RECOVERY_THRESHOLD, DEFAULT_ROUGE_THRESHOLD
from .models.builtin import BuiltinModelConfig
from .unlearn import METHODS, UnlearnConfig


@dataclass
class DataConfig:
    """The built-in benchmark: seed, number of entities, share of entities to forget."""

    seed: int = 0
    n_entities: int = 100
    forget_fraction: float = 0.1


@dataclass
class AttributionConfig:
    """KeyToken selection (DESIGN.md): α = share threshold, β = minimum positive-token count."""

    alpha: float = DEFAULT_ALPHA
    beta: int = DEFAULT_BETA


BASELINE_ATTACKS = ("sampling", "paraphrase", "few_shot", "quantize", "relearn")


@dataclass
class RecoveryConfig:
    """FocusOnKey emphasis styles (each with oracle/self/heuristic keywords and two placebos), and the
    baseline attacks: sampling, paraphrase, few-shot, weight quantisation and light relearning."""

    styles: list[str] = field(default_factory=lambda: ["instruction"])
    attacks: list[str] = field(default_factory=lambda: list(BASELINE_ATTACKS))
    sampling_n: int = 8
    sampling_temperature: float = 1.0
    few_shot_k: int = 3
    quantize_bits: list[int] = field(default_factory=lambda: [8, 4])
    relearn_steps: int = 10
    relearn_lr: float = 1e-3


@dataclass
class EvaluationConfig:
    """Correctness threshold (ROUGE-L recall) and the dilemma-quadrant thresholds."""

    rouge_threshold: float = DEFAULT_ROUGE_THRESHOLD
    recovery_threshold: float = DEFAULT_RECOVERY_THRESHOLD
    destructive_threshold: float = DEFAULT_DESTRUCTIVE_THRESHOLD


def _default_methods() -> list[UnlearnConfig]:
    """The unPact paper's six methods and KeyNPO, tuned on the built-in model (see configs/demo.yaml)."""
    def m(method: str, lr: float, epochs: int, **hparams: float) -> UnlearnConfig:
        return UnlearnConfig(method=method, lr=lr, epochs=epochs, hparams=hparams)

    return [m("GA_GDR", 2e-4, 15, alpha=3.0), m("GA_KLR", 2e-4, 15, alpha=3.0),
            m("NPO_GDR", 5e-4, 12, alpha=5.0), m("NPO_KLR", 5e-4, 12, alpha=5.0),
            m("TaskVector", 1e-3, 5, scale=0.75), m("RMU", 1e-2, 20, alpha=20.0, steer=3.0),
            m("KeyNPO", 5e-4, 15, alpha=10.0, beta=0.3)]


@dataclass
class StudyConfig:
    """The whole unPact study on the built-in benchmark and model."""

    seed: int = 0
    batch_size: int = 64
    data: DataConfig = field(default_factory=DataConfig)
    model: BuiltinModelConfig = field(default_factory=BuiltinModelConfig)
    methods: list[UnlearnConfig] = field(default_factory=_default_methods)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- generic dataclass loading -------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise UnpactError(f"config {path}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        return [_convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UnpactError(f"config {path}: expected a mapping, got {value!r}")
        _, inner = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(v, inner, f"{path}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(value, args[0], path)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    if tp is Any:
        return value
    raise UnpactError(f"config {path}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise UnpactError(f"config {path or '<root>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise UnpactError(f"config {path + '.' if path else ''}{key}: unknown key; "
                              f"known keys here: {', '.join(sorted(names))}")
    kwargs = {k: _convert(v, hints[k], f"{path + '.' if path else ''}{k}") for k, v in data.items()}
    return cls(**kwargs)


def validate(cfg: StudyConfig) -> StudyConfig:
    """Check values that are well-typed but impossible."""
    def check(ok: bool, path: str, value: Any, need: str) -> None:
        if not ok:
            raise UnpactError(f"config {path}: {value!r} is invalid; {need}")

    check(cfg.data.n_entities >= 10, "data.n_entities", cfg.data.n_entities, "use at least 10")
    check(0 < cfg.data.forget_fraction < 1, "data.forget_fraction", cfg.data.forget_fraction, "use a value in (0, 1)")
    check(0 <= cfg.attribution.alpha < 1, "attribution.alpha", cfg.attribution.alpha, "use a value in [0, 1)")
    check(cfg.attribution.beta >= 0, "attribution.beta", cfg.attribution.beta, "use an integer ≥ 0")
    check(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "use an integer ≥ 1")
    for name in ("rouge_threshold", "recovery_threshold", "destructive_threshold"):
        v = getattr(cfg.evaluation, name)
        check(0 <= v <= 1, f"evaluation.{name}", v, "use a value in [0, 1]")
    r = cfg.recovery
    for i, name in enumerate(r.attacks):
        check(name in BASELINE_ATTACKS, f"recovery.attacks[{i}]", name, f"choose from {', '.join(BASELINE_ATTACKS)}")
    check(r.sampling_n >= 1, "recovery.sampling_n", r.sampling_n, "use at least 1 sample")
    check(r.sampling_temperature > 0, "recovery.sampling_temperature", r.sampling_temperature, "use a value > 0")
    check(r.few_shot_k >= 1, "recovery.few_shot_k", r.few_shot_k, "use at least 1 demonstration")
    for i, bits in enumerate(r.quantize_bits):
        check(bits in (4, 8), f"recovery.quantize_bits[{i}]", bits, "use 8 or 4")
    check(r.relearn_steps >= 1, "recovery.relearn_steps", r.relearn_steps, "use at least 1 step")
    check(r.relearn_lr > 0, "recovery.relearn_lr", r.relearn_lr, "use a positive learning rate")
    for i, style in enumerate(cfg.recovery.styles):
        check(style in EMPHASIS_STYLES, f"recovery.styles[{i}]", style, f"choose from {', '.join(EMPHASIS_STYLES)}")
    check(cfg.model.lr > 0, "model.lr", cfg.model.lr, "use a positive learning rate")
    check(0 < cfg.model.target_accuracy <= 1, "model.target_accuracy", cfg.model.target_accuracy, "use a value in (0, 1]")
    check(bool(cfg.methods), "methods", cfg.methods, "list at least one method")
    seen = set()
    for i, m in enumerate(cfg.methods):
        check(m.method in METHODS, f"methods[{i}].method", m.method, f"choose from {', '.join(METHODS)}")
        check(m.method not in seen, f"methods[{i}].method", m.method, "each method once")
        seen.add(m.method)
        check(m.lr > 0, f"methods[{i}].lr", m.lr, "use a positive learning rate")
        check(m.epochs >= 1, f"methods[{i}].epochs", m.epochs, "use at least 1 epoch")
        check(m.batch_size >= 1 and m.retain_batch_size >= 1, f"methods[{i}].batch_size", m.batch_size, "use ≥ 1")
        check(m.lora_rank >= 0, f"methods[{i}].lora_rank", m.lora_rank, "use 0 (no LoRA) or a positive rank")
        check(m.checkpoint_every >= 0, f"methods[{i}].checkpoint_every", m.checkpoint_every, "use ≥ 0")
        unknown = set(m.hparams) - set(METHODS[m.method].defaults)
        check(not unknown, f"methods[{i}].hparams", sorted(unknown),
              f"{m.method} takes {', '.join(METHODS[m.method].defaults)}")
    return cfg


def load_config(path: str | Path | None) -> StudyConfig:
    """Load a study YAML (None → all defaults), validated."""
    if path is None:
        return validate(StudyConfig())
    path = Path(path)
    if not path.is_file():
        raise UnpactError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UnpactError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    try:
        return validate(from_dict(StudyConfig, data))
    except UnpactError as e:
        raise UnpactError(f"{path}: {e}") from None
