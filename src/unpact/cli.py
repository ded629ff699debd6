"""The `unpact` command. It parses arguments, calls one stage, prints; nothing imports it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import UnpactError


def _study_config(args):
    from .config import load_config

    return load_config(getattr(args, "config", None))


def _reporter(args):
    from .study import Reporter

    return Reporter(quiet=getattr(args, "quiet", False))


def cmd_prepare(args) -> None:
    from .data import SPLITS, builtin
    from .models.builtin import prepare_builtin

    cfg = _study_config(args)
    d = cfg.data
    splits = builtin.generate(seed=d.seed, n_entities=d.n_entities, forget_fraction=d.forget_fraction)
    items = [it for s in SPLITS for it in splits[s]]
    with _reporter(args).bar("training built-in model (epochs)", cfg.model.max_epochs) as bar:
        info, reused = prepare_builtin(items, args.out, cfg.model, bar)
    builtin.save(splits, args.out / "data")
    print(f"{'reused' if reused else 'prepared'} {args.out}: {info['parameters']:,} parameters, "
          f"greedy accuracy {info['accuracy']:.1%} on {info['n_items']} items, {info['train_seconds']} s to train; "
          f"benchmark in {args.out / 'data'}")


def cmd_attribute(args) -> None:
    from rich.console import Console

    from .attribution import key_tokens, loo_attributions
    from .models import PlainFormat, load_model
    from .report import token_heatmap_text
    from .scoring import Scorer

    if not args.prompt.strip() or not args.answer.strip():
        raise UnpactError("--prompt and --answer must be non-empty")
    model, tok = load_model(args.model, trust_remote_code=args.trust_remote_code)
    scorer = Scorer(model, tok, PlainFormat(tok))
    (attr,) = loo_attributions(scorer, [args.prompt], [args.answer])
    key = set(key_tokens(attr.contributions, args.alpha, args.beta))
    if args.json:
        print(json.dumps([{"token": t, "contribution": float(c), "key": i in key}
                          for i, (t, c) in enumerate(zip(attr.tokens, attr.contributions, strict=True))], indent=2))
        return
    console = Console()
    console.print(f"LP(x, y) = {attr.lp:.4f}   (mean log-prob of the answer tokens)")
    console.print(token_heatmap_text(attr.tokens, attr.contributions.tolist(), sorted(key)))
    for t, c in zip(attr.tokens, attr.contributions, strict=True):
        console.print(f"  {t!r:>16} {c:+.4f}")
    console.print(f"KeyTokens (α={args.alpha}, β={args.beta}): {[attr.tokens[i] for i in sorted(key)]}")


def _load_splits(model_dir: Path, data: Path | None):
    from .data import builtin, load_items

    folder = data or (model_dir / "data")
    if data is None and not folder.is_dir():
        return builtin.generate()
    return {s: load_items(folder / f"{s}.jsonl") for s in ("forget", "retain")}


def cmd_unlearn(args) -> None:
    from .models import PlainFormat, load_model
    from .unlearn import UnlearnConfig, get_method, unlearn

    get_method(args.method)  # fail on an unknown name before loading anything
    splits = _load_splits(args.model, args.data)
    model, tok = load_model(args.model, trust_remote_code=args.trust_remote_code)
    cfg = UnlearnConfig(method=args.method, epochs=args.epochs, lr=args.lr, seed=args.seed)
    ui = _reporter(args)
    steps = cfg.epochs * -(-len(splits["forget"]) // cfg.batch_size)
    with ui.bar(f"{cfg.method}: unlearning", steps) as bar:
        logs = unlearn(model, tok, PlainFormat(tok), splits["forget"], splits["retain"], cfg, bar)
    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    from .io import write_json

    write_json(args.out / "unlearn.json", logs)
    print(f"unlearned model ({logs['method']}, {logs['steps']} steps, {logs['seconds']} s) saved to {args.out}")


def cmd_demo(args) -> None:
    from .report.console import print_summary
    from .study import Study

    metrics = Study(_study_config(args), args.out, _reporter(args)).run()
    print_summary(metrics)
    print(f"report: {args.out / 'report.html'}   metrics: {args.out / 'metrics.json'}   "
          f"records: {args.out / 'records.jsonl'}")


def cmd_report(args) -> None:
    from .report import render_report

    print(f"wrote {render_report(args.run)}")


def cmd_methods(args) -> None:
    from .unlearn import METHODS

    for name, cls in METHODS.items():
        defaults = ", ".join(f"{k}={v}" for k, v in cls.defaults.items())
        print(f"{name:10s} {cls.description}  [{defaults}]")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unpact", description="Unlearning, prompt attribution and recovery for causal LMs.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="train the built-in model on the built-in benchmark")
    s.add_argument("--out", type=Path, required=True, help="model folder to write (reused if unchanged)")
    s.add_argument("--config", type=Path, help="study YAML whose data/model sections to use")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("attribute", help="leave-one-out contributions of prompt tokens to an answer")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--prompt", required=True, help="the question")
    s.add_argument("--answer", required=True, help="the answer whose log-prob is attributed")
    s.add_argument("--alpha", type=float, default=None)
    s.add_argument("--beta", type=int, default=None)
    s.add_argument("--json", action="store_true", help='print [{"token", "contribution", "key"}]')
    s.add_argument("--trust-remote-code", action="store_true")
    s.set_defaults(func=cmd_attribute)

    s = sub.add_parser("unlearn", help="unlearn the forget set from a model")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--data", type=Path, help="folder with forget.jsonl and retain.jsonl (default: MODEL/data)")
    s.add_argument("--epochs", type=int, default=10)
    s.add_argument("--lr", type=float, default=3e-4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--trust-remote-code", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_unlearn)

    s = sub.add_parser("demo", help="the full unPact study on the built-in benchmark and model")
    s.add_argument("--out", type=Path, default=Path("runs/demo"))
    s.add_argument("--config", type=Path, help="study YAML (default: built-in defaults, see configs/demo.yaml)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("report", help="re-render report.html from a run directory")
    s.add_argument("run", type=Path)
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("methods", help="list the unlearning methods")
    s.set_defaults(func=cmd_methods)
    return p


def main(argv: list[str] | None = None) -> int:
    # unpact draws its own progress bars; transformers' per-file bars would interleave with them.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    if getattr(args, "alpha", 0) is None or getattr(args, "beta", 0) is None:
        from .attribution import DEFAULT_ALPHA, DEFAULT_BETA

        args.alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
        args.beta = DEFAULT_BETA if args.beta is None else args.beta
    try:
        args.func(args)
    except UnpactError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are saved; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
