"""Which matmul the logit lens picks its top-k candidates with on CPU: bfloat16 or float32.

A bfloat16 matmul is 2.5-3.6x faster than float32 on a CPU with native bfloat16 instructions
(AVX512-BF16, AMX) and 3-4.6x *slower* on one without them (AVX2, where oneDNN emulates it), so the
choice follows the machine the process runs on:

* ``PROBING_LENS_MATMUL=bfloat16`` or ``float32`` forces a path (tests run both on any machine);
* ``auto`` (the default): float32 when ``/proc/cpuinfo`` lists x86 flags without ``avx512_bf16`` or
  ``amx_bf16``; otherwise both matmuls are timed once per process on a small lens-shaped product and
  bfloat16 is used only if it is at least :data:`MIN_SPEEDUP` times faster.

Either path returns the same top-k: the bfloat16 candidates are rescored exactly in float32
(:meth:`probing.models.lookup.ModelParts.lens_topk`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from probing.errors import ProbingError

log = logging.getLogger(__name__)

ENV = "PROBING_LENS_MATMUL"
CHOICES = ("auto", "bfloat16", "float32")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MIN_SPEEDUP = 1.2  # bfloat16 must beat float32 by this much in the measurement
CPUINFO = Path("/proc/cpuinfo")

LensMatmul = Literal["bfloat16", "float32"]


@dataclass(frozen=True)
class LensMatmulChoice:
    """The lens' CPU candidate matmul and why it was chosen."""

    path: LensMatmul
    reason: str


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str] | None:
    """The x86 ``flags`` of the first CPU in ``cpuinfo`` (default :data:`CPUINFO`); ``None`` where
    there are none (not Linux, not x86, unreadable)."""
    try:
        text = (cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def cpu_capability() -> str:
    """Torch's CPU capability and the bfloat16 flags, e.g. ``AVX512 +avx512_bf16 +amx_bf16`` or
    ``AVX2 (no bf16 flags)``; an ``ONEDNN_MAX_CPU_ISA`` cap is named too."""
    text = torch.backends.cpu.get_cpu_capability()
    flags = cpu_flags()
    if flags is None:
        text += " (cpu flags unknown)"
    else:
        have = [f for f in BF16_FLAGS if f in flags]
        text += "".join(f" +{f}" for f in have) if have else " (no bf16 flags)"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if cap:
        text += f" ONEDNN_MAX_CPU_ISA={cap}"
    return text


def measure_bf16_speedup(
    rows: int = 64, dim: int = 576, vocab: int = 8192, repeats: int = 5
) -> float:
    """float32 time / bfloat16 time of ``[rows, dim] @ [dim, vocab]`` (best of ``repeats``, the two
    interleaved so that a change in the machine's load hits both)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, dim, generator=gen)
    w = torch.randn(vocab, dim, generator=gen)
    xb, wb = x.bfloat16(), w.bfloat16()
    best = {"float32": float("inf"), "bfloat16": float("inf")}
    with torch.inference_mode():
        x @ w.T, xb @ wb.T  # warm-up (oneDNN builds its kernels on first use)
        for _ in range(repeats):
            for name, (a, b) in (("float32", (x, w)), ("bfloat16", (xb, wb))):
                start = time.perf_counter()
                a @ b.T
                best[name] = min(best[name], time.perf_counter() - start)
    return best["float32"] / max(best["bfloat16"], 1e-9)


@functools.cache
def auto_lens_matmul() -> LensMatmulChoice:
    """The ``auto`` choice, made once per process (see the module docstring)."""
    flags = cpu_flags()
    if flags is not None and not any(f in flags for f in BF16_FLAGS):
        choice = LensMatmulChoice(
            "float32", f"no {'/'.join(BF16_FLAGS)} in {CPUINFO}: bfloat16 would be emulated"
        )
    else:
        speedup = measure_bf16_speedup()
        path: LensMatmul = "bfloat16" if speedup >= MIN_SPEEDUP else "float32"
        choice = LensMatmulChoice(path, f"measured bfloat16 {speedup:.2f}x as fast as float32")
    log.info(
        "logit lens on CPU: %s candidate matmul (%s; %s; set %s=bfloat16|float32 to force one)",
        choice.path,
        choice.reason,
        cpu_capability(),
        ENV,
    )
    return choice


def lens_matmul() -> LensMatmulChoice:
    """The lens' CPU candidate matmul: ``$PROBING_LENS_MATMUL`` if it forces one, else
    :func:`auto_lens_matmul`."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ProbingError(
            f"{ENV} must be one of {', '.join(CHOICES)}, found {value!r}; unset it or set one of those"
        )
    if value == "auto":
        return auto_lens_matmul()
    return LensMatmulChoice(value, f"forced by {ENV}={value}")  # type: ignore[arg-type]
