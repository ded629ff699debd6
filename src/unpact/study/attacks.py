"""The study's attack stage: every registered attack on a model, and the control each is read
against (docs/design.md, Controls): the gold model under the same attacks, or the same attacks on
facts the original model never knew."""

from __future__ import annotations

import random
import time
from dataclasses import asdict

from ..config import StudyConfig
from ..data import Item
from ..evaluation.calibration import GOLD, NEVER_KNOWN
from ..recovery import ATTACKS, AttackContext, AttackKey, judge
from ..recovery.base import settings_of, shown_answers
from ..timing import stage


def known_unanswered(base: dict, answers: dict) -> list[bool]:
    """[N] over the forget items: the original model answered it and ``answers`` (a model's greedy
    answers per split) do not — an unlearned model's forgotten items, the gold model's control items."""
    return [bool(k and not a) for k, a in zip(base["answers"]["forget"]["correct"], answers["forget"]["correct"],
                                              strict=True)]


class StudyAttacks:
    """Attacks of a `Study` (a mixin: it uses the study's config, splits, gold results and scorer)."""

    cfg: StudyConfig
    splits: dict[str, list[Item]]
    gold: dict | None

    def attack(self, scorer, base: dict | None = None, answers: dict | None = None,
               splits: dict[str, list[Item]] | None = None, control: bool = False,
               only: list[bool] | None = None) -> dict[str, dict]:
        """Every attack the config asks for (FocusOnKey always) on ``scorer``'s model, in registry
        order: per run, the prompts, answers (and samples) and which items each recovered. ``splits``:
        other items to attack than the study's (the never-known control). ``control``: the attacks
        of a control (the gold model, never-known items), whose forget runs alone are read, so the
        do-no-harm runs on retain and utility items are left out. ``only`` ([N] bool over the forget
        items): attack those alone — every rate reads an attack on the forgotten items only, so an
        item still answered plainly costs attack time for nothing; a forget run's per-item lists keep
        length N with None where nothing was asked, and ``attacked`` says which."""
        r, a = self.cfg.recovery, self.cfg.attribution
        splits = splits or self.splits
        rows = None if only is None or all(only) else [i for i, ok in enumerate(only) if ok]
        asked, view, own = splits, base, answers
        if rows is not None:
            asked = {**splits, "forget": [splits["forget"][i] for i in rows]}
            view = base and {**base, "attributions": {**base["attributions"],
                                                      "forget": [base["attributions"]["forget"][i] for i in rows]}}
            own = answers and {**answers, "forget": {"answers": [answers["forget"]["answers"][i] for i in rows]}}
        ctx = AttackContext(scorer, asked, self.cfg.seed, lambda m: self.scorer(m, scorer.tokenizer),
                            view, own, a.alpha, a.beta, do_no_harm=not control)
        out: dict[str, dict] = {}
        for attack in ATTACKS.values():
            if not (attack.always or attack.name in r.attacks):
                continue
            t0 = time.perf_counter()
            with stage(f"attack {attack.name}"):
                runs = attack.run(ctx, settings_of(attack, r))
            # what the attack cost on this model, shared among its runs (kept with the result, never a
            # metric: it differs run to run); the README's cost per attack is read from it
            seconds = round((time.perf_counter() - t0) / max(1, len(runs)), 3)
            for key, run in runs.items():
                items = asked[key.split]
                entry = {k: v for k, v in asdict(run).items() if v is not None}
                entry["correct"] = judge(run, items, self.cfg.evaluation.rouge_threshold).tolist()
                entry["answers"] = shown_answers(run, items, self.cfg.evaluation.rouge_threshold)
                if rows is not None and key.split == "forget":
                    entry = _spread(entry, rows, len(splits["forget"]))
                entry["seconds"] = seconds
                out[key.name] = entry
        return out

    def never_known_items(self, base: dict) -> tuple[list[int], list[int]]:
        """(control, pool): the retain items the never-known control is attacked on and the retain
        items its attacks draw on (few-shot demonstrations, relearning), as indices into the retain
        split. The control is every retain item the original model never answered, and the pool the
        ones it answered; when it answered none (``forget_known: all`` made every fact it knows a
        forget item), a seeded half of the never-known items is the control and the other half the
        pool, as the forget items' attacks draw on retain items it never knew. Both empty when a gold
        model is the control, or when there is no control to read (no never-known item, or no pool)."""
        if self.gold_dir is not None:
            return [], []
        known = base["answers"]["retain"]["correct"]
        never = [i for i, ok in enumerate(known) if not ok]
        keep = [i for i, ok in enumerate(known) if ok]
        if not keep:
            drawn = random.Random(self.cfg.seed).sample(never, len(never))
            never, keep = sorted(drawn[:len(drawn) // 2]), sorted(drawn[len(drawn) // 2:])
        return (never, keep) if never and keep else ([], [])

    def never_known_split(self, base: dict, answers: dict) -> tuple[list[int], list[int], list[bool]]:
        """`never_known_items` and, per control item, whether the unlearned model (``answers``: its own)
        does not answer it plainly either — the items the control is read on."""
        never, keep = self.never_known_items(base)
        return never, keep, [not answers["retain"]["correct"][i] for i in never]

    def attack_never_known(self, scorer, base: dict, answers: dict) -> dict[str, dict] | None:
        """The attacks on the retain items the original model never answered (`never_known_split`),
        as a control where there is no gold model (`control`). They leave the retain set the attacks
        draw on, which would otherwise hand them their own answers. Only the items this model does
        not answer plainly either (``answers``: its own) are asked, as recovery is read on the forgotten
        items alone: a method that trains on retain facts (GDR) may have learned a never-known one,
        and an attack that "recovers" it says nothing about the absence of knowledge. None when the
        original model answers every retain item, or when fewer than two are never-known and none known,
        or when a gold model is the control."""
        never, keep, unanswered = self.never_known_split(base, answers)
        if not never:
            return None
        retain, rows = self.splits["retain"], base["attributions"]["retain"]
        view = {"attributions": {"forget": [rows[i] for i in never], "retain": [rows[i] for i in keep],
                                 "utility": base["attributions"]["utility"]}}
        own = {"forget": {"answers": [answers["retain"]["answers"][i] for i in never]}}
        splits = {**self.splits, "forget": [retain[i] for i in never], "retain": [retain[i] for i in keep]}
        return self.attack(scorer, view, own, splits, control=True, only=unanswered)

    def control(self, base: dict, result: dict) -> dict | None:
        """What the attacks yield without the knowledge (`unpact.evaluation.calibration.calibrate`):
        the gold model's hits on the same forget items, else this model's on never-known items."""
        def forget_runs(attacks: dict) -> dict[str, list]:
            return {n: e["correct"] for n, e in attacks.items() if AttackKey.parse(n).split == "forget"}

        def details(attacks: dict) -> dict[str, dict]:  # what a white-box reading kept (the lens's profile)
            return {n: e["details"] for n, e in attacks.items() if e.get("details")}

        if self.gold and "attacks" in self.gold:
            # counted as recovery is: on the facts the original knew and this model does not answer
            # plainly, so a fact the gold model happens to answer unasked is not an attack's hit
            return {"kind": GOLD, "known": known_unanswered(base, self.gold["answers"]),
                    "attacks": forget_runs(self.gold["attacks"]), "details": details(self.gold["attacks"])}
        if result.get("never_known"):
            # read on the never-known items this model does not answer plainly (`attack_never_known`);
            # when it answers all of them there is nothing to read the attacks against, and the raw
            # rates stand in (`calibrate` without a control errs towards "insufficient", never "reliable")
            unanswered = self.never_known_split(base, result["answers"])[2]
            if not any(unanswered):
                return None
            return {"kind": NEVER_KNOWN, "known": unanswered, "attacks": forget_runs(result["never_known"]),
                    "details": details(result["never_known"])}
        return None


def _spread(entry: dict, rows: list[int], n: int) -> dict:
    """A forget run over the attacked ``rows`` as one over all ``n`` forget items: every per-item list
    (one value per attacked row, in the run or its ``details``) gets None where nothing was asked,
    ``correct`` False there, and ``attacked`` marks the rows asked."""
    def spread(values: list, fill=None) -> list:
        out = [fill] * n
        for i, v in zip(rows, values, strict=True):
            out[i] = v
        return out

    def per_item(v) -> bool:
        return isinstance(v, list) and len(v) == len(rows)

    out = {k: spread(v, False if k == "correct" else None) if per_item(v) else v for k, v in entry.items()
           if k != "details"}
    if "details" in entry:
        out["details"] = {k: spread(v) if per_item(v) else v for k, v in entry["details"].items()}
    out["attacked"] = spread([True] * len(rows), False)
    return out
