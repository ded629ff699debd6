"""The `unpact` command. It parses arguments, calls one stage, prints; nothing imports it."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from pathlib import Path

from .errors import UnpactError


def _study_config(args):
    from .config import load_config

    return load_config(getattr(args, "config", None))


def _first_group(args):
    """The study config's first model × benchmark × seed, for commands that work on one model."""
    cfg = _study_config(args)
    return cfg.group(cfg.models[0], cfg.benchmarks[0], cfg.seeds[0])


def _out_dir(flag: str, path: Path) -> Path:
    """Refuse an output folder that is an existing file before any work, not after it."""
    if path.exists() and not path.is_dir():
        raise UnpactError(f"{flag} {path}: a file is in the way; pass a folder path")
    return path


def _reporter(args):
    from .study import Reporter

    return Reporter(quiet=getattr(args, "quiet", False))


def _prepare_benchmark(args):
    """The study's first model settings and first benchmark's splits, for `prepare`, and a phrase naming
    that benchmark. A pretrained first model is refused: there is nothing of it for `prepare` to train."""
    from dataclasses import asdict

    from .data import builtin
    from .data.benchmarks import load_benchmark

    grid = _study_config(args)
    model, bench = grid.models[0], grid.benchmarks[0]
    if model.finetune is not None:
        raise UnpactError(f"`prepare` trains the built-in model only; the study's first model ({model.name}) is "
                          f"{model.path} taught the benchmark by its finetune: block, which `unpact run` does first "
                          "(into the run's groups/MODEL__BENCHMARK/model and gold)")
    if model.path is not None:
        raise UnpactError(f"`prepare` trains the built-in model only, and the study's first model "
                          f"({model.name}) is a pretrained folder ({model.path}); put a builtin: model first")
    cfg = grid.group(model, bench, grid.seeds[0])
    if bench.path is None:
        d = cfg.data
        return cfg, builtin.generate(**asdict(d)), f"benchmark {bench.name} (built-in, seed {d.seed}, {d.n_entities} people)"
    try:  # the loader a study uses, so that the model trains on exactly the items the study would
        loaded = load_benchmark(bench.format, bench.path, name=bench.name, **bench.options)
    except UnpactError as e:
        raise UnpactError(f"benchmark {bench.name}: {e}") from None
    return cfg, loaded.splits, f"benchmark {bench.name} ({bench.format}, {bench.path})"


def cmd_prepare(args) -> None:
    from .data import SPLITS, builtin
    from .models.builtin import prepare_builtin

    cfg, splits, which = _prepare_benchmark(args)
    excluded = sorted(set(args.exclude or []))
    items = [it for s in SPLITS if s not in excluded for it in splits[s]]
    with _reporter(args).bar("training built-in model (epochs)", cfg.model.max_epochs) as bar:
        # an excluded split's text still shapes the tokenizer: the gold model shares the original's
        info, reused = prepare_builtin(items, args.out, cfg.model, bar,
                                       tokenizer_items=[it for s in SPLITS for it in splits[s]] if excluded else None,
                                       margin=cfg.generation.margin)
    builtin.save(splits, args.out / "data")  # every split: the gold model is evaluated on forget too
    without = f" (never trained on: {', '.join(excluded)})" if excluded else ""
    print(f"{'reused' if reused else 'prepared'} {args.out} on {which}: {info['parameters']:,} parameters, "
          f"greedy accuracy {info['accuracy']:.1%} on its {info['n_items']} training items{without}, "
          f"{info['train_seconds']} s to train; benchmark in {args.out / 'data'}")


