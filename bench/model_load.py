"""Model-load benchmark: `probing extract` of one prompt, cold (model cache cleared) vs warm.

Each variant is a whole process, timed from outside (wall clock), on the embedded default
(SmolLM2-135M-Instruct GGUF), repeated and interleaved so that load changes hit all of them:

  import   python -c "import torch, transformers, probing"  (the floor the issue compares to)
  +arch    the same plus the model's transformers modules (modeling_llama; any load pays them)
  cold     probing extract of one prompt after `probing cache --clear true` (converts the GGUF)
  warm     probing extract of one prompt again (loads the converted model from the cache)
  direct   before the cache: tokenizer + model straight from the GGUF (`gguf_file=`, three parses),
           load only, no extraction (--no-direct skips it)

The cache is a private temporary folder (PROBING_CACHE), so the user's cache is left alone. Prints
the median of each and the ratios, with the load average before and after. Usage:

    python bench/model_load.py [--repeats 3] [--threads N] [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
PROBING = [PY, "-m", "probing.cli"]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every variant")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--no-direct", action="store_true", help="skip the (slow) direct GGUF load")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-model-load-") as tmp:
        tmp_path = Path(tmp)
        env = {**os.environ, "PROBING_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        prompt = tmp_path / "one.txt"
        prompt.write_text("How do I bake bread?\n", encoding="utf-8")
        extract = [
            *PROBING,
            "extract",
            "--model.name",
            args.model,
            "--prompts",
            f'[{{"path": "{prompt}", "label": "normal"}}]',
            "--output",
            str(tmp_path / "one.h5"),
            "--overwrite",
            "true",
            "--progress",
            "false",
        ]
        variants = {
            "import": [PY, "-c", "import torch, transformers, probing"],
            "+arch": [
                PY,
                "-c",
                "import torch, transformers, probing; import transformers.models.llama.modeling_llama",
            ],
        }
        if not args.no_direct:
            variants["direct"] = [
                PY,
                "-c",
                "import sys, torch\n"
                "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                "from probing.models.load import ModelConfig, _resolve\n"
                "where, gguf, _ = _resolve(ModelConfig(name=sys.argv[1]))\n"
                "AutoTokenizer.from_pretrained(where, gguf_file=gguf)\n"
                "AutoModelForCausalLM.from_pretrained(where, gguf_file=gguf, dtype=torch.float32)\n",
                args.model,
            ]
        names = ["import", "+arch", "cold", "warm", *(["direct"] if "direct" in variants else [])]
        times: dict[str, list[float]] = {k: [] for k in names}
        load_before = os.getloadavg()
        timed([*PROBING, "cache"], env)  # warms the OS file cache for the imports
        for r in range(args.repeats):
            for name, cmd in variants.items():
                times[name].append(timed(cmd, env))
            timed([*PROBING, "cache", "--clear", "true"], env)
            times["cold"].append(timed(extract, env))
            times["warm"].append(timed(extract, env))
            done = ", ".join(f"{k} {v[-1]:.1f}" for k, v in times.items())
            sys.stderr.write(f"repeat {r + 1}/{args.repeats}: {done} s\n")
        load_after = os.getloadavg()

    med = {k: statistics.median(v) for k, v in times.items()}
    out = [
        f"model {args.model}, {args.repeats} repeats, threads {args.threads or 'default'}, "
        f"{os.cpu_count()} CPUs; load average before {load_before[0]:.2f} / "
        f"{load_before[1]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f} (1 / 5 min)",
        "",
        "| variant | median wall (s) | runs (s) |",
        "|---|---|---|",
    ]
    for k, v in times.items():
        out.append(f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.1f}' for x in v)} |")
    out += [
        "",
        f"warm / import = {med['warm'] / med['import']:.2f}   (goal <= 2)",
        f"warm / +arch  = {med['warm'] / med['+arch']:.2f}",
        f"cold / import = {med['cold'] / med['import']:.2f}",
        f"cold / warm   = {med['cold'] / med['warm']:.2f}",
    ]
    if "direct" in med:
        out.append(
            f"direct / warm = {med['direct'] / med['warm']:.2f}   (load alone, before the cache)"
        )
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
