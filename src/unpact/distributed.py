"""Several processes over one piece of work (``accelerate launch --num_processes N``), on Hugging Face
Accelerate's process state; nothing here when the program runs as one plain process.

unpact never starts processes itself: the launcher does (DDP on CPU or GPU; FSDP and DeepSpeed through
the user's ``accelerate config``), and every process runs the same program. The rule that keeps their
results equal to one process's: every process computes the same thing in the same order, except inside
the few batched primitives (`unpact.scoring.Scorer`, gradient attributions, the unlearning step), which
split their items between the processes (`shard`) and give every process all the results
(`gather`). File writes happen on the main process, the others waiting for them (`main_only`).

Without a launcher (no ``WORLD_SIZE`` > 1 in the environment, nor MPI's equivalents, and no
Accelerate state made by the program) no process state is created: `world` is 1, the helpers do
nothing, and the single-process code paths run exactly as they would without this module.

On a machine without GPUs, accelerate 1.x starts several processes through torchrun only with
``--multi_gpu`` (they then run on the CPU with gloo); its ``--cpu`` flag starts several only through
MPI (``--mpirun_hostfile``).
"""

from __future__ import annotations

import atexit
import os
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

# where launchers put the process count: torchrun (accelerate launch) and MPI implementations
_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
# > 0 while code runs on this process alone (`local`): then the helpers act as with one process.
_alone = 0
# How long a clean exit waits at its closing barrier for the other processes before closing anyway.
CLOSING_TIMEOUT_S = 300
_closing_registered = False
_uncaught = False  # set by the exception hook: this process is dying of an error


def _note_uncaught(hook):
    def noted(*exc_info):
        global _uncaught
        _uncaught = True
        hook(*exc_info)

    return noted


def _register_closing() -> None:
    """Make the process group end before the interpreter does (`close`), once per process."""
    global _closing_registered
    if not _closing_registered:
        _closing_registered = True
        sys.excepthook = _note_uncaught(sys.excepthook)
        atexit.register(close)


def close() -> None:
    """End this process's part of the process group: wait for the others (on a clean exit), then
    destroy the group. Registered at exit as soon as a launcher's process state exists.

    Without it the group is torn down by C++ destructors while the interpreter shuts down, and a gloo
    thread still running then aborts the process (``terminate called without an active exception``,
    SIGABRT), so a launcher reports a finished run as failed. The barrier keeps one process from
    closing its connections while another still completes the last collective. A process dying of
    an uncaught error skips it: the others may be inside another collective and would never arrive,
    so it closes at once and the launcher stops the rest. The barrier's timeout bounds the wait of a
    clean exit for a process that died another way (the launcher then reports that one).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if not _uncaught:
            if dist.get_backend() == "gloo":  # gloo can say which process never arrived
                from datetime import timedelta

                dist.monitored_barrier(timeout=timedelta(seconds=CLOSING_TIMEOUT_S), wait_all_ranks=True)
            else:
                dist.barrier()
    except Exception as e:  # at exit: report, then close anyway
        print(f"unpact: closing barrier failed on process {dist.get_rank()}: {e}", file=sys.stderr)
    finally:
        dist.destroy_process_group()


def _state():
    """The shared Accelerate process state, created on first use when a launcher started us; None
    when running as one plain process (nothing is created, no process group is set up)."""
    made = sys.modules.get("accelerate.state")  # not imported for a plain single process: it costs time
    if made is not None and made.PartialState._shared_state:  # made already, by us or the program
        state = made.PartialState()
        if state.num_processes > 1:
            _register_closing()
        return state
    if max(int(os.environ.get(k, "1") or 1) for k in _SIZE_VARIABLES) <= 1:
        return None
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # CPU processes (ACCELERATE_USE_CPU, or no GPU at all: torchrun-started processes on a CPU machine)
    # must say so, or PartialState finds no GPU backend and sets up no process group: each process
    # would then do all the work alone. Accelerator reads the flag itself; PartialState does not.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    _register_closing()
    return state


def world() -> int:
    """How many processes share the work (1 without a launcher, and inside `local`)."""
    if _alone:
        return 1
    state = _state()
    return 1 if state is None else state.num_processes


def rank() -> int:
    """This process's index, 0 … world() − 1 (0 without a launcher and inside `local`)."""
    if _alone:
        return 0
    state = _state()
    return 0 if state is None else state.process_index


