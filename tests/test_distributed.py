"""Several processes (`unpact.distributed`): the helpers as one process sees them, the split of an
unlearning step's loss between processes, and a real two-process run under ``accelerate launch``
checked against the same work done by one process."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from unpact import distributed
from unpact.errors import UnpactError
from unpact.unlearn.methods import METHODS, PrepareData, UnlearnBatch, get_method
from unpact.unlearn.methods.base import REDUCTIONS
from unpact.unlearn.trainer import _Data, _forget_units

SCRIPT = Path(__file__).with_name("distributed_script.py")
EXIT_SCRIPT = Path(__file__).with_name("distributed_exit_script.py")

# -- one process: the helpers do nothing and cost nothing ----------------------------------------


def test_one_process_helpers_are_the_identity():
    assert int(os.environ.get("WORLD_SIZE", "1")) <= 1, "run the unit tests without a launcher"
    assert (distributed.world(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.shard("abcde") == [0, 1, 2, 3, 4]
    assert distributed.shard([]) == []
    assert distributed.gather([{"a": 1}, 2]) == [{"a": 1}, 2]
    distributed.barrier()
    assert str(distributed.device()) == "cpu"
    calls = []
    assert distributed.map_shards(3, lambda idx: calls.append(list(idx)) or [i * 10 for i in idx]) == [0, 10, 20]
    assert calls == [[0, 1, 2]]  # one call on everything: the plain single-process path
    assert distributed.main_only(lambda: "written") == "written"
    # no process group, no Accelerate state: a plain run does not pay for any of it
    accelerate_state = sys.modules.get("accelerate.state")
    assert accelerate_state is None or not accelerate_state.PartialState._shared_state


def test_one_process_errors_pass_through_unchanged():
    def fail(_):
        raise UnpactError("item #2: broken")

    with pytest.raises(UnpactError, match="item #2: broken"):
        distributed.map_shards(3, fail)
    def disk_full():
        raise OSError(28, "disk full", "/x")

    with pytest.raises(OSError, match="disk full") as caught:
        distributed.main_only(disk_full)
    assert caught.value.filename == "/x"


def test_local_nests_and_leaves_the_main_process_as_it_is():
    with distributed.local():
        with distributed.local():
            assert distributed.world() == 1
        assert distributed.world() == 1 and distributed.is_main()
    assert distributed._alone == 0
    with pytest.raises(ValueError), distributed.local():
        raise ValueError("inside")
    assert distributed._alone == 0  # restored on the way out of an error too


def test_errors_that_cannot_be_pickled_still_reach_the_other_processes():
    class Local(Exception):  # a class defined in a function cannot be pickled by reference
        pass

    portable = distributed._portable(Local("no pickle"))
    assert isinstance(portable, RuntimeError) and "Local: no pickle" in str(portable)
    e = UnpactError("kept as it is")
    assert distributed._portable(e) is e


# -- the split of a step's loss ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(METHODS))
def test_weighted_shares_of_a_step_give_the_whole_steps_forget_loss(name, tiny, benchmark):
    """What makes the multi-process gradient exact: the whole batch's forget loss is the sum of the
    shares' losses, each weighted by its share of the terms the method declares its forget loss a
    mean over (`Method.forget_reduction`, counted by `_forget_units`). Gradients are linear in the
    losses, so this holds for them too. Every other reduction that weights the shares differently
    misses the whole loss: a method declaring the wrong one fails here. The losses are taken on a
    perturbed copy of the model: at the reference, NPO's loss is (2/β)·log 2 for every item, and any
    weighting would recombine it; and β = 0.1 for every method, as SimNPO's default 4.5 saturates
    log σ on this model's large NLL (every item's loss ≈ 0), and SatImp's β₁ = 0.1, as its p^5 weights
    vanish on it (p ≈ e^−12)."""
    model, tok, fmt = tiny
    forget, retain = benchmark["forget"][:7], benchmark["retain"][:4]
    method = get_method(name, **{k: 0.1 for k in ("beta", "beta1") if k in METHODS[name].defaults})
    # refusals, blanked questions and alternates for every method, so that every reduction can be counted
    data = _Data(fmt, forget, retain, tok.pad_token_id, torch.device("cpu"), 0, True, True, alternates=3)
    method.prepare(model, PrepareData(data.batches))
    moved = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))

    def loss(idx):
        batch = UnlearnBatch(data.packed("forget", idx), None, torch.tensor(idx), torch.tensor([0]),
                             data.packed("forget_alt", idx), *data.alternates(idx))
        with torch.no_grad():
            return float(method.forget_loss(moved, batch)[0])

    whole = [6, 0, 3, 5, 1, 4, 2]
    shares = [whole[:4], whole[4:]]  # two processes' contiguous shares, of unequal answer lengths
    losses, target = [loss(s) for s in shares], loss(whole)

    def weights(reduction):
        skip = method.skipped_answer_tokens  # CE-U leaves out each answer's first token(s)
        total = _forget_units(reduction, data, whole, skip)
        return [_forget_units(reduction, data, s, skip) / total for s in shares]

    def recombined(reduction):
        return sum(w * v for w, v in zip(weights(reduction), losses, strict=True))

    declared = weights(method.forget_reduction)
    assert recombined(method.forget_reduction) == pytest.approx(target, rel=1e-5, abs=1e-6)
    for other in REDUCTIONS:
        if weights(other) != pytest.approx(declared, abs=1e-3):
            assert recombined(other) != pytest.approx(target, rel=1e-5, abs=1e-6), other


# -- two processes against one -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(script_args: list[str], env: dict[str, str], tries: int = 3,
                expect_failure: bool = False) -> subprocess.CompletedProcess:
    """Run a script in two CPU processes under `accelerate launch`; returns the finished launch.

    The rendezvous port is picked free just before the launch, so another program can take it in
    between: only that failure is retried, on a new port; any other failure shows the processes'
    output, which a bare CalledProcessError would hide. ``expect_failure``: a non-zero exit is the
    expected outcome and is returned, not failed on.
    """
    # accelerate 1.x's `--cpu` starts several processes only through MPI; `--multi_gpu` starts them
    # with torchrun, and with no visible GPU and ACCELERATE_USE_CPU they are CPU processes on gloo
    for _ in range(tries):
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  "--main_process_port", str(_free_port())]
        done = subprocess.run([*launch, *script_args], env=env, timeout=600, capture_output=True, text=True)
        output = done.stdout + done.stderr
        if done.returncode == 0 or (expect_failure and "EADDRINUSE" not in output):
            return done
        if "EADDRINUSE" not in output and "ddress already in use" not in output:
            break
    pytest.fail(f"accelerate launch exited {done.returncode}; its output ends:\n{output[-4000:]}")


def _compare(one, two, path: str = "") -> list[str]:
    """Paths where the results differ: strings, ints and bools exactly; floats within 1e-5."""
    if isinstance(one, dict):
        assert one.keys() == two.keys(), path
        return [d for k in one for d in _compare(one[k], two[k], f"{path}.{k}")]
    if isinstance(one, list):
        assert len(one) == len(two), path
        return [d for i, (a, b) in enumerate(zip(one, two, strict=True)) for d in _compare(a, b, f"{path}[{i}]")]
    if isinstance(one, float):
        return [] if np.isclose(one, two, rtol=1e-5, atol=1e-5) else [f"{path}: {one} vs {two}"]
    return [] if one == two else [f"{path}: {one!r} vs {two!r}"]


def test_two_processes_under_accelerate_launch_give_one_process_results(tmp_path):
    """LOO (prefix reuse and plain), integrated gradients, greedy answers, samples, scores with
    distribution statistics and three unlearning runs (NPO_GDR: a mean over items; GA_GDR: over
    answer tokens; RMU: over all tokens, with most parameters frozen), once in one plain process and
    once in two processes launched by accelerate, sharding and gathering.

    Tolerances: strings, token lists and sample draws must be equal (sampling runs whole batches
    formed as by one process, so it is bit for bit; greedy answers could only differ at a float
    tie). Log-probs and attributions within 1e-5 (float32 rounding of other batch shapes; measured
    ≤ 1e-6). Unlearned weights (6 AdamW steps at lr 1e-3, |w| ≲ 1) within 1e-5: the all-reduced
    gradient differs from one process's by rounding only (measured ≤ 3e-6), while a forget loss
    weighted by items instead of tokens moves GA_GDR's weights by ~4e-3.
    """
    one, two = tmp_path / "one" / "result.json", tmp_path / "two" / "result.json"
    for path in (one, two):
        path.parent.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}  # no user accelerate config
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(one)], check=True, env=env, timeout=300)
    _launch_two([str(SCRIPT), "--out", str(two)], env={**env, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": ""})

    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert (a.pop("world"), b.pop("world")) == (1, 2)
    assert a.pop("processes_agree") and b.pop("processes_agree")  # every process held the full results
    assert _compare(a, b) == []
    for name, run in b["unlearn"].items():
        assert run["steps"] == 6 and run["checkpoint_step"] == 6 and run["requires_grad"], name
        wa, wb = load_file(f"{one}.{name}.safetensors"), load_file(f"{two}.{name}.safetensors")
        assert wa.keys() == wb.keys()
        worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        assert worst <= 1e-5, f"{name}: weights differ by {worst:.2e}"


def _cpu_env(tmp_path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf"), "ACCELERATE_USE_CPU": "true",
            "CUDA_VISIBLE_DEVICES": ""}


def test_two_processes_close_their_process_group_at_exit(tmp_path):
    """The process group is destroyed before the interpreter ends, so no gloo thread is left to abort
    the process at shutdown (``terminate called without an active exception``, SIGABRT)."""
    done = _launch_two([str(EXIT_SCRIPT), "--mode", "clean"], _cpu_env(tmp_path))
    output = done.stdout + done.stderr
    assert "process 0 done" in output and "process 1 done" in output
    assert "terminate called" not in output and "closing barrier failed" not in output


def test_a_process_dying_of_an_error_does_not_wait_at_the_closing_barrier(tmp_path):
    """Process 1 raises while process 0 waits for it in a collective: process 1 closes at once (a
    closing barrier would wait `CLOSING_TIMEOUT_S` for a process stuck elsewhere), the launcher stops
    the run, and the error is what the user sees."""
    started = time.monotonic()
    done = _launch_two([str(EXIT_SCRIPT), "--mode", "fail"], _cpu_env(tmp_path), expect_failure=True)
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    assert "process 1 failed on purpose" in done.stdout + done.stderr
    assert elapsed < distributed.CLOSING_TIMEOUT_S / 2, f"the failed run took {elapsed:.0f} s to stop"


def test_close_without_a_process_group_does_nothing():
    distributed.close()  # a plain process: no group to end, no error
    assert not distributed._closing_registered
