"""`unpact audit`: is it really gone? One original and one unlearned model, local or served, judged on
the user's forget (and retain/utility) items with the study's own stages and metrics.

    original: answers, LOO attributions, KeyTokens        (Study.base)
    unlearned: answers, attributions, prompt attacks       (Study.audit_model)
    → metrics.json, records.jsonl, report.html             (Study._finish, as a study)
    → verdict.json, audit.html                             (`unpact.report.audit`)

Only what needs nothing but log-probabilities and generation runs, so either model may sit behind an
OpenAI-compatible endpoint: the attacks are FocusOnKey (oracle, self and heuristic keywords, two
placebos) and the prompt-only attacks (sampling, paraphrase, few-shot, prefill, many-shot); the
white-box ones — weight attacks, and the logit lens, probe and direction ablation, which read or edit
the hidden states — are refused for a served model, in one line naming what each needs.
"""

from __future__ import annotations

from pathlib import Path

from ..config import StudyConfig, validate
from ..data import Item
from ..data.benchmarks.jsonl import split_file
from ..errors import UnpactError
from ..models import hub
from ..models.client import is_served, public_url
from ..models.hub import is_hub
from ..models.registry import model_path, resolve_model
from ..recovery import ATTACKS
from ..report.audit import write_audit
from .progress import Reporter
from .runner import Study

# what a served model allows: attacks that need nothing but prompts, and those that need the weights
PROMPT_ATTACKS = tuple(n for n in ATTACKS.selectable() if not ATTACKS[n].needs_weights)
WEIGHT_ATTACKS = tuple(n for n in ATTACKS.selectable() if ATTACKS[n].needs_weights)
DEFAULT_ATTACKS = tuple(n for n in PROMPT_ATTACKS if n in ATTACKS.defaults())  # what an audit runs unless told
UNLEARNED = "unlearned"  # the audited model's name in metrics.json and records.jsonl


def white_box(names: list[str]) -> str:
    """What the white-box attacks ``names`` need, grouped by need: "attacks quantize, relearn change the
    weights; logit_lens reads every layer's hidden states" (the audit's refusal for a served model)."""
    by_need: dict[str, list[str]] = {}
    for n in names:
        by_need.setdefault(ATTACKS[n].needs, []).append(n)
    parts = []
    for need, group in by_need.items():
        if need == "changes the weights":  # the plural reads "attacks quantize, relearn change the weights"
            need = "change the weights" if len(group) > 1 else need
        elif len(group) > 1:
            need = need.replace("reads", "read").replace("edits", "edit")
        parts.append(f"{'attacks' if len(group) > 1 else 'attack'} {', '.join(group)} {need}")
    return "; ".join(parts)


def load_split(path: Path | None, split: str) -> list[Item]:
    """Items of one split from a JSON Lines file (``{"question", "answer"}`` per line, ``id`` optional);
    none if no path."""
    if path is None:
        return []
    if not Path(path).is_file():
        raise UnpactError(f"--{split} {path}: file not found; give a JSON Lines file of question/answer objects")
    return split_file(Path(path), split)


def template_tokenizer(template: str | None, original: str | Path, unlearned: str | Path,
                       trust_remote_code: bool = False):
    """The local tokenizer whose prompt template describes a served model: ``template`` (a model folder
    or known name) if given, else the first local model of the pair; None when both are served and no
    template is given (the plain ``Question: …\\nAnswer:`` format)."""
    from ..models.loading import load_tokenizer

    ref = template or next((r for r in (original, unlearned) if not is_served(r)), None)
    return None if ref is None else load_tokenizer(ref, trust_remote_code=trust_remote_code)


def run_audit(cfg: StudyConfig, out: Path, original: str | Path, unlearned: str | Path, forget: Path,
              retain: Path | None = None, utility: Path | None = None, *, template: str | None = None,
              served: dict | None = None, reporter: Reporter | None = None, gold: str | Path | None = None) -> dict:
    """Audit ``unlearned`` against ``original``; returns the verdict (also in ``out/verdict.json``).

    ``gold``: a model trained without the forget set; every attack is then read against it, as in a
    study (otherwise against the retain items the original model never answered). ``served``: options for served models (`unpact.models.served.served_scorer`: concurrency, timeout,
    retries, key_env, bos_text). ``cfg.recovery.attacks`` defaults to the prompt attacks; few-shot needs
    retain items for its demonstrations and is dropped without them.
    """
    splits = {"forget": load_split(forget, "forget"), "retain": load_split(retain, "retain"),
              "utility": load_split(utility, "utility")}
    any_served = is_served(original) or is_served(unlearned)
    weights = sorted(a for a in cfg.recovery.attacks if a in WEIGHT_ATTACKS)
    if any_served and weights:
        raise UnpactError(f"{white_box(weights)}, which a served model does not give; "
                          f"use --attacks with {', '.join(PROMPT_ATTACKS)}")
    if not splits["retain"] and "few_shot" in cfg.recovery.attacks:
        cfg.recovery.attacks = [a for a in cfg.recovery.attacks if a != "few_shot"]
    validate(cfg)
    options = dict(served or {})
    if any_served:
        options["template"] = template_tokenizer(template, original, unlearned)
    study = Study(cfg, out, reporter, model_dir=original, served=options)
    if gold is not None:  # a model that never saw the forget set: the attacks' control, as in a study
        if is_served(gold):
            raise UnpactError(f"--gold {gold}: the gold model must be a local folder, known name or hub id (it is "
                              "attacked through its weights too); download it or drop --gold")
        study.gold_dir = resolve_model(gold) if is_hub(gold) else model_path(gold)
    study.audit(splits, {UNLEARNED: unlearned})
    models = {"original": _shown(original), "unlearned": _shown(unlearned)}
    return write_audit(out, models)


def _shown(ref: str | Path) -> str:
    """A model as the verdict names it: a URL without credentials, a hub id with the commit it resolved to
    (what pins the same weights again), else as given."""
    if is_served(ref):
        return public_url(str(ref))
    if is_hub(ref) and (record := hub.resolved().get(str(hub.parse(ref)))):
        return f"{ref} (commit {record['commit']})"
    return str(ref)
