"""Models on the Hugging Face Hub, named by id wherever a model folder is accepted.

``hf://ORG/NAME[@REVISION]``, or a bare ``ORG/NAME[@REVISION]`` that is not a local folder, becomes a
snapshot folder in the standard Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``), through
huggingface_hub's own API, so its environment applies unchanged: ``HF_TOKEN`` (or ``hf auth login``)
for gated and private models, ``HF_HUB_OFFLINE=1`` to use only what is cached, ``HF_ENDPOINT`` for a
mirror. The snapshot folder is then loaded like any model folder (`loading.load_model`), so the
safetensors-only and remote-code rules are the folder's rules.

Only what loading reads is fetched: the config, safetensors weights (and their index) and tokenizer
files; never a pickle checkpoint, and a repository's Python files only when remote code is trusted.
The commit a revision resolves to is pinned for the life of the process (a branch that moves mid-study
does not change the weights under it) and is the snapshot folder's name, so run keys change with it
and `resolved` can record it in the run manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnpactError

PREFIX = "hf://"
# Hub repository ids: owner and name of letters, digits, '-', '_', '.', neither starting with '.' or '-'
# (Path-collapsed "hf:/" is accepted too: a --model typed as a Path loses one slash of "//").
_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9_][\w.-]*)(?:@(?P<revision>[\w./-]+))?")
CONFIG_FILES = ["config.json", "generation_config.json"]
WEIGHT_FILES = ["*.safetensors", "*.safetensors.index.json"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt", "merges.txt",
                   "chat_template.jinja", "chat_template.json"]


@dataclass(frozen=True)
class HubRef:
    """A model named on the Hub: its repository id and the revision asked for (None: the default branch)."""

    repo_id: str
    revision: str | None = None
    bare: bool = False  # written without hf://: it may as well be a mistyped local folder

    def __str__(self) -> str:
        return PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")

    def named(self) -> str:
        """How errors name it: as written, and for a bare id, that no folder of that name exists either."""
        if not self.bare:
            return str(self)
        return self.repo_id + (f"@{self.revision}" if self.revision else "") + " (no such local folder either)"


@dataclass(frozen=True)
class Snapshot:
    """A resolved hub model: the revision asked for, the commit it is, and its local snapshot folder."""

    ref: HubRef
    commit: str
    path: Path

    def record(self) -> dict:
        """What the run manifest keeps: enough to fetch exactly these weights again."""
        return {"repo": self.ref.repo_id, "revision": self.ref.revision or "main", "commit": self.commit,
                "pinned": f"{PREFIX}{self.ref.repo_id}@{self.commit}"}


def parse(ref: str | Path | None) -> HubRef | None:
    """The hub model ``ref`` names, or None when it is a local folder, a known name, a URL or nothing.

    ``hf://ORG/NAME[@REV]`` always names the Hub (an ill-formed one is an error); a bare ``ORG/NAME`` only
    when it is text a user wrote (a `Path` is a folder unpact itself made or was given as one) and no such
    local folder exists."""
    if ref is None:
        return None
    text = str(ref)
    if text.startswith(("hf://", "hf:/")):
        body = text.split(":/", 1)[1].lstrip("/")
        m = _ID.fullmatch(body)
        if not m or ".." in body or "--" in m["repo"]:
            raise UnpactError(f"{text}: not a Hugging Face model id; write hf://ORG/NAME or hf://ORG/NAME@REVISION")
        return HubRef(m["repo"], m["revision"])
    m = _ID.fullmatch(text)
    if not isinstance(ref, str) or not m or ".." in text or "--" in m["repo"] or Path(text).exists():
        return None
    return HubRef(m["repo"], m["revision"], bare=True)


def is_hub(ref) -> bool:
    """Whether ``ref`` names a model on the Hub rather than a folder, known name or URL."""
    try:
        return parse(ref) is not None
    except UnpactError:
        return True  # an ill-formed hf:// id: resolving it says what is wrong


# (repo, revision asked for) → commit, for the life of the process (see the module docstring)
_PINNED: dict[tuple[str, str | None], str] = {}
_RESOLVED: dict[str, Snapshot] = {}
_FILES: dict[str, list[str]] = {}  # commit → the repository's files, as the Hub listed them
# commits found in the cache because the Hub could not be asked: later loads read the cache only, rather
# than wait on an unreachable Hub again for every model a study loads
_FROM_CACHE: set[str] = set()
_SNAPSHOTS: dict[str, Snapshot] = {}  # by snapshot folder: every snapshot this process resolved


def shown(path: str | Path) -> str:
    """How a message names a model folder: a hub snapshot by its id and commit, anything else by its path."""
    for snap in _SNAPSHOTS.values():
        if Path(path) == snap.path:
            return f"{snap.ref} (commit {snap.commit})"
    return str(path)


def summary() -> list[str]:
    """One line per hub model this process looked at: its id, the commit it resolved to, and whether
    its weights are in the cache yet (what `unpact run --dry-run` shows before anything is downloaded)."""
    return [f"{snap.ref} → commit {snap.commit}, weights "
            f"{'in the cache' if any(snap.path.glob('*.safetensors')) else 'downloaded when the run starts'}"
            for snap in _SNAPSHOTS.values()]


def resolved() -> dict[str, dict]:
    """Every hub model this process resolved, by the id it was named with: repo, revision, commit."""
    return {name: snap.record() for name, snap in _RESOLVED.items()}


def snapshot(ref: str | Path | HubRef, weights: bool = True, trust_remote_code: bool = False) -> Snapshot:
    """The local snapshot of a hub model, fetched into the Hugging Face cache where needed.

    ``weights=False`` fetches only the config and tokenizer (what `unpact run --dry-run` needs to
    measure prompts against the model's context); the weights come when the model is loaded. Offline
    (``HF_HUB_OFFLINE=1``, or the Hub unreachable) the cached snapshot is used. Every failure is one
    `UnpactError` line naming the model and what to do."""
    hub = ref if isinstance(ref, HubRef) else parse(ref)
    if hub is None:
        raise UnpactError(f"{ref}: not a Hugging Face model id; write hf://ORG/NAME[@REVISION]")
    key = (hub.repo_id, hub.revision)
    commit = _PINNED.get(key)
    if commit is None:
        commit = _remote_commit(hub)  # None: offline or the Hub unreachable; the cache decides
    elif commit in _FROM_CACHE:
        commit = None
    patterns = CONFIG_FILES + TOKENIZER_FILES + (_weight_files(_FILES.get(commit or "", [])) if weights else [])
    if trust_remote_code:  # the rule is the folder's: its own code runs only when trusted
        patterns.append("*.py")
    path = _download(hub, commit, patterns)
    snap = Snapshot(HubRef(hub.repo_id, hub.revision), path.name, path)
    _PINNED[key] = snap.commit
    _SNAPSHOTS[str(path)] = snap
    if commit is None:
        _FROM_CACHE.add(snap.commit)
    if weights:
        if not list(path.glob("*.safetensors")):
            raise UnpactError(_no_weights(hub, commit is None))
        _RESOLVED[str(hub)] = snap
    return snap


def _remote_commit(hub: HubRef) -> str | None:
    """The commit ``hub``'s revision is now, asked of the Hub, after checking the repository holds
    safetensors weights (before anything is downloaded); None when offline or the Hub cannot be reached."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        info = HfApi().model_info(hub.repo_id, revision=hub.revision)
    except GatedRepoError:
        raise UnpactError(_gated(hub)) from None
    except RevisionNotFoundError:
        raise UnpactError(_unknown_revision(hub)) from None
    except RepositoryNotFoundError:
        raise UnpactError(f"{hub.named()}: no such model on the Hugging Face Hub; check the id (a private model "
                          f"also needs {_token_hint()})") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise UnpactError(_gated(hub)) from None
        return None  # the Hub is down (5xx): the cache may still hold it
    except OSError:  # no connection (HF_HUB_OFFLINE raises OfflineModeIsEnabled, an OSError, too)
        return None
    except Exception as e:
        # the HTTP client's transport errors (refused, DNS, timeout) are no OSError: the Hub cannot be reached
        if any(c.__name__ == "TransportError" for c in type(e).__mro__):
            return None
        raise
    files = [s.rfilename for s in info.siblings or []]
    if files and not any(f.endswith(".safetensors") for f in files):
        raise UnpactError(_no_weights(hub, False, files))
    _FILES[info.sha] = files
    return info.sha


def _weight_files(files: list[str]) -> list[str]:
    """The safetensors files transformers loads: ``model.safetensors`` or its shards and index where the
    repository has them, since some also carry the same weights again in another layout (Mistral's
    ``consolidated.safetensors``) that would double the download; else every safetensors file."""
    if any(re.fullmatch(r"model(-\d+-of-\d+)?\.safetensors", f) for f in files):
        return ["model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"]
    return WEIGHT_FILES


def _download(hub: HubRef, commit: str | None, patterns: list[str]) -> Path:
    """The snapshot folder of ``commit`` (or, offline, of the cached revision), with ``patterns`` fetched."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(hub.repo_id, revision=commit or hub.revision, allow_patterns=patterns,
                                      local_files_only=commit is None))
    except LocalEntryNotFoundError:
        raise UnpactError(_not_cached(hub)) from None
    except GatedRepoError:
        raise UnpactError(_gated(hub)) from None
    except RevisionNotFoundError:
        raise UnpactError(_unknown_revision(hub)) from None
    except RepositoryNotFoundError:
        raise UnpactError(f"{hub.named()}: no such model on the Hugging Face Hub; check the id") from None


def _token_hint() -> str:
    """Where the token goes, and whether one is set; never its value."""
    from huggingface_hub import get_token

    if get_token():
        return "a token with access: the one in HF_TOKEN (or from `hf auth login`) is refused"
    return "a token: set HF_TOKEN (or run `hf auth login`)"


def _gated(hub: HubRef) -> str:
    return (f"{hub.repo_id} is gated: accept its conditions on https://huggingface.co/{hub.repo_id} with your "
            f"account, then give unpact {_token_hint()}")


def _unknown_revision(hub: HubRef) -> str:
    return (f"{hub.named()}: revision '{hub.revision}' does not exist in {hub.repo_id}; give a branch, tag or commit "
            "hash of the repository (see its 'Files and versions' page)")


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _not_cached(hub: HubRef) -> str:
    what = f"revision '{hub.revision}' of {hub.repo_id}" if hub.revision else hub.repo_id
    why = "HF_HUB_OFFLINE=1 forbids downloading" if _offline() else "the Hugging Face Hub cannot be reached"
    return (f"{hub.named()}: {what} is not in the Hugging Face cache ({_hub_cache()}) and {why}; download it once where "
            f"the Hub is reachable (`hf download {hub.repo_id}"
            f"{' --revision ' + hub.revision if hub.revision else ''}`) or point HF_HOME at a cache that holds it")


def _no_weights(hub: HubRef, offline: bool, files: list[str] | None = None) -> str:
    if offline:
        return (f"{hub}: the cached snapshot ({_hub_cache()}) holds no .safetensors weights; download them once "
                "where the Hub is reachable (unpact fetches safetensors only)")
    pickles = sorted(f for f in files or [] if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")))
    found = f" (it has {', '.join(pickles[:2])})" if pickles else ""
    return (f"{hub}: the repository has no .safetensors weights{found}; unpact downloads only safetensors, since "
            "unpickling a checkpoint can run code: pick a revision or repository with safetensors, or convert "
            "the weights yourself into a local folder (save_pretrained) and pass that folder")
