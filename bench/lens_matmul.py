"""The logit lens' CPU candidate matmul: bfloat16 vs float32 on this machine's CPU.

Times, side by side in one process (interleaved, best of ``--repeats``), on the embedded
SmolLM2-135M-Instruct's unembedding (49,152 x 576) and ``--rows`` hidden states:

  * the bare matmul ``[rows, 576] @ [576, 49152]`` in float32 and in bfloat16;
  * ``ModelParts.lens_topk`` (top-5) with the path forced to float32 and to bfloat16
    (``PROBING_LENS_MATMUL``), and with the path ``auto`` chooses here;

each printed beside the CPU capability (torch's, plus the bfloat16 flags) and the path ``auto``
chose. ``--isa avx2`` reruns it with oneDNN, ATen and MKL capped at AVX2 (an emulation of an AVX2 CPU on
this one, not a measurement of one). Usage:

    python bench/lens_matmul.py [--rows 512] [--repeats 5] [--isa avx2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ISA_CAPS = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    }
}
ENV = "PROBING_LENS_MATMUL"


def forced(path: str | None, fn):
    def call():
        if path is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = path
        try:
            return fn()
        finally:
            os.environ.pop(ENV, None)

    return call


def bench(rows: int, repeats: int) -> None:
    import torch

    from probing.models import ModelConfig, load_model
    from probing.models.lens_matmul import auto_lens_matmul, cpu_capability

    lm = load_model(ModelConfig())
    parts = lm.parts
    weight = parts.unembed.weight.detach()
    hidden = torch.randn(rows, weight.shape[1], generator=torch.Generator().manual_seed(0)) * 3
    w16, layer = weight.bfloat16(), 10
    os.environ.pop(ENV, None)
    chosen = auto_lens_matmul()
    variants = {
        "matmul float32": lambda: hidden @ weight.T,
        "matmul bfloat16": lambda: hidden.bfloat16() @ w16.T,
        "lens_topk, float32 path": forced("float32", lambda: parts.lens_topk(hidden, layer, 5)),
        "lens_topk, bfloat16 path": forced("bfloat16", lambda: parts.lens_topk(hidden, layer, 5)),
        f"lens_topk, auto ({chosen.path})": forced(None, lambda: parts.lens_topk(hidden, layer, 5)),
    }
    best = dict.fromkeys(variants, float("inf"))
    outs = {}
    load = os.getloadavg()[0]
    with torch.inference_mode():
        for fn in variants.values():
            fn()  # warm-up
        for r in range(repeats):
            names = list(variants)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                outs[name] = variants[name]()
                best[name] = min(best[name], time.perf_counter() - start)
    cpu = cpu_capability()
    print(
        f"{rows} x {weight.shape[1]} x {weight.shape[0]}, {torch.get_num_threads()} threads, best of"
        f" {repeats}; load average {load:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    print(f"cpu: {cpu}; lens auto -> {chosen.path} ({chosen.reason})")
    for name, t in best.items():
        print(f"{name:34s} {t:8.3f} s  [{cpu}]")
    print(
        f"float32 / bfloat16: matmul {best['matmul float32'] / best['matmul bfloat16']:.2f},"
        f" lens_topk {best['lens_topk, float32 path'] / best['lens_topk, bfloat16 path']:.2f}  [{cpu}]"
    )
    (i32, v32), (i16, v16) = outs["lens_topk, float32 path"], outs["lens_topk, bfloat16 path"]
    print(
        f"float32 vs bfloat16 path: rows with another top-5 set {int((i32 != i16).any(-1).sum())}"
        f" of {rows}, max |logit diff| {float((v32 - v16).abs().max()):.2e}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--isa", choices=sorted(ISA_CAPS), help="cap oneDNN/ATen (an emulation)")
    args = ap.parse_args()
    if args.isa:  # the caps are read when torch loads: a fresh process
        cmd = [sys.executable, __file__, "--rows", str(args.rows), "--repeats", str(args.repeats)]
        sys.exit(subprocess.call(cmd, env={**os.environ, **ISA_CAPS[args.isa]}))
    bench(args.rows, args.repeats)


if __name__ == "__main__":
    main()
