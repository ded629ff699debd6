"""The work `tests/test_distributed.py` runs once as one plain process and once under
``accelerate launch --num_processes 2``: every sharded primitive on a tiny model, and a few unlearning
steps, with the results (gathered on the main process) written as JSON.

    python tests/distributed_script.py --out RESULT.json
    accelerate launch --cpu --num_processes 2 tests/distributed_script.py --out RESULT.json

Besides the results, the main process records whether every process ended with the same results and
the same weights (``processes_agree``): the sharded calls must hand all of them the full answer.
Unlearned weights go to ``RESULT.<method>.safetensors`` next to the JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

# one thread per process in both runs: the same kernels (and so the same rounding) whatever the
# process count, and two processes do not fight over two cores
torch.set_num_threads(1)

from safetensors.torch import save_file  # noqa: E402

from unpact import distributed  # noqa: E402
from unpact.attribution import gradient_attributions, loo_attributions  # noqa: E402
from unpact.data import SPLITS, builtin  # noqa: E402
from unpact.io import write_json  # noqa: E402
from unpact.models import PlainFormat  # noqa: E402
from unpact.models.builtin import BuiltinModelConfig, build_model, train_tokenizer  # noqa: E402
from unpact.recovery.sampling import sample_answers  # noqa: E402
from unpact.scoring import Scorer  # noqa: E402
from unpact.unlearn import UnlearnConfig, unlearn  # noqa: E402

METHODS = ("NPO_GDR", "GA_GDR", "RMU")  # a mean over items, over answer tokens, over all tokens


def tiny_model():
    """The tiny model of tests/conftest.py (same tokenizer, weights and sharpened head)."""
    bench = builtin.generate(seed=0)
    texts = [f"Question: {it.question}\nAnswer: {it.answer}" for s in SPLITS for it in bench[s]]
    tok = train_tokenizer(texts, vocab_size=400)
    model = build_model(BuiltinModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, seed=1),
                        tok).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return bench, model, tok, PlainFormat(tok)


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    warnings.filterwarnings("ignore", message="the baseline token's embedding")
    bench, model, tok, fmt = tiny_model()
    # a batch size that does not divide the work: several buckets, uneven shares
    scorer = Scorer(model, tok, fmt, batch_size=5)
    items = bench["forget"][:7]
    qs, ans = [it.question for it in items], [it.answer for it in items]
    out: dict = {"world": distributed.world()}

    out["loo"] = [a.to_dict() for a in loo_attributions(scorer, qs, ans)]
    out["loo_mask_plain"] = [a.to_dict() for a in loo_attributions(scorer, qs, ans, ablation="mask",
                                                                   prefix_reuse=False)]
    out["ig"] = [a.to_dict() for a in gradient_attributions(scorer, qs[:5], ans[:5], steps=6)]
    retain_qs = [it.question for it in bench["retain"][:6]]
    out["greedy"] = scorer.generate(qs + retain_qs)
    out["samples"] = sample_answers(scorer, qs, n=3, seed=0, max_new_tokens=6)
    s = scorer.score_ids([fmt.encode(q).ids for q in qs + retain_qs],
                         [fmt.encode_answer(a) for a in ans + [it.answer for it in bench["retain"][:6]]],
                         distribution=True)
    out["score"] = {"mean": s.mean.tolist(), "per_token": [t.tolist() for t in s.per_token],
                    "mu": [t.tolist() for t in s.mu], "sigma": [t.tolist() for t in s.sigma]}

    weights = {}
    out["unlearn"] = {}
    for name in METHODS:
        m = build_model(BuiltinModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, seed=1),
                        tok)
        # 9 forget items in batches of 4: the last step's single item leaves one process no forget
        # share; 5 retain items per step split 3/2
        cfg = UnlearnConfig(method=name, epochs=2, lr=1e-3, batch_size=4, retain_batch_size=5, seed=0)
        m, logs = unlearn(m, tok, fmt, bench["forget"][:9], bench["retain"][:15], cfg,
                          checkpoint_dir=args.out.parent / f"ckpt-{name}-{out['world']}")
        weights[name] = {k: v.detach().contiguous().clone() for k, v in m.state_dict().items()}
        ckpt = args.out.parent / f"ckpt-{name}-{out['world']}" / "checkpoint" / "state.json"
        out["unlearn"][name] = {"steps": logs["steps"], "final_loss": logs["final_loss"],
                                "checkpoint_step": json.loads(ckpt.read_text())["step"],
                                "requires_grad": all(p.requires_grad for p in m.parameters())}

    # every process must hold the same results and weights, not just its share
    mine = fingerprint(out) + "".join(hashlib.sha256(t.numpy().tobytes()).hexdigest()
                                      for w in weights.values() for t in w.values())
    out["processes_agree"] = len(set(distributed.gather([mine]))) == 1
    if distributed.is_main():
        for name, w in weights.items():
            save_file(w, f"{args.out}.{name}.safetensors")
    write_json(args.out, out)  # the main process writes, the others wait for it


if __name__ == "__main__":
    main()
