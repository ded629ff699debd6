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


class StudyAttacks:
    """Attacks of a `Study` (a mixin: it uses the study's config, splits, gold results and scorer)."""

    cfg: StudyConfig
    splits: dict[str, list[Item]]
    gold: dict | None

    def attack(self, scorer, base: dict | None = None, answers: dict | None = None,
               splits: dict[str, list[Item]] | None = None, control: bool = False) -> dict[str, dict]:
        """Every attack the config asks for (FocusOnKey always) on ``scorer``'s model, in registry
        order: per run, the prompts, answers (and samples) and which items each recovered. ``splits``:
        other items to attack than the study's (the never-known control). ``control``: the attacks
        of a control (the gold model, never-known items), whose forget runs alone are read, so the
        do-no-harm runs on retain and utility items are left out."""
        r, a = self.cfg.recovery, self.cfg.attribution
        splits = splits or self.splits
        ctx = AttackContext(scorer, splits, self.cfg.seed, lambda m: self.scorer(m, scorer.tokenizer),
                            base, answers, a.alpha, a.beta, do_no_harm=not control)
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
                items = splits[key.split]
                entry = {k: v for k, v in asdict(run).items() if v is not None}
                entry["correct"] = judge(run, items, self.cfg.evaluation.rouge_threshold).tolist()
                entry["answers"] = shown_answers(run, items, self.cfg.evaluation.rouge_threshold)
                entry["seconds"] = seconds
                out[key.name] = entry
        return out

    def attack_never_known(self, scorer, base: dict, answers: dict) -> dict[str, dict] | None:
        """The attacks on the retain items the original model never answered, as a control where
        there is no gold model (`control`). They leave the retain set the attacks draw on (few-shot
        demonstrations, relearning), which would otherwise hand them their own answers. When the
        original model knows no retain item (``forget_known: all`` made every fact it knows a forget
        item) they draw on a seeded half of the never-known items and are read on the other half, as
        the forget items' attacks draw on retain items it never knew. None when the original model
        answers every retain item, or when fewer than two are never-known and none known."""
        known = base["answers"]["retain"]["correct"]
        never = [i for i, ok in enumerate(known) if not ok]
        keep = [i for i, ok in enumerate(known) if ok]
        if not keep:
            drawn = random.Random(self.cfg.seed).sample(never, len(never))
            never, keep = sorted(drawn[:len(drawn) // 2]), sorted(drawn[len(drawn) // 2:])
        if not never or not keep:
            return None
        retain, rows = self.splits["retain"], base["attributions"]["retain"]
        view = {"attributions": {"forget": [rows[i] for i in never], "retain": [rows[i] for i in keep],
                                 "utility": base["attributions"]["utility"]}}
        own = {"forget": {"answers": [answers["retain"]["answers"][i] for i in never]}}
        splits = {**self.splits, "forget": [retain[i] for i in never], "retain": [retain[i] for i in keep]}
        return self.attack(scorer, view, own, splits, control=True)

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
            plain = zip(base["answers"]["forget"]["correct"], self.gold["answers"]["forget"]["correct"], strict=True)
            return {"kind": GOLD, "known": [bool(k and not g) for k, g in plain],
                    "attacks": forget_runs(self.gold["attacks"]), "details": details(self.gold["attacks"])}
        if result.get("never_known"):
            return {"kind": NEVER_KNOWN, "attacks": forget_runs(result["never_known"]),
                    "details": details(result["never_known"])}
        return None
