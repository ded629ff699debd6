"""Whether a reduced precision pays on this machine's CPU.

A study's ``dtype: bfloat16`` runs answers, scores and attacks in bfloat16. A CPU with a native
bfloat16 matrix unit (AVX512-BF16, AMX, Arm BF16) multiplies it faster than float32; one without
emulates it and is several times slower, and nothing says so but the clock. oneDNN's own "bf16
supported" flag is true on such CPUs too (AVX512-BW suffices for its emulation), so the only honest test
is to time a product in both precisions.
"""

from __future__ import annotations

import time
from functools import cache

import torch

REDUCED = ("bfloat16", "float16")
# Above this, the precision is emulated (native units are faster than float32, emulation 2-3× slower);
# between 1 and this, timing noise.
SLOWER = 1.3


def _fastest(a: torch.Tensor, b: torch.Tensor, repeat: int, budget_s: float = 0.5) -> float:
    """The fastest of ``repeat`` products after a warm-up (the first product of a dtype picks its
    kernel); fewer once ``budget_s`` is spent, so an emulated precision hundreds of times slower (float16
    on most CPUs) costs a second, not minutes."""
    seconds: list[float] = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - t0)
        if sum(seconds) > budget_s:
            break
    return min(seconds[1:] or seconds)


@cache
def cpu_slowdown(dtype: str, rows: int = 256, size: int = 1024, repeat: int = 5) -> float:
    """How many times longer a [rows, size] @ [size, size] product takes on the CPU in ``dtype`` than in
    float32, the fastest of ``repeat`` each (about 0.1 s in all; a second or two where ``dtype`` is
    emulated): below 1 the CPU multiplies ``dtype`` natively and faster, well above 1 it emulates it."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(rows, size, generator=gen), torch.randn(size, size, generator=gen)
    reference = _fastest(a, b, repeat)
    low = getattr(torch, dtype)
    return _fastest(a.to(low), b.to(low), repeat) / reference


def precision_notice(dtype: str | None, device: torch.device | str, where: str = "dtype") -> str | None:
    """One line for the user when ``dtype`` (a config's ``where``) is slower than float32 on a CPU
    ``device``; None when it is not, or on other devices (GPUs multiply bfloat16 natively)."""
    if dtype not in REDUCED or torch.device(device).type != "cpu":
        return None
    slowdown = cpu_slowdown(dtype)
    if slowdown <= SLOWER:
        return None
    return (f"{where} {dtype}: this CPU multiplies {dtype} {slowdown:.1f}× slower than float32 (no native "
            f"{dtype} matrix unit), so the study will be slower, not faster; leave {where} out to run it in "
            "float32 (answers can then differ by a few items)")
