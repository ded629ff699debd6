"""The registry of benchmark metrics (TOFU's, MUSE's, ...): a new metric is one function in one module.

In the spirit of open-unlearning's ``@unlearning_metric``: each metric is a plain function over the raw
material the study stores per model (`Material`), registered with its name, a help line and the raw
fields it needs:

    @benchmark_metric("tofu.forget_quality", help="...",
                      needs={"tofu.forget.truth_ratios": "...", "gold.tofu.forget.truth_ratios": "..."})
    def _forget_quality(m: Material) -> float:
        return forget_quality(m["tofu.forget.truth_ratios"], m["gold.tofu.forget.truth_ratios"])

The name is ``<benchmark>.<key>``: the metric lands in section ``benchmark`` of metrics.json under
``key``. A metric whose needs are not all there is null (or, with ``when_missing="omit"``, left out),
and `compute_metrics` says which field it lacked and what data gives it; a function raises `Missing`
for a gap only its values reveal (the number is then null). ``per_split`` metrics run once per split of
the benchmark's raw material ({split: ...}, as `unpact.study.standard.tofu_raw_splits` stores it), with
``{split}`` in their needs standing for it, and land in ``section[split][key]``; they run before the
section's other metrics, which can read them from ``m.section``.

Metric modules in `unpact.evaluation` are imported the first time the registry is read, so no other
file lists them; within a section, metrics keep registration order (the built-in modules first), so the
keys of metrics.json keep theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from ..errors import UnpactError
from ..registry import Registry, import_submodules

if TYPE_CHECKING:
    from ..data import Item

# metrics.json's section order; a benchmark not listed here follows in registration order
SECTIONS = ("tofu", "muse")
ROOTS = ("tofu", "answers", "items", "mia", "gold", "muse", "original_muse")


class Missing(Exception):
    """Raised by a metric function when its material is there but does not define the number (the
    message says why); the metric is then null."""


@dataclass(frozen=True)
class Material:
    """One model's stored raw material, addressed by dotted paths (``m["tofu.forget.truth_ratios"]``).

    Roots: ``tofu`` (`tofu_raw_splits`: {split: {"probability", "truth_ratios"}}), ``answers``
    ({split: {"answers": [...]}}, greedy), ``items`` ({split: [Item]}), ``mia`` (membership AUCs),
    ``gold`` (the gold model's {"tofu": ..., "mia_auc": ...}), ``muse`` and ``original_muse``
    (`muse_raw` of this model and of the model before unlearning). While a metric runs, ``split`` is
    its split (per-split metrics) and ``section`` what its section holds so far.
    """

    tofu: Mapping[str, Any] | None = None
    answers: Mapping[str, Any] | None = None
    items: Mapping[str, list[Item]] | None = None
    mia: Mapping[str, Any] | None = None
    gold: Mapping[str, Any] | None = None
    muse: Mapping[str, Any] | None = None
    original_muse: Mapping[str, Any] | None = None
    split: str | None = None
    section: Mapping[str, Any] = field(default_factory=dict)

    def lookup(self, path: str) -> Any:
        """The value at ``path`` ("{split}" is the current split), or None where any step is missing."""
        root, *rest = path.format(split=self.split).split(".")
        if root not in ROOTS:
            raise UnpactError(f"benchmark metric material {path!r}: the path must start with one of {', '.join(ROOTS)}")
        value = getattr(self, root)
        for step in rest:
            if not isinstance(value, Mapping):
                return None
            value = value.get(step)
        return value

    def has(self, path: str) -> bool:
        """Whether ``path`` holds something: not None, and not empty where it has a length."""
        value = self.lookup(path)
        return value is not None and not (hasattr(value, "__len__") and len(value) == 0)

    def __getitem__(self, path: str) -> Any:
        if not self.has(path):  # only for a path a metric uses without declaring it in ``needs``
            raise UnpactError(f"benchmark metric material {path.format(split=self.split)!r} is missing; "
                              "declare it in the metric's needs")
        return self.lookup(path)


@dataclass(frozen=True)
class BenchmarkMetric:
    """A registered metric (see the module docstring)."""

    name: str
    fn: Callable[[Material], Any]
    help: str
    needs: Mapping[str, str]
    per_split: bool = False
    when_missing: Literal["null", "omit"] = "null"

    @property
    def benchmark(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def key(self) -> str:
        return self.name.split(".", 1)[1]

    def missing(self, m: Material) -> list[str]:
        """``"<field>: <what gives it>"`` for every need ``m`` lacks; [] when the metric can be computed."""
        return [f"{path.format(split=m.split)}: {what}" for path, what in self.needs.items() if not m.has(path)]


def _discover() -> None:
    # TOFU's, then MUSE's: the order of their keys in every metrics.json written so far
    import_submodules(__package__, first=("tofu_metrics", "muse_metrics"))


BENCHMARK_METRICS: Registry[BenchmarkMetric] = Registry("benchmark metric", discover=_discover)


def benchmark_metric(name: str, *, help: str, needs: Mapping[str, str], per_split: bool = False,
                     when_missing: Literal["null", "omit"] = "null") -> Callable[[Callable[[Material], Any]], Callable[[Material], Any]]:
    """Decorator registering a metric function as ``<benchmark>.<key>`` (see the module docstring);
    returns the function unchanged. ``needs``: {material path: what data gives it}, one line each."""
    benchmark, _, key = name.partition(".")
    if not benchmark or not key or "." in key:
        raise UnpactError(f"benchmark metric {name!r}: name it <benchmark>.<key>, e.g. 'tofu.forget_quality'")
    if when_missing not in ("null", "omit"):
        raise UnpactError(f"benchmark metric {name!r}: when_missing {when_missing!r} is not 'null' or 'omit'")

    def decorate(fn: Callable[[Material], Any]) -> Callable[[Material], Any]:
        BENCHMARK_METRICS.add(name, BenchmarkMetric(name, fn, help, dict(needs), per_split, when_missing), help=help)
        return fn

    return decorate


def compute_metrics(m: Material) -> tuple[dict[str, dict], dict[str, str]]:
    """Every registered metric of ``m``: ({benchmark: {key: value, split: {key: value}}}, {where: why}) —
    the second dict says, per null or left-out metric (``"tofu.forget.truth_ratio"``), what it lacked."""
    metrics = list(BENCHMARK_METRICS.values())
    benchmarks = [b for b in SECTIONS if any(x.benchmark == b for x in metrics)]
    benchmarks += list(dict.fromkeys(x.benchmark for x in metrics if x.benchmark not in SECTIONS))
    out: dict[str, dict] = {}
    why: dict[str, str] = {}
    for bench in benchmarks:
        section: dict[str, Any] = {}
        mine = [x for x in metrics if x.benchmark == bench]
        if any(x.per_split for x in mine):  # first: the section's aggregates read them
            for split in m.lookup(bench) or {}:
                row: dict[str, Any] = {}
                for metric in (x for x in mine if x.per_split):
                    _fill(row, metric, replace(m, split=split, section=section), f"{bench}.{split}.{metric.key}", why)
                section[split] = row
        for metric in (x for x in mine if not x.per_split):
            _fill(section, metric, replace(m, section=section), metric.name, why)
        out[bench] = section
    return out, why


def _fill(into: dict, metric: BenchmarkMetric, m: Material, where: str, why: dict[str, str]) -> None:
    gaps = metric.missing(m)
    if gaps:
        why[where] = "needs " + "; ".join(gaps)
        if metric.when_missing == "null":
            into[metric.key] = None
        return
    try:
        into[metric.key] = metric.fn(m)
    except Missing as e:
        why[where] = str(e)
        into[metric.key] = None
