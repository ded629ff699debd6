"""Study configuration: dataclasses loaded from YAML and validated at load time.

Errors name the key path (``methods[1].lr``), the bad value and what is expected.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .attribution import DEFAULT_ALPHA, DEFAULT_BETA
from .data import SPLITS
from .data.builtin import ANSWER_KINDS
from .errors import UnpactError, did_you_mean
from .evaluation import DEFAULT_DESTRUCTIVE_THRESHOLD, DEFAULT_RECOVERY_THRESHOLD, DEFAULT_ROUGE_THRESHOLD
from .models import hub
from .models.builtin import BuiltinModelConfig
from .models.finetune import FinetuneConfig
from .recovery import ATTACKS
from .recovery.base import check_settings, settings_fields
from .unlearn import METHODS, UnlearnConfig
from .unlearn.methods.base import EXPONENT_FLOAT, check_hparams


@dataclass
class DataConfig:
    """The built-in benchmark: seed, number of entities, share of entities to forget, and whether its
    answers are single words or TOFU-like sentences (`unpact.data.builtin.generate`)."""

    seed: int = 0
    n_entities: int = 100
    forget_fraction: float = 0.1
    answers: str = "word"


@dataclass
class GenerationConfig:
    """How many tokens a greedy or sampled answer may take, per split (forget, retain, utility).

    A split not named in ``max_new_tokens`` gets its longest gold answer in the model's tokens plus
    ``margin``, so a sentence answer is never judged on its first few words. MUSE's KnowMem and
    VerbMem keep the budgets MUSE defines."""

    margin: int = 8
    max_new_tokens: dict[str, int] = field(default_factory=dict)


@dataclass
class AttributionConfig:
    """KeyToken selection (docs/design.md, KeyTokens): α = share threshold, β = minimum positive-token count.
    ``quality_items``: how many forget items (a seeded sample) the original model's attribution-quality
    check reads (integrated gradients costs tens of passes an item); None reads them all."""

    alpha: float = DEFAULT_ALPHA
    beta: int = DEFAULT_BETA
    quality_items: int | None = None


def _recovery_config() -> type:
    """The ``recovery`` section, derived from the attack registry: ``attacks`` (those to run beside
    FocusOnKey, which always runs) and every attack's settings as ``<attack>_<field>`` (FocusOnKey's
    ``styles`` unprefixed). A new attack module adds its own keys; `validate` runs their checks."""
    fields: list = [("attacks", list[str], field(default_factory=ATTACKS.defaults))]
    for name, attack, f in settings_fields():
        tp = typing.get_type_hints(attack.Settings)[f.name]
        default = field(default_factory=f.default_factory) if f.default_factory is not dataclasses.MISSING \
            else field(default=f.default)
        fields.append((name, tp, default))
    cls = dataclasses.make_dataclass("RecoveryConfig", fields)
    cls.__module__ = __name__
    cls.__doc__ = ("FocusOnKey's emphasis styles and the other recovery attacks with their settings "
                   f"(`unpact.recovery.ATTACKS`: {', '.join(ATTACKS)}).")
    return cls


RecoveryConfig = _recovery_config()


@dataclass
class EvaluationConfig:
    """Correctness threshold (ROUGE-L recall), the dilemma-quadrant thresholds, the gold model."""

    rouge_threshold: float = DEFAULT_ROUGE_THRESHOLD
    recovery_threshold: float = DEFAULT_RECOVERY_THRESHOLD
    destructive_threshold: float = DEFAULT_DESTRUCTIVE_THRESHOLD
    # Train the retrained gold model (built-in models: the same model without the forget set) for
    # TOFU's forget quality and MUSE's PrivLeak; a pretrained model names its own with `gold:`.
    gold_model: bool = True


@dataclass
class RawTextConfig:
    """Unlearning from raw text (MUSE ``raw/``, WMDP corpora) instead of the forget/retain QA pairs:
    the ``forget`` and ``retain`` corpora (files of the benchmark's raw folder, by name without suffix)
    are cut into windows of ``chunk_tokens`` tokens. The first ``context_tokens`` of each window are
    its prompt and the rest its target, and windows overlap by exactly the context, so every token
    after a document's first ``context_tokens`` is a training target once. Evaluation and attacks
    still use the benchmark's questions (MUSE's KnowMem, VerbMem)."""

    forget: str = "forget"
    retain: str = "retain1"
    chunk_tokens: int = 128
    context_tokens: int = 32


def _default_methods() -> list[UnlearnConfig]:
    """The unPact paper's six methods and KeyNPO at the settings `unpact tune configs/demo-tune.yaml`
    chose on the built-in model (configs/demo.yaml says how)."""
    def m(method: str, lr: float, epochs: int, **hparams: float) -> UnlearnConfig:
        return UnlearnConfig(method=method, lr=lr, epochs=epochs, hparams=hparams)

    return [m("GA_GDR", 4e-4, 15, alpha=1.5), m("GA_KLR", 4e-4, 15, alpha=1.5),
            m("NPO_GDR", 1e-3, 12, alpha=2.5), m("NPO_KLR", 5e-4, 12, alpha=2.5),
            m("TaskVector", 5e-4, 5, scale=0.75), m("RMU", 1e-2, 20, alpha=10.0, steer=3.0),
            m("KeyNPO", 5e-4, 15, alpha=5.0, beta=0.3)]


@dataclass
class TuneConfig:
    """`unpact tune`'s protocol (`unpact.study.tune`): the factors applied to every method's configured
    learning rate and main trade-off hyper-parameter (the same budget for all), the share of forget
    entities held out for validation, the destructive-rate bound of the selection criterion, and
    ``holdout``: the validation items, written by `unpact tune` into tuned.yaml and left out of the
    forget set when the study runs (the methods are judged on the test items only)."""

    lr_factors: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    tradeoff_factors: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    validation_share: float = 0.5
    # where the validation items come from: "forget" (a share of the forget entities, then held out of
    # the study) or "retain" (as many retain entities as forget ones; the study keeps every forget item)
    validation_from: str = "forget"
    max_destructive: float = 0.10
    holdout: list[str] = field(default_factory=list)
    protocol: str = ""  # the protocol in words, written by `unpact tune` for the report


@dataclass
class StudyConfig:
    """One (model, benchmark, seed) group of a study: what `Study` runs. Built by `GridConfig.group`."""

    seed: int = 0
    batch_size: int = 64
    generate_batch_size: int | None = None  # rows per generation batch; None: batch_size
    data: DataConfig = field(default_factory=DataConfig)
    model: BuiltinModelConfig = field(default_factory=BuiltinModelConfig)
    methods: list[UnlearnConfig] = field(default_factory=_default_methods)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    raw_text: RawTextConfig | None = None  # the benchmark's: unlearn from its raw corpora
    finetune: FinetuneConfig | None = None  # the model's: teach the pretrained model the benchmark first
    dtype: str | None = None  # the model's: the precision of scores, answers and attacks (None: as loaded)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    holdout: list[str] = field(default_factory=list)  # forget items kept for tuning's validation: not unlearned
    tuning_protocol: str = ""  # how the methods' settings were chosen (`unpact tune`), for the report

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The precisions a model can be evaluated in. bfloat16 halves memory and, on CPUs with AMX or
# AVX512-BF16 and on GPUs, runs the matmuls faster (the measured speed-up is in the README), at the
# price of rounding the weights and activations.
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ModelSpec:
    """A model of the study: the built-in architecture trained by unpact on each benchmark
    (``builtin``), or a pretrained model with safetensors weights (``path``): a Hugging Face folder, a
    known name, or a Hub id (``hf://ORG/NAME[@REVISION]``, or ``ORG/NAME`` that is no local folder).

    ``gold`` (same forms) is the model retrained without the forget set: TOFU's forget quality and
    MUSE's PrivLeak are measured against it, and every attack is read against the same attack on it
    (the calibration control; without one, the never-known retain items are).

    ``finetune`` (with ``path``): teach the pretrained model the benchmark's facts first, and a gold
    model from the same weights without the forget set (`unpact.models.finetune`; TOFU's and MUSE's
    fine-tune-then-unlearn protocol), for a fictitious benchmark the model cannot already know."""

    name: str = "builtin"
    builtin: BuiltinModelConfig | None = None
    path: str | None = None
    trust_remote_code: bool = False
    gold: str | None = None
    finetune: FinetuneConfig | None = None
    # The precision the original and every unlearned model are scored, asked and attacked in (None:
    # the weights' own, float32 for every known model). Training is not affected: unlearning runs in
    # the precision the weights load in and relearning in float32 (bfloat16 would round away the
    # small steps they take); a trained model is cast when training is over.
    dtype: str | None = None


@dataclass
class BenchmarkSpec:
    """A benchmark of the study: the generated built-in one (``builtin``), or a folder (``path``) in
    the published layout of ``format`` (jsonl, tofu, muse, mmlu, wmdp) read with that adapter's
    ``options`` (see `unpact.data.benchmarks`).

    ``forget_known`` > 0: the forget set becomes that many items, drawn (seeded) from the forget and
    retain items the original model answers correctly; every other one of them is retain. ``all``:
    every item it answers correctly. A real pretrained model cannot forget what it never knew, so this
    is how a study on published facts (e.g. TOFU world facts) gets a forget set worth measuring.
    """

    name: str = "builtin"
    builtin: DataConfig | None = None
    path: str | None = None
    format: str = "jsonl"
    options: dict[str, Any] = field(default_factory=dict)
    forget_known: int | str = 0  # a count, or "all"
    raw_text: RawTextConfig | None = None  # unlearn from the benchmark's raw corpora, not its QA pairs


OVERRIDE_KEYS = ("model", "benchmark", "method", "seed")


@dataclass
class Override:
    """Method settings for the cells that ``where`` matches (all given keys must match).

    ``where`` keys: model, benchmark, method (names) and seed; ``set`` keys: any method field but
    ``method`` and ``seed`` (lr, epochs, …); ``hparams`` are merged into the method's.
    """

    where: dict[str, Any] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)


@dataclass
class GridConfig:
    """A study: models × benchmarks × seeds × methods, with the attack and evaluation settings shared
    by every cell. The defaults are the demo (``configs/demo.yaml``)."""

    name: str = "demo"
    seeds: list[int] = field(default_factory=lambda: [0])
    batch_size: int = 64  # sequences per scoring batch (its [B, T, vocabulary] logits bound it)
    generate_batch_size: int | None = None  # rows per generation batch (greedy and sampled); None: batch_size
    models: list[ModelSpec] = field(default_factory=lambda: [ModelSpec("builtin", builtin=BuiltinModelConfig())])
    benchmarks: list[BenchmarkSpec] = field(default_factory=lambda: [BenchmarkSpec("builtin", builtin=DataConfig())])
    methods: list[UnlearnConfig] = field(default_factory=_default_methods)
    overrides: list[Override] = field(default_factory=list)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    keep_models: bool = True  # save every unlearned model in its cell folder (safetensors)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def method_for(self, method: UnlearnConfig, model: str, benchmark: str, seed: int) -> UnlearnConfig:
        """``method`` with the grid's ``seed`` and every matching override applied, in order."""
        out = dataclasses.replace(method, seed=seed, hparams=dict(method.hparams))
        cell = {"model": model, "benchmark": benchmark, "method": method.method, "seed": seed}
        for o in self.overrides:
            if all(cell[k] == v for k, v in o.where.items()):
                values = dict(o.set)
                out.hparams.update(values.pop("hparams", {}) or {})
                out = dataclasses.replace(out, **values)
        return out

    def group(self, model: ModelSpec, benchmark: BenchmarkSpec, seed: int,
              methods: list[UnlearnConfig] | None = None) -> StudyConfig:
        """The `StudyConfig` of one (model, benchmark, seed): its methods with overrides applied."""
        if methods is None:
            methods = [self.method_for(m, model.name, benchmark.name, seed) for m in self.methods]
        return StudyConfig(seed=seed, batch_size=self.batch_size, generate_batch_size=self.generate_batch_size,
                           data=benchmark.builtin or DataConfig(), model=model.builtin or BuiltinModelConfig(), methods=methods,
                           attribution=self.attribution, recovery=self.recovery, evaluation=self.evaluation,
                           raw_text=benchmark.raw_text, finetune=model.finetune, dtype=model.dtype,
                           generation=self.generation,
                           holdout=list(self.tune.holdout), tuning_protocol=self.tune.protocol)


# -- generic dataclass loading -------------------------------------------------------------------


def _key(key: Any) -> str:
    """A mapping key as it goes into a key path: as written, unless printing it would break the
    message's one line (a newline or control character in a key) or hide it (an empty key)."""
    return key if isinstance(key, str) and key and key.isprintable() else repr(key)


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
        return {str(k): _convert(v, inner, f"{path}.{_key(k)}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for arg in args[1:]:  # the first that takes the value as written, else the first's message
            if arg in (int, str, bool) and type(value) is arg:
                return value
        return _convert(value, args[0], path)
    if tp is float and isinstance(value, str) and EXPONENT_FLOAT.fullmatch(value.strip()):
        value = float(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise UnpactError(f"config {path}: {value!r} is not a finite number; give a number")
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
            raise UnpactError(f"config {path + '.' if path else ''}{_key(key)}: unknown key{did_you_mean(key, names)}; "
                              f"known keys here: {', '.join(sorted(names))}")
    kwargs = {k: _convert(v, hints[k], f"{path + '.' if path else ''}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _check(ok: bool, path: str, value: Any, need: str) -> None:
    if not ok:
        raise UnpactError(f"config {path}: {value!r} is invalid; {need}")


def validate(cfg: StudyConfig) -> StudyConfig:
    """Check values that are well-typed but impossible."""
    check = _check
    check(cfg.data.n_entities >= 10, "data.n_entities", cfg.data.n_entities, "use at least 10")
    check(0 < cfg.data.forget_fraction < 1, "data.forget_fraction", cfg.data.forget_fraction, "use a value in (0, 1)")
    check(cfg.data.answers in ANSWER_KINDS, "data.answers", cfg.data.answers,
          f"choose from {', '.join(ANSWER_KINDS)}{did_you_mean(cfg.data.answers, ANSWER_KINDS)}")
    check(cfg.generation.margin >= 0, "generation.margin", cfg.generation.margin, "use an integer ≥ 0")
    for split, n in cfg.generation.max_new_tokens.items():
        check(split in SPLITS, f"generation.max_new_tokens.{split}", split,
              f"name a split: {', '.join(SPLITS)}{did_you_mean(split, SPLITS)}")
        check(n >= 1, f"generation.max_new_tokens.{split}", n, "use an integer ≥ 1")
    check(cfg.model.max_positions is None or cfg.model.max_positions >= 16, "model.max_positions",
          cfg.model.max_positions, "use at least 16, or leave it out to size the context from the data")
    check(0 <= cfg.attribution.alpha < 1, "attribution.alpha", cfg.attribution.alpha, "use a value in [0, 1)")
    check(cfg.attribution.beta >= 0, "attribution.beta", cfg.attribution.beta, "use an integer ≥ 0")
    check(cfg.attribution.quality_items is None or cfg.attribution.quality_items >= 2, "attribution.quality_items",
          cfg.attribution.quality_items, "use a count ≥ 2, or leave it out to read every forget item")
    check(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "use an integer ≥ 1")
    check(cfg.generate_batch_size is None or cfg.generate_batch_size >= 1, "generate_batch_size",
          cfg.generate_batch_size, "use an integer ≥ 1, or leave it out to use batch_size")
    for name in ("rouge_threshold", "recovery_threshold", "destructive_threshold"):
        v = getattr(cfg.evaluation, name)
        check(0 <= v <= 1, f"evaluation.{name}", v, "use a value in [0, 1]")
    selectable = ATTACKS.selectable()
    for i, name in enumerate(cfg.recovery.attacks):
        check(name in selectable, f"recovery.attacks[{i}]", name, f"choose from {', '.join(selectable)}")
    check_settings(cfg.recovery, lambda path, value, need: check(False, path, value, need))
    check(cfg.model.lr > 0, "model.lr", cfg.model.lr, "use a positive learning rate")
    check(0 < cfg.model.target_accuracy <= 1, "model.target_accuracy", cfg.model.target_accuracy, "use a value in (0, 1]")
    _validate_methods(cfg.methods)
    return cfg


def _validate_methods(methods: list[UnlearnConfig], where: str = "methods") -> None:
    check = _check
    check(bool(methods), where, methods, "list at least one method")
    seen = set()
    for i, m in enumerate(methods):
        check(m.method in METHODS, f"{where}[{i}].method", m.method, f"choose from {', '.join(METHODS)}")
        check(m.method not in seen, f"{where}[{i}].method", m.method, "each method once")
        seen.add(m.method)
        check(m.lr > 0, f"{where}[{i}].lr", m.lr, "use a positive learning rate")
        check(m.epochs >= 1, f"{where}[{i}].epochs", m.epochs, "use at least 1 epoch")
        check(m.batch_size >= 1 and m.retain_batch_size >= 1, f"{where}[{i}].batch_size", m.batch_size, "use ≥ 1")
        check(m.lora_rank >= 0, f"{where}[{i}].lora_rank", m.lora_rank, "use 0 (no LoRA) or a positive rank")
        check(m.checkpoint_every >= 0, f"{where}[{i}].checkpoint_every", m.checkpoint_every, "use ≥ 0")
        # typed and range-checked by the method's own declaration (the one check, also `get_method`'s)
        m.hparams = check_hparams(METHODS[m.method], m.hparams, f"config {where}[{i}].hparams.")


def _folder_name(name: str) -> bool:
    """Whether ``name`` may name a folder inside the run directory: never '.', '..', hidden or a path."""
    return bool(name) and name[0].isalnum() and all(c.isalnum() or c in "-_." for c in name)


def _unique_names(specs: list, where: str) -> None:
    _check(bool(specs), where, specs, "list at least one")
    seen = set()
    for i, spec in enumerate(specs):
        _check(_folder_name(spec.name), f"{where}[{i}].name", spec.name,
               "start with a letter or digit, then letters, digits, '-', '_' or '.' (it names folders)")
        _check(spec.name not in seen, f"{where}[{i}].name", spec.name, "each name once")
        seen.add(spec.name)
        _check((spec.builtin is None) != (spec.path is None), f"{where}[{i}]", spec.name,
               "give exactly one of builtin: {...} or path: DIR")


def _validate_finetune(f: FinetuneConfig, where: str, m: ModelSpec) -> None:
    _check(m.path is not None, where, m.name, "finetune teaches a pretrained model: give it a path: (the built-in "
           "model is taught by its builtin: settings)")
    _check(m.gold is None, f"{where[:where.rindex('.')]}.gold", m.gold,
           "with finetune the gold model is taught from the same weights without the forget set; remove gold")
    _check(f.lr > 0, f"{where}.lr", f.lr, "use a positive learning rate")
    for name in ("batch_size", "max_epochs", "eval_every"):
        _check(getattr(f, name) >= 1, f"{where}.{name}", getattr(f, name), "use 1 or more")
    _check(0 < f.target_accuracy <= 1, f"{where}.target_accuracy", f.target_accuracy, "use a share in (0, 1]")
    for k, split in enumerate(f.splits):
        _check(split in SPLITS, f"{where}.splits[{k}]", split,
               f"choose from {', '.join(SPLITS)}{did_you_mean(str(split), SPLITS)}")
    _check("forget" in f.splits, f"{where}.splits", f.splits,
           "include forget: the model must know what it is to unlearn")


def validate_grid(cfg: GridConfig) -> GridConfig:
    """Check the grid's axes and overrides, then every (model, benchmark, seed) group as a study."""
    _check(_folder_name(cfg.name), "name", cfg.name,
           "start with a letter or digit, then letters, digits, '-', '_' or '.' (it names runs/NAME)")
    _unique_names(cfg.models, "models")
    for i, m in enumerate(cfg.models):
        _check(not (m.path or "").startswith(("http://", "https://")), f"models[{i}].path", m.path,
               "a study unlearns, so it needs the weights: give a model folder or a known name; "
               "judge a served model with `unpact audit`")
        _check(not (m.gold or "").startswith(("http://", "https://")), f"models[{i}].gold", m.gold,
               "the gold model is attacked through its weights: give a model folder, known name or hf://ORG/NAME")
        for key in ("path", "gold"):
            try:  # an ill-formed hf:// id is refused now, not when the model is first loaded
                hub.parse(getattr(m, key))
            except UnpactError as e:
                raise UnpactError(f"config models[{i}].{key}: {e}") from None
        _check(m.dtype is None or m.dtype in DTYPES, f"models[{i}].dtype", m.dtype,
               f"choose from {', '.join(DTYPES)}{did_you_mean(str(m.dtype), DTYPES)}")
        if (f := m.finetune) is not None:
            _validate_finetune(f, f"models[{i}].finetune", m)
    _unique_names(cfg.benchmarks, "benchmarks")
    from .data.benchmarks import FORMATS, HUB_LAYOUTS

    for i, b in enumerate(cfg.benchmarks):
        _check(b.format in FORMATS, f"benchmarks[{i}].format", b.format,
               f"choose from {', '.join(FORMATS)}{did_you_mean(b.format, FORMATS)}")
        _check(b.path is not None or not b.options, f"benchmarks[{i}].options", b.options,
               "options configure a path: benchmark's adapter; a builtin one takes none")
        # checked here, not when the folder is read, so that the error names the key and comes at once
        accepted = [p for p in inspect.signature(FORMATS[b.format]).parameters if p != "path"]
        accepted += ["hub"] if b.format in HUB_LAYOUTS else []  # load_benchmark's own, passed through options
        for key in b.options:
            _check(key in accepted, f"benchmarks[{i}].options.{_key(key)}", key,
                   f"format {b.format} takes {', '.join(accepted) or 'no options'}{did_you_mean(key, accepted)}")
        _check(b.forget_known == "all" or isinstance(b.forget_known, int) and b.forget_known >= 0,
               f"benchmarks[{i}].forget_known", b.forget_known, "use 0 (off), a count, or all")
        if (r := b.raw_text) is not None:
            _check(r.context_tokens >= 1, f"benchmarks[{i}].raw_text.context_tokens", r.context_tokens, "use ≥ 1")
            _check(r.chunk_tokens > r.context_tokens, f"benchmarks[{i}].raw_text.chunk_tokens", r.chunk_tokens,
                   f"use more than context_tokens ({r.context_tokens})")
            _check(b.builtin is None, f"benchmarks[{i}].raw_text", b.name,
                   "the built-in benchmark has no raw corpora; use raw_text with a MUSE or WMDP folder")
    _check(bool(cfg.seeds) and len(set(cfg.seeds)) == len(cfg.seeds), "seeds", cfg.seeds, "list distinct seeds")
    t = cfg.tune
    for name in ("lr_factors", "tradeoff_factors"):
        factors = getattr(t, name)
        _check(bool(factors), f"tune.{name}", factors, "list at least one factor")
        for i, f in enumerate(factors):
            _check(f > 0, f"tune.{name}[{i}]", f, "use a positive factor")
    _check(0 < t.validation_share < 1, "tune.validation_share", t.validation_share, "use a value in (0, 1)")
    _check(t.validation_from in ("forget", "retain"), "tune.validation_from", t.validation_from,
           f"choose forget or retain{did_you_mean(str(t.validation_from), ('forget', 'retain'))}")
    _check(0 <= t.max_destructive <= 1, "tune.max_destructive", t.max_destructive, "use a value in [0, 1]")
    _validate_methods(cfg.methods)
    names = {"model": {m.name for m in cfg.models}, "benchmark": {b.name for b in cfg.benchmarks},
             "method": {m.method for m in cfg.methods}, "seed": set(cfg.seeds)}
    fields = {f.name for f in dataclasses.fields(UnlearnConfig)} - {"method", "seed"}
    for i, o in enumerate(cfg.overrides):
        for key, value in o.where.items():
            _check(key in OVERRIDE_KEYS, f"overrides[{i}].where.{_key(key)}", key, f"match on {', '.join(OVERRIDE_KEYS)}")
            # a list or mapping here is no name; `in` on a set would raise TypeError for it
            _check(isinstance(value, typing.Hashable) and value in names[key], f"overrides[{i}].where.{key}", value,
                   f"no such {key} in the study; choose from {', '.join(map(str, sorted(names[key], key=str)))}")
        for key in o.set:
            _check(key in fields, f"overrides[{i}].set.{_key(key)}", key, f"set one of {', '.join(sorted(fields))}")
        converted = from_dict(UnlearnConfig, dict(o.set), f"overrides[{i}].set")  # the types, as in a method
        # applied as parsed, so that a cell gets the types a method would: YAML 1.1's `lr: 5e-4` string
        # becomes a float, and so do hparams (`hparams: {alpha: 5e-4}`, which `update` merges unconverted)
        o.set.update({k: getattr(converted, k) for k in o.set})
    for model in cfg.models:
        for bench in cfg.benchmarks:
            for seed in cfg.seeds:
                group = cfg.group(model, bench, seed)
                try:
                    validate(group)
                except UnpactError as e:
                    where = f"{model.name} × {bench.name} × seed {seed}"
                    raise UnpactError(f"{e} (after overrides, in {where})" if cfg.overrides else str(e)) from None
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a repeated key, which plain YAML loading resolves by silently keeping the
    last value (a second `methods:` block would replace the first without a word)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, typing.Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}; keep only one",
                                                    key_node.start_mark)
        if isinstance(key, typing.Hashable):
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_config(path: str | Path | None) -> GridConfig:
    """Load a study YAML (None → the demo defaults), validated."""
    if path is None:
        return validate_grid(GridConfig())
    path = Path(path)
    if not path.is_file():
        raise UnpactError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        # a reader error (a control character) has no `problem`; its str goes on to a second line
        problem = getattr(e, "problem", None) or next(iter(str(e).splitlines()), "")
        raise UnpactError(f"{path}{where}: invalid YAML ({' '.join(str(problem).split())})") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise UnpactError(f"{path}: nested too deeply to read; flatten the YAML") from None
    except UnicodeDecodeError as e:
        raise UnpactError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    if data is None:  # an empty file would otherwise run the demo study under another name
        raise UnpactError(f"{path}: the config is empty; give at least a name and what to run (see "
                          "configs/full-example.yaml), or run the demo with `unpact demo`")
    try:
        return validate_grid(from_dict(GridConfig, data))
    except UnpactError as e:
        raise UnpactError(f"{path}: {e}") from None