def is_main() -> bool:
    """Whether this is the process that writes files and prints (the only one without a launcher).

    Unlike `world`, this is not changed by `local`: a process that runs alone is still not the main one."""
    state = _state()
    return state is None or state.is_main_process


def device():
    """The device this process computes on: its own GPU under a multi-GPU launch, else the CPU.

    Models must be placed there before they are used under several processes (every process on GPU 0
    would run them all on one card)."""
    import torch

    state = _state()
    return torch.device("cpu") if state is None else state.device


def shard(seq: Sequence) -> list[int]:
    """Indices of this process's share of ``seq``: a contiguous slice, the first ``len % world``
    processes one item longer (`PartialState.split_between_processes`); all of them with one process.

    Contiguous, so items that sit together (a prompt's ablations, one question's samples) stay on one
    process and every result can be put back in order by concatenating the shares in rank order."""
    indices = list(range(len(seq)))
    if world() == 1:
        return indices
    with _state().split_between_processes(indices) as mine:
        return list(mine)


def gather(objs: list[T]) -> list[T]:
    """Every process's ``objs`` (picklable), concatenated in rank order, on every process.

    A collective: every process must call it, the same number of times and in the same order."""
    if world() == 1:
        return list(objs)
    from accelerate.utils import gather_object

    return gather_object(list(objs))


def barrier() -> None:
    """Wait until every process got here (e.g. so none reads a file before the main one wrote it)."""
    if world() > 1:
        _state().wait_for_everyone()


@contextmanager
def local() -> Iterator[None]:
    """Run a block as if this process were alone: `world` is 1 inside, so the primitives it calls do
    their whole input here, with no collectives, and writes go ahead at once.

    For the work of one process's share (`map_shards`) and for work only the main process does
    (`main_only`): a collective inside would wait forever for processes that are not there."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


def _portable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling (to be raised on the other processes), else a RuntimeError
    carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def map_shards(n: int, work: Callable[[list[int]], list[T]]) -> list[T]:
    """The results of ``work`` for items 0 … n − 1, split between the processes; the same full list,
    in item order, on every process.

    ``work(indices)`` returns one result per index, in order; each process calls it once on its
    `shard`, inside `local`. An exception in any process's share is raised on every process (after the
    gather, so none is left waiting in a collective): the same error whatever the process count.
    With one process it is just ``work(list(range(n)))``.
    """
    if world() == 1:
        return work(list(range(n)))
    mine = shard(range(n))
    try:
        with local():
            out = list(work(mine))
        if len(out) != len(mine):
            raise RuntimeError(f"a sharded step returned {len(out)} results for {len(mine)} items")
        payload: tuple[bool, Any] = (True, out)
    except Exception as e:
        payload = (False, _portable(e))
    parts = gather([payload])
    for ok, value in parts:
        if not ok:
            raise value
    return [r for _, value in parts for r in value]


def main_only(fn: Callable[[], T]) -> T:
    """``fn()`` on the main process (inside `local`) while the others wait; its result, or its
    exception, on every process. With one process it is just ``fn()``.

    For side effects that must happen once (writing or deleting a file): every process gets past this
    call only when the main process is done, so a file written here can be read by all of them after it.
    """
    if world() == 1:
        return fn()
    from accelerate.utils import broadcast_object_list

    message: list[Any] = [None]
    if is_main():
        try:
            with local():
                message[0] = (True, fn())
        except Exception as e:
            message[0] = (False, _portable(e))
    broadcast_object_list(message, from_process=0)
    ok, value = message[0]
    if not ok:
        raise value
    return value