def cmd_attribute(args) -> None:
    from rich.console import Console

    from .attribution import ABLATIONS, FEATURE_KINDS, METHODS, attribute, key_tokens, track

    for flag, value, allowed in (("--method", args.method, METHODS), ("--ablation", args.ablation, ABLATIONS),
                                 ("--features", args.features, FEATURE_KINDS)):
        if value not in allowed:  # checked before any model is loaded
            raise UnpactError(f"{flag} {value!r} is not one of {', '.join(allowed)}")
    if args.steps < 1:
        raise UnpactError(f"--steps {args.steps}: integrated gradients needs at least 1 step")
    if not 0 <= args.alpha < 1:
        raise UnpactError(f"--alpha {args.alpha}: use a value in [0, 1), the share of the positive contribution "
                          "a KeyToken must exceed")
    if args.beta < 0:
        raise UnpactError(f"--beta {args.beta}: use an integer ≥ 0, the positive-token count below which all are key")
    if not args.prompt.strip() or not args.answer.strip():
        raise UnpactError("--prompt and --answer must be non-empty")
    from .models import load_model, prompt_format
    from .models.client import is_served
    from .report import token_heatmap_text
    from .report.heatmap import shared_scale
    from .scoring import Scorer

    def run(model_dir):
        if is_served(model_dir):
            return attribute_served(model_dir)
        model, tok = load_model(model_dir, trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
        if args.baseline_id is not None and not 0 <= args.baseline_id < len(tok):
            raise UnpactError(f"--baseline-id {args.baseline_id}: not a token id of {model_dir}'s tokenizer; "
                              f"use 0 to {len(tok) - 1}, or leave it out for the pad token")
        scorer = Scorer(model, tok, prompt_format(tok))
        try:
            (attr,) = attribute(scorer, [args.prompt], [args.answer], args.method, ablation=args.ablation,
                                features=args.features, baseline_id=args.baseline_id, steps=args.steps)
        except UnpactError as e:  # e.g. past the context length: say which model's context
            raise UnpactError(f"{model_dir}: {e}") from None
        return attr

    def attribute_served(url):
        from .attribution import loo_attributions
        from .study.audit import template_tokenizer

        if (args.method, args.ablation) != ("loo", "delete"):
            raise UnpactError(f"{url} is a served model: only --method loo with --ablation delete works through its "
                              "log-probs (gradients need the weights; replace and mask need token ids and attention)")
        scorer = _served(args, url, template_tokenizer(args.template, args.model, args.compare or args.model))
        (attr,) = loo_attributions(scorer, [args.prompt], [args.answer], features=args.features)
        return attr

    attrs = [run(args.model)] + ([run(args.compare)] if args.compare else [])
    keys = [key_tokens(a.contributions, args.alpha, args.beta) for a in attrs]
    if len(attrs) == 2 and len(attrs[0].contributions) != len(attrs[1].contributions):
        raise UnpactError(f"{args.model} and {args.compare} tokenize the prompt differently; "
                          "--compare needs models that share a tokenizer")
    tracking = track(attrs[0].contributions, attrs[1].contributions, args.alpha, args.beta) if args.compare else None
    default = (args.method, args.ablation, args.features, args.baseline_id) == ("loo", "delete", "tokens", None)

    def rows(a, key):
        return [{"token": t, "contribution": float(c), "key": i in key}
                for i, (t, c) in enumerate(zip(a.labels, a.contributions, strict=True))]

    if args.json:
        if default and tracking is None:  # the original output format
            print(json.dumps(rows(attrs[0], set(keys[0])), indent=2))
            return
        views = [{**a.to_dict(), "rows": rows(a, set(k)), "key": k} for a, k in zip(attrs, keys, strict=True)]
        out = views[0] if tracking is None else {"before": views[0], "after": views[1], "tracking": tracking}
        print(json.dumps(out, indent=2))
        return
    console = Console()
    scale = shared_scale(*(a.contributions.tolist() for a in attrs))
    for where, attr, key in zip((str(args.model), str(args.compare)), attrs, keys, strict=False):
        what = "LP(x, y)" if attr.target == "mean" else "summed log-prob"
        console.print(f"[bold]{where}[/bold]  method={attr.method}  {what} = {attr.lp:.4f}")
        console.print(token_heatmap_text(attr.labels, attr.contributions.tolist(), key, scale=scale))
        for t, c in zip(attr.labels, attr.contributions, strict=True):
            console.print(f"  {t!r:>16} {c:+.4f}")
        if attr.completeness_gap is not None:
            rel = "n/a" if attr.relative_gap is None else f"{attr.relative_gap:.1%}"
            console.print(f"completeness gap |ΣIG − (F(x) − F(b))| = {attr.completeness_gap:.4g} ({rel} relative)")
        console.print(f"KeyTokens (α={args.alpha}, β={args.beta}): {[attr.labels[i] for i in key]}")
    if tracking is not None:
        console.print("tracking (first → second): " + ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in tracking.items()))


