"""``--model.dtype auto``: the compute dtype this machine runs a model fastest in, without losing
the model's range.

bfloat16 where the hardware computes it natively — a CUDA device that supports it, a CPU with
``avx512_bf16`` or ``amx_bf16`` (and no ``ONEDNN_MAX_CPU_ISA`` cap below them) — and float32
elsewhere: without those instructions oneDNN emulates bfloat16, and a whole prompt pass of
Qwen2.5-Coder-0.5B is 3.5× *slower* than in float32 (with them, 3.8× faster; BENCHMARKS.md, "The
prompt pass's last logits"). The choice is made once per load from the CPU's flags (no timing, so the
same machine always gets the same dtype), logged, and recorded in files as the concrete dtype.
"""

from __future__ import annotations

import logging
import os

import torch

from probing.models.config import Dtype
from probing.models.lens_matmul import BF16_FLAGS, cpu_flags

log = logging.getLogger(__name__)
# oneDNN ISA caps that still include the bfloat16 instructions
BF16_ISA_PREFIXES = ("AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX10", "ALL", "DEFAULT")


def native_cpu_bfloat16() -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 natively, and why in a few words."""
    flags = cpu_flags()
    if flags is None:
        return False, "CPU flags unknown"
    have = [f for f in BF16_FLAGS if f in flags]
    if not have:
        return False, f"a CPU without {' or '.join(BF16_FLAGS)}"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and not cap.startswith(BF16_ISA_PREFIXES):
        return False, f"ONEDNN_MAX_CPU_ISA={cap} caps oneDNN below bfloat16"
    return True, "a CPU with " + " and ".join(have)


def auto_dtype(device: str, device_map: str | None = None) -> tuple[Dtype, str]:
    """The dtype ``--model.dtype auto`` loads a model in on ``device`` (or spread by ``device_map``
    over the GPUs), and why."""
    on_gpu = device.startswith("cuda") or (device_map is not None and torch.cuda.is_available())
    if on_gpu:
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bfloat16", "a GPU with bfloat16"
        return "float32", "a GPU without bfloat16"
    native, why = native_cpu_bfloat16()
    return ("bfloat16" if native else "float32"), why
