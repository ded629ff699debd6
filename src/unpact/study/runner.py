"""The unPact study on the built-in benchmark and model:

    prepare → (per method) unlearn → attribute before/after → recover → evaluate → report

Every stage's result is written atomically into the run directory and reused when the run is
started again with the same settings, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from .. import distributed
from ..attribution import (
    aggregate,
    agreement,
    faithfulness,
    gradient_attributions,
    key_tokens,
    keyword_token_mask,
    loo_attributions,
    penalisation_profile,
    track,
)
from ..config import StudyConfig
from ..data import SPLITS, Item, builtin
from ..data.benchmarks import Benchmark
from ..data.chunks import TextChunk, chunk_texts
from ..data.rewrites import heuristic_keywords
from ..errors import UnpactError
from ..evaluation import (
    correctness,
    destructive_rate,
    forget_efficacy,
    quadrant,
    recovery_rate,
    wilson_interval,
)
from ..evaluation.mia import loss_score, mia_auc, min_k_plus_plus_score, min_k_score, zlib_score
from ..io import read_json, write_atomic, write_json, write_jsonl
from ..models import load_model, prompt_format
from ..models.builtin import prepare_builtin
from ..models.client import is_served
from ..models.registry import resolve_model
from ..recovery import (
    any_correct,
    few_shot_questions,
    focus_on_key,
    keyword_words,
    lowest_contribution_words,
    paraphrase_questions,
    placebo_words,
    quantize_model,
    relearn,
    sample_answers,
)
from ..report import render_report
from ..scoring import Scorer
from ..unlearn import unlearn
from .progress import Reporter
from .standard import muse_raw, standard_metrics, tofu_raw_splits

# Bumped whenever base.json/result.json gain or change fields, so older cached stages are recomputed.
RESULT_SCHEMA = 7


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps([RESULT_SCHEMA, obj], sort_keys=True, default=str).encode()).hexdigest()[:16]


class Study:
    """One run directory and the state shared by its stages."""

    def __init__(self, cfg: StudyConfig, out: str | Path, reporter: Reporter | None = None,
                 model_dir: str | Path | None = None, trust_remote_code: bool = False, served: dict | None = None):
        self.cfg, self.out = cfg, Path(out)
        self.trust_remote_code = trust_remote_code  # only when the study config asks, per model
        # How to reach served models (http(s) URLs in place of model folders): `served_scorer` options,
        # e.g. the local tokenizer whose template describes them. Only audits take URLs.
        self.served = served or {}
        # The retrained gold model (never saw the forget set), when there is one; see `prepare_gold`.
        self.gold_dir: Path | None = None
        self.gold: dict | None = None
        self.ui = reporter or Reporter(quiet=True)
        self.splits: dict[str, list[Item]] = {}
        self.bench: Benchmark | None = None  # what else the benchmark brings: MUSE's ICL, VerbMem, raw text
        # the original model's greedy answers by item id, when `forget_known` already generated them
        self.original_answers: dict[str, str] = {}
        # the original model: a folder, or a URL (kept as a string: Path would fold its "//")
        self.model_dir = model_dir if is_served(model_dir) else Path(model_dir) if model_dir else self.out / "model"

    # -- stages --------------------------------------------------------------------------------

    def prepare(self, bench: Benchmark | None = None, train: bool = True) -> dict:
        """Write the benchmark's items (``bench``, or the generated built-in one) into ``out/data`` and
        prepare (or reuse) the built-in model in ``model_dir``; ``train=False`` uses ``model_dir`` as
        given (a pretrained model). Returns the model's info (parameters, accuracy, train seconds)."""
        d = self.cfg.data
        self.bench = bench or Benchmark("builtin", builtin.generate(seed=d.seed, n_entities=d.n_entities,
                                                                    forget_fraction=d.forget_fraction))
        self.splits = self.bench.splits
        builtin.save(self.splits, self.out / "data")
        if not train:
            return {"path": str(self.model_dir)}
        items = self._all_items()
        with self.ui.bar("prepare built-in model (epochs)", self.cfg.model.max_epochs) as bar:
            info, reused = prepare_builtin(items, self.model_dir, self.cfg.model, bar)
        self.ui.info(f"model: {'reused' if reused else 'trained'} {info['parameters']:,} parameters, "
                     f"greedy accuracy {info['accuracy']:.1%} ({info['train_seconds']} s to train)")
        return info

    def gold_key(self) -> str | None:
        """What the gold model's results depend on (None: no gold model). For a built-in gold model
        its training settings and items determine it, so this is known before it is trained."""
        if self.gold_dir is None:
            return None
        trained = self.cfg.model.key(self._gold_items(), self._all_items()) if self.gold_dir == self.out / "gold" else None
        files = None if trained else self._model_files(self.gold_dir)
        return _digest(["gold", str(self.gold_dir.resolve()), trained, files, self.cfg.evaluation, *self._precision(),
                        [[it.to_dict() for it in items] for items in self.splits.values()]])

    def _gold_items(self) -> list[Item]:
        return [it for s in SPLITS if s != "forget" for it in self.splits[s]]

    def _all_items(self) -> list[Item]:
        return [it for s in SPLITS for it in self.splits[s]]

    def prepare_gold(self) -> dict | None:
        """The gold model's answers, TOFU raw material and membership AUCs (cached in ``gold.json``);
        a built-in gold model (``out/gold``) is trained first, on every split but forget."""
        if self.gold_dir is None:
            return None
        key, path = self.gold_key(), self.out / "gold.json"
        if path.is_file() and (cached := read_json(path)).get("key") == key:
            self.gold = cached
            return cached
        if self.gold_dir == self.out / "gold":
            with self.ui.bar("gold model: trained without the forget set (epochs)", self.cfg.model.max_epochs) as bar:
                # the original model's tokenizer (trained on every split's text), not a new one
                prepare_builtin(self._gold_items(), self.gold_dir, self.cfg.model, bar, tokenizer_items=self._all_items())
        model, tok = load_model(self.gold_dir, trust_remote_code=self.trust_remote_code, device=distributed.device())
        scorer = self._scorer(model, tok)
        self.gold = {"key": key, "answers": self._answers(scorer), "tofu": tofu_raw_splits(scorer, self.splits),
                     "mia_auc": self._membership(scorer), "muse": self._muse(scorer)}
        write_json(path, self.gold)
        return self.gold

    def open(self, ref: str | Path):
        """A scorer for a model folder or a served model's URL (`unpact.models.served`)."""
        if is_served(ref):
            from ..models.served import served_scorer

            return served_scorer(str(ref), **self.served)
        model, tok = load_model(ref, trust_remote_code=self.trust_remote_code, device=distributed.device())
        return self._scorer(model, tok)

    def _scorer(self, model, tokenizer) -> Scorer:
        """The one scoring engine over ``model``, cast in place to the study's ``dtype`` first (if set)."""
        if self.cfg.dtype:
            model.to(getattr(torch, self.cfg.dtype))
        return Scorer(model, tokenizer, prompt_format(tokenizer), batch_size=self.cfg.batch_size,
                      generate_batch_size=self.cfg.generate_batch_size)

    def _muse(self, scorer: Scorer) -> dict | None:
        """MUSE's KnowMem and VerbMem generations, where the benchmark has ICL examples or VerbMem pairs."""
        b = self.bench
        return muse_raw(scorer, self.splits, b.icl, b.verbmem) if b and (b.icl or b.verbmem) else None

    def _extras(self) -> list:
        """The benchmark's evaluation material besides the splits (MUSE's ICL examples and VerbMem)."""
        b = self.bench
        return [] if b is None or not (b.icl or b.verbmem) else [[it.to_dict() for it in b.icl], b.verbmem]

    def training_sets(self, fmt) -> tuple[list, list]:
        """What the methods unlearn and keep: the forget and retain items, or with ``raw_text`` the
        windows of the benchmark's raw forget and retain corpora (`chunk_texts`)."""
        r = self.cfg.raw_text
        if r is None:
            return self.splits["forget"], self.splits["retain"]
        corpora = self.bench.raw if self.bench else {}

        def windows(name: str) -> list[TextChunk]:
            if not corpora.get(name):
                raise UnpactError(f"raw_text: the benchmark has no raw corpus '{name}' (it has: "
                                  f"{', '.join(sorted(corpora)) or 'none'}); name one of those in raw_text.forget/retain")
            return chunk_texts(fmt.encode_text, corpora[name], name, r.chunk_tokens, r.context_tokens)

        return windows(r.forget), windows(r.retain)

    def _raw_digest(self) -> str | None:
        r = self.cfg.raw_text
        if r is None or self.bench is None:
            return None
        return _digest([r, self.bench.raw.get(r.forget), self.bench.raw.get(r.retain)])

    def _answers(self, scorer: Scorer, known: dict[str, str] | None = None) -> dict[str, dict]:
        """Greedy answers and correctness per split: {split: {"answers": [...], "correct": [...]}}.
        ``known``: answers this model already gave, by item id (not generated again)."""
        known = known or {}
        out = {}
        for split in SPLITS:
            items = self.splits[split]
            generated = iter(scorer.generate([it.question for it in items if it.id not in known]))
            answers = [known[it.id] if it.id in known else next(generated) for it in items]
            ok = correctness(answers, [it.answer for it in items], self.cfg.evaluation.rouge_threshold)
            out[split] = {"answers": answers, "correct": ok.tolist()}
            # Per answer token (EOS included, as trained): the penalisation profile's raw material.
            ids = [keyword_token_mask(scorer.fmt, it.answer)[0] for it in items]
            per_token = scorer.score_ids([scorer.fmt.encode(it.question).ids for it in items], ids).per_token
            out[split]["token_logprobs"] = [t.tolist() for t in per_token]
        return out

    @staticmethod
    def _loo(scorer: Scorer, items: list[Item]) -> list:
        """LOO attributions of the gold answers of ``items``."""
        return loo_attributions(scorer, [it.question for it in items], [it.answer for it in items])

    def _rows(self, attributions: list) -> list[dict]:
        """Attributions as stored: contributions, KeyTokens and the question words holding them."""
        a = self.cfg.attribution
        rows = []
        for attr in attributions:
            key = key_tokens(attr.contributions, a.alpha, a.beta)
            rows.append({"tokens": attr.tokens, "contributions": attr.contributions.tolist(), "lp": attr.lp,
                         "key": key, "keywords": keyword_words(attr, key)})
        return rows

    def _model_files(self, folder: str | Path | None = None) -> list:
        """(name, size, modification time) of a model's files: a retrained model changes them
        (nothing for a served model: what is behind a URL cannot be seen, only its address)."""
        folder = folder or self.model_dir
        if is_served(folder):
            return []
        folder = resolve_model(folder)
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*")
                      if p.is_file() and p.suffix in (".safetensors", ".json"))

    def _precision(self) -> list[str]:
        """The dtype as a part of the stage keys; empty when unset, so runs cached before the
        setting existed are reused."""
        return [self.cfg.dtype] if self.cfg.dtype else []

    def base_key(self) -> str:
        """What the original model's answers and attributions depend on: settings, items, model files."""
        return _digest([self.cfg.attribution, self.cfg.evaluation, *self._precision(), _where(self.model_dir),
                        self._model_files(), [[it.to_dict() for it in self.splits[s]] for s in SPLITS],
                        self._extras()])

    def forget_known(self, n: int, seed: int, compute: bool = True) -> bool:
        """Re-split the forget and retain items: ``n`` forget items drawn (seeded) from those the
        original model answers correctly, every other one retain; utility stays. The selection is
        cached in ``data/forget_known.json``; with ``compute=False`` only a cached one is used.
        Returns whether the splits were re-split."""
        pool = self.splits["forget"] + self.splits["retain"]
        path = self.out / "data" / "forget_known.json"
        key = _digest([n, seed, self.cfg.evaluation.rouge_threshold, *self._precision(), self._model_files(),
                       [it.to_dict() for it in pool]])
        cached = read_json(path) if path.is_file() else {}
        if cached.get("key") == key:
            chosen = set(cached["forget"])
            self.original_answers = cached.get("answers", {})
        elif not compute:
            return False
        else:
            model, tok = load_model(self.model_dir, trust_remote_code=self.trust_remote_code, device=distributed.device())
            answers = self._scorer(model, tok).generate([it.question for it in pool])
            ok = correctness(answers, [it.answer for it in pool], self.cfg.evaluation.rouge_threshold)
            known = [it.id for it, k in zip(pool, ok, strict=True) if k]
            if len(known) < n:
                raise UnpactError(f"forget_known: {n} requested but {self.model_dir} answers only {len(known)} of "
                                  f"the {len(pool)} forget/retain items correctly; use forget_known ≤ {len(known)}")
            chosen = set(random.Random(seed).sample(known, n))
            # the answers are kept for the original model's stage, which would generate them again
            self.original_answers = {it.id: a for it, a in zip(pool, answers, strict=True)}
            write_json(path, {"key": key, "forget": sorted(chosen), "known": known, "answers": self.original_answers})
            self.ui.info(f"forget_known: the original model answers {len(known)} of {len(pool)} items; "
                         f"{n} of them are the forget set")
        self.splits = {**self.splits,  # utility (and a holdout) stay as they are
                       "forget": [replace(it, split="forget") for it in pool if it.id in chosen],
                       "retain": [replace(it, split="retain") for it in pool if it.id not in chosen]}
        if compute:
            builtin.save(self.splits, self.out / "data")
        return True

    def method_key(self, index: int, base_key: str) -> str:
        """What one method's result depends on: the base, its settings, the attacks and the seed."""
        return _digest([base_key, asdict(self.cfg.methods[index]), self.cfg.recovery, self.cfg.evaluation,
                        self.cfg.seed, self.gold_key(), self._raw_digest()])

    def base_cached(self) -> bool:
        """Whether `base` would reuse a finished result."""
        path = self.out / "base.json"
        return path.is_file() and read_json(path).get("key") == self.base_key()

    def base(self) -> dict:
        """Original model: answers on every split and attributions (oracle KeyTokens) on every item."""
        path = self.out / "base.json"
        key = self.base_key()
        if path.is_file() and (cached := read_json(path)).get("key") == key:
            return cached
        scorer = self.open(self.model_dir)
        with self.ui.bar("original model: answers, attributions per split, quality", len(SPLITS) + 2) as bar:
            answers = self._answers(scorer, self.original_answers)
            bar(1, len(SPLITS) + 2)
            loo = {}
            for i, s in enumerate(SPLITS, 2):
                loo[s] = self._loo(scorer, self.splits[s])
                bar(i, len(SPLITS) + 2)
            quality = self._attribution_quality(scorer, loo["forget"])
            bar(len(SPLITS) + 2, len(SPLITS) + 2)
        attributions = {s: self._rows(loo[s]) for s in SPLITS}
        roles = {s: [keyword_token_mask(scorer.fmt, it.answer) for it in self.splits[s]] for s in SPLITS}
        answer_tokens = {s: [{"tokens": scorer.fmt.token_strings(ids), "keyword": mask.tolist()} for ids, mask in r]
                         for s, r in roles.items()}
        result = {"key": key, "answers": answers, "attributions": attributions, "answer_tokens": answer_tokens,
                  "attribution_quality": quality, "mia_auc": self._membership(scorer),
                  "tofu": tofu_raw_splits(scorer, self.splits), "muse": self._muse(scorer)}
        write_json(path, result)
        return result

    def _membership(self, scorer: Scorer) -> dict[str, float] | None:
        """ROC AUC of each membership-inference attack telling the forget items (members: trained on,
        then unlearned) from the holdout items (never trained on), scored on the gold answers given
        the question. 0.5: indistinguishable, as for a model that never saw the forget set. None when
        the benchmark has no holdout split."""
        if not self.splits.get("holdout"):
            return None
        fmt, scores = scorer.fmt, {}
        full = not getattr(scorer, "served", False)  # Min-K%++ needs the whole next-token distribution
        for split in ("forget", "holdout"):
            items = self.splits[split]
            s = scorer.score_ids([fmt.encode(it.question).ids for it in items],
                                 [fmt.encode_answer(it.answer) for it in items], distribution=full)
            scores[split] = {
                "loss": [loss_score(lp) for lp in s.per_token],
                "zlib": [zlib_score(lp, it.answer) for lp, it in zip(s.per_token, items, strict=True)],
                "min_k": [min_k_score(lp) for lp in s.per_token],
            }
            if full:
                scores[split]["min_k++"] = [min_k_plus_plus_score(lp, m, sd)
                                            for lp, m, sd in zip(s.per_token, s.mu, s.sigma, strict=True)]
        return {name: mia_auc(scores["forget"][name], scores["holdout"][name]) for name in scores["forget"]}

    def _attribution_quality(self, scorer: Scorer, loo_forget: list) -> dict:
        """Which attribution to believe on this model: ERASER comprehensiveness/sufficiency of LOO
        (``loo_forget``, already computed) and integrated gradients on the forget items, IG's
        completeness gap, and their agreement (τ). None for a served model (IG needs the weights)."""
        if getattr(scorer, "served", False):
            return None
        items = self.splits["forget"]
        qs, golds = [it.question for it in items], [it.answer for it in items]
        results = {"loo": loo_forget,
                   "integrated_gradients": gradient_attributions(scorer, qs, golds, method="integrated_gradients")}
        out: dict = {}
        for name, attrs in results.items():
            rows = faithfulness(scorer, attrs, curve=False)
            out[name] = {k: float(np.mean([r[k] for r in rows])) for k in ("comprehensiveness", "sufficiency")}
        gaps = [a.relative_gap for a in results["integrated_gradients"] if a.relative_gap is not None]
        out["integrated_gradients"]["relative_gap_median"] = float(np.median(gaps)) if gaps else None
        taus = [t for t in agreement(results["loo"], results["integrated_gradients"]) if t is not None]
        out["kendall_tau_loo_ig"] = float(np.mean(taus)) if taus else None
        return out

    def run_method(self, index: int, base: dict, folder: Path | None = None, keep_model: bool = True) -> dict:
        """Unlearn with one method, then evaluate, attribute, attack; cached in ``folder``
        (default ``methods/NAME``) as ``result.json``, with the unlearned model in ``model/`` when
        ``keep_model``. Training checkpoints in ``folder`` let an interrupted run resume."""
        mcfg = self.cfg.methods[index]
        folder = folder or self.out / "methods" / mcfg.method
        key = self.method_key(index, base["key"])
        if (folder / "result.json").is_file() and (cached := read_json(folder / "result.json")).get("key") == key:
            self.ui.info(f"{mcfg.method}: reusing finished result")
            return cached
        # A checkpoint resumes only the run it was made for: the trainer checks the method settings,
        # this marker also the original model, data and attacks (a retrained base must start over).
        marker = folder / "run.key"
        if marker.is_file() and marker.read_text(encoding="utf-8") != key:
            distributed.main_only(lambda: shutil.rmtree(folder / "checkpoint", ignore_errors=True))
        write_atomic(marker, key)
        model, tok = load_model(self.model_dir, trust_remote_code=self.trust_remote_code, device=distributed.device())
        forget, retain = self.training_sets(prompt_format(tok))
        steps = mcfg.epochs * -(-len(forget) // mcfg.batch_size)
        with self.ui.bar(f"{mcfg.method}: unlearning (steps)", steps) as bar:
            model, train_logs = unlearn(model, tok, prompt_format(tok), forget, retain, mcfg, bar,
                                        checkpoint_dir=folder, resume=True)

        def save_model() -> None:  # once, by the main process, when several run (accelerate launch)
            shutil.rmtree(folder / "model", ignore_errors=True)
            if keep_model:
                tmp = folder / ".model.partial"
                shutil.rmtree(tmp, ignore_errors=True)
                model.save_pretrained(tmp, safe_serialization=True)
                tok.save_pretrained(tmp)
                tmp.rename(folder / "model")

        distributed.main_only(save_model)
        result = self._evaluate(mcfg.method, self._scorer(model, tok), base, key, train_logs, folder)
        distributed.main_only(lambda: shutil.rmtree(folder / "checkpoint", ignore_errors=True))  # superseded
        return result

    def _evaluate(self, name: str, scorer, base: dict, key: str, train_logs: dict, folder: Path) -> dict:
        """Answers, attributions and attacks of an unlearned model; written to ``folder/result.json``."""
        with self.ui.bar(f"{name}: answers, attributions, FocusOnKey, other attacks", 4) as bar:
            answers = self._answers(scorer)
            bar(1, 4)
            attributions = self._rows(self._loo(scorer, self.splits["forget"]))
            bar(2, 4)
            attacks = self._attacks(scorer, base, answers)
            bar(3, 4)
            baselines = self._baseline_attacks(scorer)
            bar(4, 4)
        result = {"key": key, "method": name, "train": train_logs, "answers": answers,
                  "attributions": attributions, "attacks": attacks, "baselines": baselines,
                  "mia_auc": self._membership(scorer), "tofu": tofu_raw_splits(scorer, self.splits),
                  "muse": self._muse(scorer)}
        write_json(folder / "result.json", result)
        return result

    def audit_model(self, name: str, model_dir: str | Path, base: dict) -> dict:
        """Evaluate and attack a model someone else unlearned (no training); cached like a method."""
        folder = self.out / "methods" / name
        key = _digest([base["key"], _where(model_dir), self._model_files(model_dir), self.cfg.recovery,
                       self.cfg.evaluation])
        if (folder / "result.json").is_file() and (cached := read_json(folder / "result.json")).get("key") == key:
            return cached
        return self._evaluate(name, self.open(model_dir), base, key, {}, folder)

    def _keyword_sources(self, scorer: Scorer, base: dict, answers: dict) -> dict[str, list[list[str]]]:
        """Per FocusOnKey source, the keywords of every forget item (see `recovery.focus_on_key`)."""
        a = self.cfg.attribution
        items = self.splits["forget"]
        fmt = scorer.fmt
        oracle = [b["keywords"] for b in base["attributions"]["forget"]]
        # self: the unlearned model attributes its own greedy answer — all a real attacker can do
        own = answers["forget"]["answers"]
        asked = [i for i, ans in enumerate(own) if ans.strip()]
        own_attr = loo_attributions(scorer, [items[i].question for i in asked], [own[i] for i in asked])
        self_kw: list[list[str]] = [[] for _ in items]
        for i, attr in zip(asked, own_attr, strict=True):
            self_kw[i] = keyword_words(attr, key_tokens(attr.contributions, a.alpha, a.beta))
        low = [lowest_contribution_words(it.question, fmt.question_offsets(it.question), b["contributions"],
                                         len(b["key"])) for it, b in zip(items, base["attributions"]["forget"], strict=True)]
        return {
            "focus_on_key": oracle,
            "focus_on_key_self": self_kw,
            "focus_on_key_heuristic": [heuristic_keywords(it.question) for it in items],
            "placebo": [placebo_words(it.question, kw, random.Random(f"{self.cfg.seed}:{it.id}"))
                        for it, kw in zip(items, oracle, strict=True)],
            "placebo_low": low,
        }

    def _attacks(self, scorer: Scorer, base: dict, answers: dict) -> dict:
        """FocusOnKey per style and keyword source (oracle, self, heuristic, two placebos) on the forget
        items; the oracle rewrite also on retain/utility items as the do-no-harm control."""
        out: dict[str, dict] = {}
        sources = self._keyword_sources(scorer, base, answers)
        for style in self.cfg.recovery.styles:
            for source, keywords in sources.items():
                prompts, replies = focus_on_key(scorer, [it.question for it in self.splits["forget"]], keywords, style)
                out[f"{source}:{style}:forget"] = {"prompts": prompts, "answers": replies, "keywords": keywords}
            for split in ("retain", "utility"):
                oracle = [b["keywords"] for b in base["attributions"][split]]
                prompts, replies = focus_on_key(scorer, [it.question for it in self.splits[split]], oracle, style)
                out[f"focus_on_key:{style}:{split}"] = {"prompts": prompts, "answers": replies}
        for name, entry in out.items():
            split = name.rsplit(":", 1)[1]
            entry["correct"] = correctness(entry["answers"], [it.answer for it in self.splits[split]],
                                           self.cfg.evaluation.rouge_threshold).tolist()
        return out

    def _baseline_attacks(self, scorer: Scorer) -> dict:
        """The other known ways of recovering knowledge, on the forget items (DESIGN.md): sampling,
        paraphrased and few-shot prompts (weights untouched), quantisation and relearning (weights changed)."""
        r = self.cfg.recovery
        items, golds = self.splits["forget"], [it.answer for it in self.splits["forget"]]
        out: dict[str, dict] = {}

        def record(name: str, prompts: list[str], answers: list[str], changes_weights: bool) -> None:
            ok = correctness(answers, golds, self.cfg.evaluation.rouge_threshold)
            out[name] = {"prompts": prompts, "answers": answers, "correct": ok.tolist(), "changes_weights": changes_weights}

        questions = [it.question for it in items]
        if "sampling" in r.attacks:
            samples = sample_answers(scorer, questions, n=r.sampling_n, temperature=r.sampling_temperature,
                                     seed=self.cfg.seed)
            hits = any_correct(samples, golds, self.cfg.evaluation.rouge_threshold)
            out["sampling"] = {"prompts": questions, "answers": [next((s for s in ss if s), "") for ss in samples],
                               "samples": samples, "correct": hits.tolist(), "changes_weights": False}
        if "paraphrase" in r.attacks:
            paraphrased = [p or q for p, q in zip(paraphrase_questions(items), questions, strict=True)]
            record("paraphrase", paraphrased, scorer.generate(paraphrased), False)
        if "few_shot" in r.attacks:
            shots = few_shot_questions(items, self.splits["retain"], k=r.few_shot_k, seed=self.cfg.seed)
            record("few_shot", shots, scorer.generate(shots), False)
        for bits in r.quantize_bits if "quantize" in r.attacks else ():
            quantized = self._scorer(quantize_model(scorer.model, bits), scorer.tokenizer)
            record(f"quantize_int{bits}", questions, quantized.generate(questions), True)
        if "relearn" in r.attacks:
            relearned = relearn(scorer.model, scorer.tokenizer, scorer.fmt, self.splits["retain"],
                                steps=r.relearn_steps, lr=r.relearn_lr, seed=self.cfg.seed)
            relearned_scorer = self._scorer(relearned, scorer.tokenizer)
            record("relearn", questions, relearned_scorer.generate(questions), True)
        return out

    # -- metrics and records -------------------------------------------------------------------

    def method_metrics(self, base: dict, res: dict) -> dict:
        """The dilemma rates, tracking aggregates and controls of one method (see DESIGN.md)."""
        ev = self.cfg.evaluation
        cb = {s: np.array(base["answers"][s]["correct"]) for s in SPLITS}
        ca = {s: np.array(res["answers"][s]["correct"]) for s in SPLITS}
        keep_before = np.concatenate([cb["retain"], cb["utility"]])
        keep_after = np.concatenate([ca["retain"], ca["utility"]])
        recovery, interval, excess, control = {}, {}, {}, {}
        forgotten = cb["forget"].astype(bool) & ~ca["forget"].astype(bool)
        for name, entry in res["attacks"].items():
            source, style, split = name.split(":")
            if split != "forget":
                continue
            hit = np.array(entry["correct"], dtype=bool)
            recovery[f"{source}:{style}"] = recovery_rate(cb["forget"], ca["forget"], hit)
            interval[f"{source}:{style}"] = wilson_interval(int((hit & forgotten).sum()), int(forgotten.sum()))
        for name, entry in res.get("baselines", {}).items():
            hit = np.array(entry["correct"], dtype=bool)
            recovery[name] = recovery_rate(cb["forget"], ca["forget"], hit)
            interval[name] = wilson_interval(int((hit & forgotten).sum()), int(forgotten.sum()))
        for attack, r in recovery.items():
            if attack.startswith("focus_on_key"):
                p = recovery["placebo:" + attack.split(":", 1)[1]]
                excess[attack] = None if r is None else r - (p or 0.0)
        known_after = keep_after.astype(bool)
        for style in self.cfg.recovery.styles:
            kept = np.concatenate([np.array(res["attacks"][f"focus_on_key:{style}:{s}"]["correct"])
                                   for s in ("retain", "utility")])
            control[style] = float(kept[known_after].mean()) if known_after.any() else None
        destructive = destructive_rate(keep_before, keep_after)
        best_excess = max((v for v in excess.values() if v is not None), default=None)
        known = cb["forget"].astype(bool)
        tracking_rows = [track(np.array(b["contributions"]), np.array(a["contributions"]),
                               self.cfg.attribution.alpha, self.cfg.attribution.beta)
                         for b, a, k in zip(base["attributions"]["forget"], res["attributions"], known, strict=True) if k]
        return {
            "forget_efficacy": forget_efficacy(cb["forget"], ca["forget"]),
            "n_known": int(known.sum()), "n_forgotten": int((known & ~ca["forget"].astype(bool)).sum()),
            "recovery_rate": recovery, "recovery_ci95": interval, "recovery_excess": excess,
            "rewrite_control": control,
            "mia_auc": res.get("mia_auc"),
            "standard": standard_metrics(res["tofu"], res["answers"], self.splits, res.get("mia_auc"), self.gold,
                                         res.get("muse"), base.get("muse")),
            "destructive_rate": destructive,
            "destructive_rate_by_split": {s: destructive_rate(cb[s], ca[s]) for s in ("retain", "utility")},
            "accuracy": {s: _accuracy(ca[s]) for s in SPLITS},
            "quadrant": quadrant(best_excess, destructive, ev.recovery_threshold, ev.destructive_threshold),
            "penalisation": {s: penalisation_profile(
                [np.array(t) for t in base["answers"][s]["token_logprobs"]],
                [np.array(t) for t in res["answers"][s]["token_logprobs"]],
                [np.array(a["keyword"], dtype=bool) for a in base["answer_tokens"][s]]) for s in SPLITS},
            "tracking": aggregate(tracking_rows),
            # wall-clock times are not metrics (they differ run to run): see `timings`
            "train": {k: res["train"].get(k) for k in ("steps", "final_loss", "trainable_parameters")},
        }

    def records(self, base: dict, res: dict) -> list[dict]:
        """Per-item records of one method: forget items in full, retain/utility answers and outcome."""
        rows = []
        for split in SPLITS:
            for i, it in enumerate(self.splits[split]):
                before_ok = bool(base["answers"][split]["correct"][i])
                after_ok = bool(res["answers"][split]["correct"][i])
                row = {"method": res["method"], "item_id": it.id, "split": split, "question": it.question,
                       "gold": it.answer, "answer_before": base["answers"][split]["answers"][i],
                       "answer_after": res["answers"][split]["answers"][i],
                       "correct_before": before_ok, "correct_after": after_ok,
                       "answer_tokens": base["answer_tokens"][split][i]["tokens"],
                       "answer_keyword": base["answer_tokens"][split][i]["keyword"],
                       "token_delta": [a - b for b, a in zip(base["answers"][split]["token_logprobs"][i],
                                                             res["answers"][split]["token_logprobs"][i], strict=True)]}
                if split != "forget":
                    row["outcome"] = "not_known" if not before_ok else "kept" if after_ok else "destroyed"
                    rows.append(row)
                    continue
                b, a = base["attributions"]["forget"][i], res["attributions"][i]
                t = track(np.array(b["contributions"]), np.array(a["contributions"]),
                          self.cfg.attribution.alpha, self.cfg.attribution.beta)
                attacks = {}
                for name, att in res["attacks"].items():
                    if name.endswith(":forget"):
                        attacks[name.rsplit(":", 1)[0]] = {"prompt": att["prompts"][i], "answer": att["answers"][i],
                                                           "correct": bool(att["correct"][i])}
                for name, att in res.get("baselines", {}).items():
                    attacks[name] = {"prompt": att["prompts"][i], "answer": att["answers"][i],
                                     "correct": bool(att["correct"][i]), "changes_weights": att["changes_weights"]}
                # "recovered" means without touching the weights: FocusOnKey or the other prompt attacks
                recovered = any(v["correct"] for k, v in attacks.items()
                                if not k.startswith("placebo") and not v.get("changes_weights"))
                outcome = ("not_known" if not before_ok else "kept" if after_ok
                           else "recovered" if recovered else "forgotten")
                row.update({
                    "tokens": b["tokens"], "contrib_before": b["contributions"], "contrib_after": a["contributions"],
                    "key_before": t.pop("key_before"), "key_after": t.pop("key_after"),
                    "lp_before": b["lp"], "lp_after": a["lp"], "keywords": b["keywords"],
                    "attacks": attacks, "outcome": outcome, "tracking": t,
                })
                rows.append(row)
        return rows

    def run(self) -> dict:
        """The whole study; returns the metrics also written to ``metrics.json``."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "config.json", self.cfg.to_dict())
        info = self.prepare()
        if self.cfg.evaluation.gold_model:
            self.gold_dir = self.out / "gold"
        base = self.base()
        self.prepare_gold()
        results = [self.run_method(i, base) for i in range(len(self.cfg.methods))]
        return self._finish(model_facts({**info, "path": str(self.model_dir), "dtype": self.cfg.dtype}), base, results)

    def audit(self, splits: dict[str, list[Item]], unlearned: dict[str, Path]) -> dict:
        """Attack already-unlearned models against the original (``model_dir``) on given items."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "config.json", self.cfg.to_dict())
        self.splits = splits
        base = self.base()
        results = [self.audit_model(name, path, base) for name, path in unlearned.items()]
        return self._finish({"path": str(self.model_dir)}, base, results)

    def group_metrics(self, model: dict, base: dict) -> dict:
        """Everything in metrics.json but the methods: the model, base accuracy, settings."""
        return {
            "model": model,
            "base": {"accuracy": {s: _accuracy(base["answers"][s]["correct"]) for s in SPLITS},
                     "mia_auc": base.get("mia_auc"),
                     "standard": standard_metrics(base["tofu"], base["answers"], self.splits, base.get("mia_auc"),
                                                  self.gold, base.get("muse"), base.get("muse"))},
            "gold": None if self.gold is None else {
                "mia_auc": self.gold["mia_auc"],
                "accuracy": {s: _accuracy(self.gold["answers"][s]["correct"]) for s in SPLITS},
                "standard": standard_metrics(self.gold["tofu"], self.gold["answers"], self.splits,
                                             self.gold["mia_auc"], self.gold, self.gold.get("muse"), base.get("muse"))},
            "thresholds": {"recovery": self.cfg.evaluation.recovery_threshold,
                           "destructive": self.cfg.evaluation.destructive_threshold,
                           "rouge": self.cfg.evaluation.rouge_threshold},
            "keytokens": {"alpha": self.cfg.attribution.alpha, "beta": self.cfg.attribution.beta},
            "attribution_quality": base["attribution_quality"],
        }

    def _finish(self, model: dict, base: dict, results: list[dict]) -> dict:
        metrics = {**self.group_metrics(model, base),
                   "methods": {r["method"]: self.method_metrics(base, r) for r in results}}
        write_jsonl(self.out / "records.jsonl", (row for r in results for row in self.records(base, r)))
        write_json(self.out / "metrics.json", metrics)
        render_report(self.out)
        return metrics


def _where(ref: str | Path) -> str:
    """A model's identity in cache keys: its resolved folder, or its URL."""
    return str(ref) if is_served(ref) else str(Path(ref).resolve())


def _accuracy(correct) -> float | None:
    """Share correct; None for a split the benchmark does not have (MUSE and MMLU have no utility)."""
    return float(np.mean(correct)) if len(correct) else None


def model_facts(info: dict) -> dict:
    """The model as metrics.json records it: where, how big, how well it learnt, the precision it was
    evaluated in where the study sets one (no timings)."""
    return {k: info[k] for k in ("path", "parameters", "accuracy", "dtype") if info.get(k) is not None}
