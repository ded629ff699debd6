"""The audit's verdict (``verdict.json``) and its one-page report (``audit.html``).

Both are built from an audit run's ``metrics.json`` and ``records.jsonl`` only (see
`unpact.study.audit`), so an auditor can re-render them without the models. The verdict is the
dilemma quadrant of the audited model, judged on the strongest prompt attack of any kind (see
`strongest_attack`; a study judges on FocusOnKey alone), put in words, with the numbers it rests on and
the recovered items as evidence: each with the question, the gold answer, what the original and the unlearned
model answered, and every prompt attack that brought the answer back (its prompt and the reply).
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from ..errors import UnpactError
from ..io import read_json, read_jsonl, write_atomic, write_json
from ..recovery import AttackKey
from .console import attack_label, format_rate
from .heatmap import HEATMAP_CSS, shared_scale, token_heatmap_html
from .records import PROMPT_CHANNELS

UNLEARNED = "unlearned"


def _attack_rows(m: dict) -> list[dict]:
    """Per attack: its recovery of the forgotten items, its control's rate, the calibrated difference
    with its 95% interval, and for FocusOnKey its excess over placebo (finding 2); placebos as rows of
    their own, marked."""
    calibrated, specificity = m.get("calibrated") or {}, m.get("keyword_specificity") or {}
    rows = []
    for attack, rate in (m.get("recovery_rate") or {}).items():
        c = calibrated.get(attack) or {}
        rows.append({"attack": attack, "label": attack_label(attack), "rate": rate, "n": c.get("n"),
                     "control": c.get("control"), "control_kind": c.get("control_kind"),
                     "calibrated": c.get("calibrated"), "ci95": c.get("ci95"), "p_value": c.get("p_value"),
                     "p_holm": c.get("p_holm"),
                     "excess": (specificity.get(attack) or {}).get("excess"),
                     "placebo": AttackKey.parse(attack).is_placebo})
    return rows


def strongest_attack(m: dict) -> tuple[str | None, float | None]:
    """The attack that decided the recovery side of the quadrant and its calibrated recovery (the
    study's own judgement, `unpact.evaluation.method_metrics`: the same for an audit and a study)."""
    best = m.get("strongest_attack")
    return (None, None) if not best else (best["attack"], best["calibrated"])


def _sentence(m: dict, quadrant: str) -> str:
    """The verdict in one sentence (what a compliance reader sees first)."""
    if not m.get("n_known"):
        return ("inconclusive: the original model answers none of the forget items, so there is nothing to have "
                "forgotten; give items it knows")
    best = m.get("strongest_attack")
    if not m.get("n_forgotten"):
        parts = ["nothing was forgotten: the unlearned model still answers every forget item the original knows"]
    elif "insufficient" in quadrant:
        parts = [f"NOT reliably forgotten: {best['note']}"]
    else:
        parts = [f"forgotten under the attacks tried: {best['note']}" if best else "forgotten: no attack ran"]
    if "destructive" in quadrant:
        parts.append(f"destructive: {format_rate(m.get('destructive_rate'))} of the retain/utility knowledge is lost")
    parts.append(f"forget efficacy {format_rate(m.get('forget_efficacy'))} ({m['n_forgotten']} of {m['n_known']} "
                 "known items no longer answered)")
    return "; ".join(parts)


def verdict(metrics: dict, records: list[dict], models: dict) -> dict:
    """The audit verdict: quadrant and sentence, the numbers behind them, and the recovered items."""
    if UNLEARNED not in (metrics.get("methods") or {}):
        raise UnpactError("metrics.json holds no audited model; rerun `unpact audit`")
    m = metrics["methods"][UNLEARNED]
    thresholds = metrics.get("thresholds") or {}
    evidence = []
    for r in records:
        if r.get("split") != "forget" or r.get("outcome") != "recovered":
            continue
        hits = [{"attack": name, "label": attack_label(name), "prompt": a["prompt"], "answer": a["answer"]}
                for name, a in (r.get("attacks") or {}).items()
                if a.get("correct") and not AttackKey.parse(name).is_placebo and not a.get("changes_weights")
                and a.get("channel", "rewrite") in PROMPT_CHANNELS]
        evidence.append({"item_id": r["item_id"], "question": r["question"], "gold": r["gold"],
                         "answer_before": r["answer_before"], "answer_after": r["answer_after"], "recovered_by": hits,
                         "tokens": r.get("tokens"), "contrib_before": r.get("contrib_before"),
                         "contrib_after": r.get("contrib_after"), "key_before": r.get("key_before"),
                         "key_after": r.get("key_after")})
    accuracy_before = (metrics.get("base") or {}).get("accuracy") or {}
    best, value = strongest_attack(m)
    q = m["quadrant"]  # judged as in a study: on the strongest attack's calibrated recovery
    return {
        "models": models,
        "quadrant": q,
        "verdict": _sentence(m, q),
        "forget_efficacy": m.get("forget_efficacy"),
        "n_known": m.get("n_known"), "n_forgotten": m.get("n_forgotten"),
        "recovery": _attack_rows(m),
        "strongest_attack": best, "strongest_attack_evidence": value,
        "calibrated": m.get("calibrated"), "keyword_specificity": m.get("keyword_specificity"),
        "where_still": m.get("where_still"), "layer_profile": m.get("layer_profile"),
        "utility": {"destructive_rate": m.get("destructive_rate"),
                    "destructive_rate_by_split": m.get("destructive_rate_by_split"),
                    "accuracy_before": accuracy_before, "accuracy_after": m.get("accuracy")},
        "tracking": m.get("tracking"),
        "thresholds": thresholds,
        "keytokens": metrics.get("keytokens"),
        "evidence": evidence,
    }


def write_audit(out: Path, models: dict) -> dict:
    """Write ``verdict.json`` and ``audit.html`` for the audit run in ``out``; returns the verdict."""
    out = Path(out)
    v = verdict(read_json(out / "metrics.json"), read_jsonl(out / "records.jsonl"), models)
    write_json(out / "verdict.json", v)
    write_atomic(out / "audit.html", render_audit(v))
    return v


def render_audit(v: dict) -> str:
    """The audit page: self-contained HTML (inline CSS, no scripts, no remote resources)."""
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["rate"] = format_rate
    for e in v["evidence"]:
        if e["tokens"] and e["contrib_before"] is not None:
            scale = shared_scale(e["contrib_before"], e["contrib_after"] or [])
            e["heat_before"] = Markup(token_heatmap_html(e["tokens"], e["contrib_before"], e["key_before"] or (), scale))
            e["heat_after"] = Markup(token_heatmap_html(e["tokens"], e["contrib_after"], e["key_after"] or (), scale))
    return env.get_template("audit.html.j2").render(v=v, heatmap_css=Markup(HEATMAP_CSS))
