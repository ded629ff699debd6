"""The run manifest: what produced a run directory (versions, code revision, host, seeds, command).

Only facts about software and hardware go in. Environment variables never do: they are where API
keys live, and a run directory gets shared.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("unpact", "torch", "transformers", "tokenizers", "safetensors", "accelerate", "numpy",
            "scipy", "rouge-score", "peft")


def package_versions() -> dict[str, str | None]:
    """Installed version of each package that shapes the numbers (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(where: Path | None = None) -> dict | None:
    """The commit of the unpact checkout the code runs from (or of ``where``), and whether it has
    local changes; None for an installed wheel or when git is missing."""
    where = where or Path(__file__).resolve().parent
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "."))}
    except (OSError, subprocess.SubprocessError):
        return None


def host() -> dict:
    """Machine facts: name, OS, Python, CPU count, accelerator."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"name": platform.node(), "platform": platform.platform(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu}


SECRET_NAME = re.compile(r"key|token|secret|passw|credential|auth", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
REDACTED = "<redacted>"


def redact(argv: list[str], environ: dict[str, str] | None = None) -> list[str]:
    """The command line with secrets replaced by ``<redacted>``: the value of any option whose name
    looks secret (``--api-key X``, ``--token=X``), credentials in URLs (``http://user:pw@host``), and
    any text equal to the value of a secret-looking environment variable (``OPENAI_API_KEY``…), since
    a user may paste a key anywhere on the line."""
    environ = os.environ if environ is None else environ
    secrets = sorted({v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= 8}, key=len, reverse=True)
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            arg, hide_next = REDACTED, False
        elif arg.startswith("-") and SECRET_NAME.search(arg.split("=", 1)[0]):
            arg, hide_next = (arg.split("=", 1)[0] + "=" + REDACTED, False) if "=" in arg else (arg, True)
        arg = _URL_USERINFO.sub(REDACTED + "@", arg)
        for value in secrets:
            arg = arg.replace(value, REDACTED)
        out.append(arg)
    return out


def manifest(seeds: list[int], argv: list[str] | None = None, previous: dict | None = None) -> dict:
    """This invocation's manifest; ``previous`` (the run directory's last one) keeps the history of
    starts, so a resumed run shows every invocation that contributed to it. The command line is
    recorded with secrets redacted (`redact`)."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    entry = {"started": now, "argv": redact(list(sys.argv if argv is None else argv)), "git": git_revision()}
    history = (previous or {}).get("history", []) + [entry]
    return {"seeds": seeds, "packages": package_versions(), "git": entry["git"], "host": host(),
            "started": now, "history": history}


def record_models(doc: dict, models: dict[str, dict]) -> None:
    """Record in a manifest ``doc`` the hub models this invocation used, by study model name: repository,
    revision asked for and the commit it resolved to (`unpact.models.hub.Snapshot.record`). Kept per
    invocation too, so a resumed run shows when the weights behind a branch changed."""
    doc.setdefault("models", {}).update(models)
    if doc.get("history"):
        doc["history"][-1].setdefault("models", {}).update(models)