def _load_splits(model_dir: Path, data: Path | None):
    from .data import builtin, load_items

    folder = data or (model_dir / "data")
    if data is None and not folder.is_dir():
        return builtin.generate()
    if not folder.is_dir():
        raise UnpactError(f"--data {folder}: folder not found; pass a folder holding forget.jsonl and retain.jsonl")
    return {s: load_items(folder / f"{s}.jsonl") for s in ("forget", "retain")}


def _hparams(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise UnpactError(f"--set {pair!r}: expected NAME=NUMBER, e.g. --set alpha=2")
        if not math.isfinite(out[name.strip()]):
            raise UnpactError(f"--set {pair!r}: the value must be a finite number")
    return out


def _check_training_flags(args) -> None:
    if args.epochs < 1:
        raise UnpactError(f"--epochs {args.epochs}: use at least 1 epoch")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UnpactError(f"--lr {args.lr}: use a positive learning rate, e.g. --lr 3e-4")
    if args.lora_rank < 0:
        raise UnpactError(f"--lora-rank {args.lora_rank}: use 0 (no LoRA) or a positive rank")


def _check_context(splits, fmt, model, where: str) -> None:
    """Every item must fit the model's context; training would otherwise run past the position range
    (an error or, with rotary positions, silent garbage) long after loading."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if not limit:
        return
    for split in ("forget", "retain"):
        for it in splits[split]:
            n = len(fmt.encode(it.question).ids) + len(fmt.encode_answer(it.answer, eos=True))
            if n > limit:
                raise UnpactError(f"{where}{split} item '{it.id}': question and answer are {n} tokens, past the "
                                  f"model's context of {limit}; shorten the item or drop it")


def cmd_unlearn(args) -> None:
    from . import distributed
    from .io import write_json
    from .models import load_model, prompt_format
    from .models.loading import require_weights
    from .unlearn import UnlearnConfig, get_method, unlearn
    from .unlearn.methods.base import check_hparams

    require_weights(args.model)
    # fail on an unknown name or a bad hyper-parameter before loading anything
    hparams = check_hparams(type(get_method(args.method)), _hparams(args.set or []), "--set ")
    _check_training_flags(args)
    _out_dir("--out", args.out)
    splits = _load_splits(Path(args.model), args.data)
    model, tok = load_model(args.model, trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle,
                            device=distributed.device())
    _check_context(splits, prompt_format(tok), model, f"{args.data}: " if args.data else "")
    cfg = UnlearnConfig(method=args.method, epochs=args.epochs, lr=args.lr, seed=args.seed,
                        lora_rank=args.lora_rank, hparams=hparams)
    steps = cfg.epochs * -(-len(splits["forget"]) // cfg.batch_size)
    with _reporter(args).bar(f"{cfg.method}: unlearning", steps) as bar:
        model, logs = unlearn(model, tok, prompt_format(tok), splits["forget"], splits["retain"], cfg, bar,
                              checkpoint_dir=args.out, resume=args.resume)

    def save() -> None:  # once, by the main process, when several run (accelerate launch)
        model.save_pretrained(args.out, safe_serialization=True)
        tok.save_pretrained(args.out)

    distributed.main_only(save)
    write_json(args.out / "unlearn.json", logs)
    resumed = f", resumed at step {logs['resumed_from_step']}" if logs["resumed_from_step"] else ""
    print(f"unlearned model ({logs['method']}, {logs['steps']} steps{resumed}, {logs['seconds']} s) saved to {args.out}")


def cmd_run(args) -> None:
    cfg = _study_config(args)  # before the study stack is imported: a config error shows at once
    from .report.console import print_summary
    from .study import Grid

    out = _out_dir("--out", args.out or Path("runs") / cfg.name)
    grid = Grid(cfg, out, _reporter(args), profile=args.profile)
    if args.dry_run:
        status = grid.status()
        for cell, done in status:
            print(f"{'done ' if done else 'to do'}  {cell.id}")
        n_done = sum(done for _, done in status)
        from .models import hub

        for line in hub.summary():
            print(f"hub    {line}")
        print(f"{len(status)} cells in {out}: {n_done} done, {len(status) - n_done} to run")
        return
    metrics = grid.run()
    print_summary(metrics)
    print(f"report: {out / 'report.html'}   metrics: {out / 'metrics.json'}   records: {out / 'records.jsonl'}   "
          f"table: unpact results {out}")


def cmd_tune(args) -> None:
    cfg = _study_config(args)
    from .study.tune import percent, tune

    out = _out_dir("--out", args.out or Path("runs") / f"{cfg.name}-tune")
    summary = tune(cfg, out, _reporter(args))
    print(summary["protocol"])
    for name, m in summary["methods"].items():
        run = m["runs"][m["chosen"]]
        print(f"{name:11s} lr {m['lr']:.3g}  {m['hparams']}  forget efficacy {percent(run['forget_efficacy'])}  "
              f"destructive {percent(run['destructive_rate'])}  ({m['seconds']} s for {len(m['runs'])} runs)")
    print(f"tuned study: unpact run {out / 'tuned.yaml'}   details: {out / 'tune.json'}")


def cmd_results(args) -> None:
    from .io import read_json
    from .report.results import print_results, results_frame, write_results

    path = args.run / "metrics.json"
    if not path.is_file():
        raise UnpactError(f"{path} not found; point `unpact results` at a run directory made by `unpact run`")
    try:
        metrics = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:  # hand-edited, or copied mid-write
        raise UnpactError(f"{path}: not valid JSON ({e}); rerun `unpact run` on its config to rewrite it") from None
    frame = results_frame(metrics)
    print_results(frame)
    if args.attacks:
        from .report.attack_matrix import print_attack_matrix

        timings = args.run / "timings.json"
        print_attack_matrix(metrics, read_json(timings) if timings.is_file() else None)
    for written in write_results(frame, args.csv or args.run / "results.csv",
                                 None if args.no_parquet else args.parquet or args.run / "results.parquet"):
        print(f"wrote {written}")


def cmd_recover(args) -> None:
    from .data import SPLITS, load_items
    from .report.console import print_summary
    from .study import Study

    cfg = _first_group(args)
    if args.attacks is not None:
        cfg.recovery.attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
        from .config import validate

        validate(cfg)
    _out_dir("--out", args.out)
    data = args.data or (Path(args.original) / "data")
    if not data.is_dir():
        raise UnpactError(f"{data}: data folder not found; pass --data, a folder holding forget.jsonl, "
                          "retain.jsonl and utility.jsonl")
    splits = {s: load_items(data / f"{s}.jsonl") for s in SPLITS}
    unlearned = {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        unlearned[name if sep else Path(spec).name] = path if sep else spec
    study = Study(cfg, args.out, _reporter(args), model_dir=args.original)
    if args.gold is not None:  # the attacks' control, as in a study (else: never-known retain items)
        from .models.hub import is_hub
        from .models.registry import resolve_model

        study.gold_dir = resolve_model(args.gold) if is_hub(args.gold) else Path(args.gold)
    metrics = study.audit(splits, unlearned)
    print_summary(metrics)
    print(f"report: {args.out / 'report.html'}   metrics: {args.out / 'metrics.json'}")


def _served(args, url: str, template):
    """A served model's scorer from the command's --concurrency/--timeout/--retries/--api-key-env/--bos-text."""
    from .models.served import served_scorer

    return served_scorer(url, template=template, **_served_options(args))


def _served_options(args) -> dict:
    return {"concurrency": args.concurrency, "timeout": args.timeout, "retries": args.retries,
            "key_env": args.api_key_env, "bos_text": args.bos_text}


def cmd_audit(args) -> None:
    from .study.audit import DEFAULT_ATTACKS, run_audit

    cfg = _first_group(args)
    cfg.recovery.attacks = [a.strip() for a in (args.attacks or ",".join(DEFAULT_ATTACKS)).split(",") if a.strip()]
    _out_dir("--out", args.out)
    v = run_audit(cfg, args.out, args.original, args.unlearned, args.forget, args.retain, args.utility,
                  template=args.template, served=_served_options(args), reporter=_reporter(args),
                  gold=args.gold)
    print(f"verdict: {v['quadrant']} — {v['verdict']}")
    print(f"audit: {args.out / 'audit.html'}   verdict: {args.out / 'verdict.json'}   "
          f"full report: {args.out / 'report.html'}")


def _served_flags(s: argparse.ArgumentParser) -> None:
    """Options of commands that take a served model (an http(s) URL ending in /v1) for --model."""
    s.add_argument("--template", metavar="MODEL",
                   help="served models: a local model folder or known name whose chat template (and BOS/EOS text) "
                        "the served model uses (default: the local model of the pair; plain Q/A format if none)")
    s.add_argument("--api-key-env", default="UNPACT_API_KEY", metavar="NAME",
                   help="environment variable holding the served model's API key (default UNPACT_API_KEY)")
    s.add_argument("--concurrency", type=int, default=4, help="served models: requests in flight at once (default 4)")
    s.add_argument("--timeout", type=float, default=120.0, help="served models: seconds per request (default 120)")
    s.add_argument("--retries", type=int, default=4,
                   help="served models: retries with backoff on connection errors, 429 and 5xx (default 4)")
    s.add_argument("--bos-text", default=None,
                   help="served models: text every prompt starts with (default: the template's BOS token text)")


def cmd_report(args) -> None:
    from .report import render_report

    print(f"wrote {render_report(args.run)}")


def cmd_models(args) -> None:
    from .models.registry import KNOWN, available_models, ensure_converted

    if args.prepare:
        for name in args.prepare:
            if name not in KNOWN:
                raise UnpactError(f"{name!r} is not a known model; choose from {', '.join(KNOWN)}")
            print(f"{name}: {ensure_converted(KNOWN[name])}")
        return
    print("built-in   the ~1M-parameter Llama trained by `unpact prepare` on the built-in benchmark "
          "(any model folder works too, --model DIR, and any Hugging Face model, --model hf://ORG/NAME)")
    for m in available_models():
        state = "ready" if m["converted"] else "installed, converted on first use" if m["installed"] else \
            f"not installed: {m['install']}"
        print(f"{m['name']:12s} {m['description']}  [{state}]  {m['path'] if m['converted'] else ''}".rstrip())


def cmd_methods(args) -> None:
    from .unlearn import METHODS
    from .unlearn.methods.base import hparam_fields

    for name, cls in METHODS.items():
        defaults = ", ".join(f"{k}={v:g}" for k, v in cls.defaults.items()) or "no hyper-parameters"
        print(f"{name:11s} {cls.description}  [{defaults}]")
        print(f"{'':11s} {cls.reference}")
        for f, tp in hparam_fields(cls.Hparams):
            print(f"{'':12s}{f.name + ' = ' + format(f.default, 'g'):18s} {tp.__name__:5s} in {str(f.metadata['range']):10s} "
                  f"{f.metadata['help']}")


def cmd_attacks(args) -> None:
    import dataclasses

    from .recovery import ATTACKS

    for name, attack in ATTACKS.items():
        kind = ("weight attack" if attack.changes_weights else f"white-box: {attack.needs}" if attack.needs_weights
                else "prompt attack")
        when = "always runs" if attack.always else "default" if attack.default else "on request"
        print(f"{name:12s} {attack.help}  [{kind}; channel {attack.channel}; {when}; control: {attack.control}]")
        for f in dataclasses.fields(attack.Settings):
            print(f"{'':12s}   recovery.{attack.config_prefix()}{f.name} = {f.default if f.default_factory is dataclasses.MISSING else f.default_factory()!r}: {f.metadata.get('help', '')}")


class _Registry:
    """The names (or the value) of a registry constant, read only when help is printed: most registries
    import torch, which `unpact --help` and a failed parse should not wait for. ``constant`` may be
    dotted and end in a method, called with no arguments (``ATTACKS.selectable``)."""

    def __init__(self, module: str, constant: str) -> None:
        self.module, self.constant = module, constant

    def __str__(self) -> str:
        from importlib import import_module

        value = import_module(self.module, __package__)
        for name in self.constant.split("."):
            value = getattr(value, name)
        value = value() if callable(value) else value
        return str(value) if isinstance(value, int | float | str) else ", ".join(map(str, value))


def _lists(action: argparse.Action, module: str, **constants: str) -> argparse.Action:
    """Let ``action``'s help name registry constants: ``_lists(a, ".unlearn", methods="METHODS")`` fills
    ``%(methods)s`` (argparse expands help from the action's attributes)."""
    for key, constant in constants.items():
        setattr(action, key, _Registry(module, constant))
    return action


def _quiet(s: argparse.ArgumentParser) -> None:
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def _trust_remote_code(s: argparse.ArgumentParser) -> None:
    s.add_argument("--trust-remote-code", action="store_true",
                   help="run the Python code a model folder ships with (its config names custom classes); "
                        "only for folders you trust")


def _allow_pickle(s: argparse.ArgumentParser) -> None:
    s.add_argument("--allow-pickle", action="store_true",
                   help="load a model folder that has only a pickle checkpoint (pytorch_model.bin), tensors only")


def _run_options(s: argparse.ArgumentParser) -> None:
    """What `demo` and `run` share: both run a study config through `cmd_run`."""
    s.add_argument("--dry-run", action="store_true", help="list the cells and which are done; run nothing")
    s.add_argument("--profile", action="store_true",
                   help="timings.json also records, per stage, the seconds inside the model and the tokens it was "
                        "given (a little slower)")
    _quiet(s)
    _allow_pickle(s)
    s.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    """The `unpact` argument parser: one sub-command per stage, every option with its help line."""
    p = argparse.ArgumentParser(prog="unpact", description="Unlearning, prompt attribution and recovery for causal LMs.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="train the built-in model on a study's benchmark (the built-in one by default)")
    s.add_argument("--out", type=Path, required=True, help="model folder to write (reused if unchanged)")
    s.add_argument("--config", type=Path, help="study YAML whose first model and benchmark to use")
    s.add_argument("--exclude", action="append", choices=("forget", "retain", "utility"),
                   help="train without this split (repeatable); --exclude forget gives the retrained "
                        "gold-standard model that never saw the forget set")
    _quiet(s)
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("attribute", help="contributions of prompt tokens/words to an answer (LOO or gradients)")
    s.add_argument("--model", required=True, help="model folder, known name, Hugging Face model (hf://ORG/NAME[@REVISION]), or served "
                        "model URL (http://HOST:PORT/v1)")
    s.add_argument("--prompt", required=True, help="the question")
    s.add_argument("--answer", required=True, help="the answer whose log-prob is attributed")
    _lists(s.add_argument("--method", default="loo", help="attribution method: %(names)s (default loo)"),
           ".attribution", names="METHODS")
    _lists(s.add_argument("--ablation", default="delete", help="how LOO takes a feature out: %(names)s (default delete)"),
           ".attribution", names="ABLATIONS")
    _lists(s.add_argument("--features", default="tokens",
                          help="what is attributed: %(names)s (default tokens; words keep a word's sub-tokens "
                               "together)"), ".attribution", names="FEATURE_KINDS")
    s.add_argument("--steps", type=int, default=32, help="integrated gradients: Gauss-Legendre steps (default 32)")
    s.add_argument("--baseline-id", type=int, default=None,
                   help="baseline token id for --ablation replace and integrated gradients (default: the pad token)")
    s.add_argument("--compare", metavar="DIR2",
                   help="also attribute under a second model (e.g. after unlearning); print both and the tracking")
    _lists(s.add_argument("--alpha", type=float, default=None,
                          help="KeyTokens: a token is key when it carries more than this share of the positive "
                               "contribution (default %(value)s)"), ".attribution", value="DEFAULT_ALPHA")
    _lists(s.add_argument("--beta", type=int, default=None,
                          help="KeyTokens: below this many positively contributing tokens, all of them are key "
                               "(default %(value)s)"), ".attribution", value="DEFAULT_BETA")
    s.add_argument("--json", action="store_true",
                   help='print [{"token", "contribution", "key"}] (default settings), else the full result as an object')
    _trust_remote_code(s)
    _allow_pickle(s)
    _served_flags(s)
    s.set_defaults(func=cmd_attribute)

    s = sub.add_parser("unlearn", help="unlearn the forget set from a model")
    s.add_argument("--model", required=True, help="model folder to unlearn from (a `prepare` output "
                                                              "or any causal LM folder), a known name, or "
                                                              "hf://ORG/NAME[@REVISION]")
    _lists(s.add_argument("--method", required=True,
                          help="unlearning method: %(names)s (`unpact methods` lists their hyper-parameters)"),
           ".unlearn", names="METHODS")
    s.add_argument("--out", type=Path, required=True,
                   help="folder for the unlearned model, unlearn.json and the resume checkpoint")
    s.add_argument("--data", type=Path, help="folder with forget.jsonl and retain.jsonl (default: MODEL/data)")
    s.add_argument("--epochs", type=int, default=10, help="passes over the forget set (default 10)")
    s.add_argument("--lr", type=float, default=3e-4, help="learning rate (default 3e-4)")
    s.add_argument("--seed", type=int, default=0, help="random seed: batch order and any random initialisation (default 0)")
    s.add_argument("--set", action="append", metavar="NAME=VALUE", help="a method hyper-parameter (repeatable)")
    s.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (needs peft)")
    s.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    _trust_remote_code(s)
    _allow_pickle(s)
    _quiet(s)
    s.set_defaults(func=cmd_unlearn)

    s = sub.add_parser("demo", help="the full unPact study on the built-in benchmark and model (configs/demo.yaml)")
    s.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help="run directory (default runs/demo); rerun to resume")
    s.add_argument("--config", type=Path, help="study YAML (default: the built-in demo, see configs/demo.yaml)")
    _run_options(s)

    s = sub.add_parser("run", help="run a study: models × benchmarks × seeds × methods from a YAML")
    s.add_argument("config", type=Path, help="study YAML (see configs/demo.yaml, configs/full-example.yaml)")
    s.add_argument("--out", type=Path, help="run directory (default: runs/NAME); rerun to resume")
    _run_options(s)

    s = sub.add_parser("tune", help="tune every method by one protocol on validation forget items (no attacks), "
                                    "then write tuned.yaml for `unpact run`")
    s.add_argument("config", type=Path, help="study YAML; its tune: block sets the protocol (see docs/design.md)")
    s.add_argument("--out", type=Path, help="run directory (default: runs/NAME-tune)")
    _quiet(s)
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("results", help="one row per cell with every metric: print, and write CSV and Parquet")
    s.add_argument("run", type=Path, help="run directory")
    s.add_argument("--csv", type=Path, help="CSV file to write (default: RUN/results.csv)")
    s.add_argument("--parquet", type=Path, help="Parquet file to write (default: RUN/results.parquet)")
    s.add_argument("--no-parquet", action="store_true", help="write only the CSV")
    s.add_argument("--attacks", action="store_true",
                   help="also print every attack × method: calibrated recovery with its 95%% interval, what counts as "
                        "still there, and each attack's seconds per cell")
    s.set_defaults(func=cmd_results)

    s = sub.add_parser("recover", help="attack already-unlearned models against their original")
    s.add_argument("--original", required=True, help="the model before unlearning (folder, known name "
                                                                 "or hf://ORG/NAME[@REVISION])")
    s.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                   help="an unlearned model (repeatable)")
    s.add_argument("--data", type=Path, help="folder with forget/retain/utility.jsonl (default: ORIGINAL/data)")
    _lists(s.add_argument("--attacks", help="comma-separated baseline attacks beside FocusOnKey, from %(names)s "
                                            "(default all)"), ".recovery", names="ATTACKS.selectable")
    s.add_argument("--out", type=Path, default=Path("runs/recover"),
                   help="run directory (default runs/recover); rerun to resume")
    s.add_argument("--config", type=Path, help="study YAML whose recovery/attribution/evaluation sections to use")
    s.add_argument("--gold", metavar="MODEL", help="a model trained without the forget items: every "
                                                             "attack is read against it (default: against the "
                                                             "retain items the original model never answered)")
    _allow_pickle(s)
    _quiet(s)
    s.set_defaults(func=cmd_recover)

    s = sub.add_parser("audit", help="is it really gone? audit an unlearned model (local or served) against its original")
    s.add_argument("--original", required=True, metavar="MODEL",
                   help="the model before unlearning: folder, known name, hf://ORG/NAME[@REVISION], or served URL "
                        "(http://HOST:PORT/v1)")
    s.add_argument("--unlearned", required=True, metavar="MODEL", help="the model said to have forgotten (same forms)")
    s.add_argument("--forget", type=Path, required=True, metavar="JSONL", help='forget items, {"question", "answer"} a line')
    s.add_argument("--retain", type=Path, metavar="JSONL", help="items the unlearned model must still know")
    s.add_argument("--utility", type=Path, metavar="JSONL", help="general-knowledge items it must still know")
    s.add_argument("--gold", metavar="MODEL", help="a model trained without the forget items (folder, known name or hf://ORG/NAME): "
                                                  "every attack is read against it (default: against the retain "
                                                  "items the original model never answered)")
    _lists(s.add_argument("--attacks", help="comma-separated attacks beside FocusOnKey: prompt attacks %(prompt)s "
                                            "(default %(defaults)s), white-box attacks %(weight)s (weights or "
                                            "hidden states; only when both models are local)"), ".study.audit",
           prompt="PROMPT_ATTACKS", weight="WEIGHT_ATTACKS", defaults="DEFAULT_ATTACKS")
    s.add_argument("--out", type=Path, default=Path("runs/audit"), help="run directory (rerun to resume)")
    s.add_argument("--config", type=Path, help="study YAML whose recovery/attribution/evaluation sections to use")
    _served_flags(s)
    _quiet(s)
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("report", help="re-render report.html from a run directory")
    s.add_argument("run", type=Path, help="run directory (holding metrics.json and records.jsonl)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("models", help="list the models unpact can load here by name (--model NAME)")
    _lists(s.add_argument("--prepare", nargs="+", metavar="NAME", help="convert these known models now: %(names)s"),
           ".models.registry", names="KNOWN")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("methods", help="list the unlearning methods")
    s.set_defaults(func=cmd_methods)

    s = sub.add_parser("attacks", help="list the recovery attacks, what they touch, their settings and controls")
    s.set_defaults(func=cmd_attacks)
    return p


def main(argv: list[str] | None = None) -> int:
    # unpact draws its own progress bars; transformers' per-file bars would interleave with them.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        # libraries' tqdm bars too (transformers converting a model wheel's GGUF on first use); tqdm
        # reads this when it is imported, so it is set before anything imports it
        os.environ["TQDM_DISABLE"] = "1"
    from . import distributed

    if not distributed.is_main():  # under accelerate launch every process runs the command; one prints
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    if getattr(args, "alpha", 0) is None or getattr(args, "beta", 0) is None:
        from .attribution import DEFAULT_ALPHA, DEFAULT_BETA

        args.alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
        args.beta = DEFAULT_BETA if args.beta is None else args.beta
    try:
        if getattr(args, "allow_pickle", False):
            from .models.loading import pickle_allowed

            with pickle_allowed():  # the models a study or audit loads deep inside
                args.func(args)
        else:
            args.func(args)
    except UnpactError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are saved; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # the machine, not the input: disk full, permissions, a vanished mount
        where = f" ({e.filename})" if e.filename else ""
        fix = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "fix the path or its permissions"
        print(f"error: {e.strerror or e}{where}; {fix} and rerun the same command "
              "(finished stages are kept and reused)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
