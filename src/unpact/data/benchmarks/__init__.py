"""Published unlearning benchmarks (TOFU, MUSE, MMLU, WMDP) and unpact's own JSON Lines, loaded from
folders in their published layouts onto unpact's `Item` schema.

Adapters read local folders only, so a study runs offline and from files one can inspect; a hub id
(``hf://owner/name``, or ``hub=True``) merely fills such a folder in the cache first, and only when
the optional ``datasets`` package is installed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ...errors import UnpactError
from . import jsonl, multiple_choice, muse, tofu
from .base import Benchmark, HubLayout, check, fetch_hub

FORMATS: dict[str, Callable[..., Benchmark]] = {
    "jsonl": jsonl.load_jsonl,
    "tofu": tofu.load_tofu,
    "muse": muse.load_muse,
    "mmlu": multiple_choice.load_mmlu,
    "wmdp": multiple_choice.load_wmdp,
}
HUB_LAYOUTS: dict[str, HubLayout] = {
    "tofu": tofu.hub_layout,
    "muse": muse.hub_layout,
    "mmlu": multiple_choice.hub_layout,
    "wmdp": multiple_choice.hub_layout,
}


def load_benchmark(format: str, path: str | Path, *, name: str | None = None, hub: bool = False,
                   **options) -> Benchmark:
    """Load the benchmark at ``path`` (a folder, or ``hf://owner/name``) with the adapter ``format``;
    ``options`` are that adapter's keyword arguments, ``name`` overrides the benchmark's name."""
    loader = FORMATS.get(format)
    if loader is None:
        raise UnpactError(f"unknown benchmark format '{format}'; formats are: {', '.join(FORMATS)}")
    accepted = [p for p in inspect.signature(loader).parameters if p != "path"]
    for key in options:
        if key not in accepted:
            raise UnpactError(f"{format}: unknown option '{key}'; options are: {', '.join(accepted) or 'none'}")
    source = str(path)
    if source.startswith("hf://") or (hub and not Path(path).is_dir()):
        if format not in HUB_LAYOUTS:
            raise UnpactError(f"{source}: format '{format}' has no hub layout; pass a local folder")
        path = fetch_hub(source.removeprefix("hf://"), HUB_LAYOUTS[format])
    path = Path(path)
    if not path.is_dir():
        raise UnpactError(f"{path}: benchmark folder not found; pass a folder in the {format} layout")
    bench = loader(path, **options)
    return check(replace(bench, name=name or bench.name, source=source))


__all__ = ["FORMATS", "Benchmark", "load_benchmark"]
