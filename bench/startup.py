"""Start-up benchmark: whole `probing` processes against the imports they cannot avoid.

Each variant is a whole process, timed from outside (wall clock and CPU seconds), repeated and
interleaved so that load changes hit all of them:

  torch          python -c "import torch"
  lightning      python -c "import lightning.pytorch.cli"  (third-party floor of `probing fit`:
                 lightning imports torchmetrics, which imports transformers, scipy.signal, matplotlib)
  fit --help     probing fit --help  (imports + the LightningCLI parser)
  graft (eager)  python -c "import probing.grafting.callback, probing.grafting.run": the import of
                 `probing graft` as it was, with GraftingCallback (Lightning) imported eagerly
  graft          python -c "import probing.grafting.run": the import of `probing graft` now
  fit            probing fit on the paper's file (linear + MLP heads on all layers, full batch, 70/30
                 split, no logger/checkpoints, test after fit) — as bench/probes.py runs it
  weak           probing weak on the same file and split (the paper's per-layer SVM + MLP(100))

Prints the median of each, the load average before and after, and the pairs' ratios. `--threads N`
sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS of every child. Usage:

    python bench/startup.py [--repeats 3] [--features features/paper-smollm2.h5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fit_config import fit_yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PROBING = [PY, "-m", "probing.cli"]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the child) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def variants(features: Path, work: Path) -> dict[str, list[str]]:
    config = work / "fit.yaml"
    config.write_text(fit_yaml(features, work / "fit-run"))
    split = ["--data.classes", "[normal, malicious]", "--data.split", "[0.7, 0.0, 0.3]"]
    return {
        "torch": [PY, "-c", "import torch"],
        "lightning": [PY, "-c", "import lightning.pytorch.cli"],
        "fit --help": [*PROBING, "fit", "--help"],
        "graft (eager)": [PY, "-c", "import probing.grafting.callback, probing.grafting.run"],
        "graft": [PY, "-c", "import probing.grafting.run"],
        "fit": [*PROBING, "fit", "--config", str(config)],
        "weak": [
            *PROBING,
            "weak",
            "--data.path",
            str(features),
            *split,
            "--data.seed",
            "42",
            "--output_dir",
            str(work / "weak-run"),
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--features", type=Path, default=ROOT / "features" / "paper-smollm2.h5")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", nargs="*", default=None, help="variants to run (default: all)")
    args = ap.parse_args()
    if not args.features.is_file():
        sys.exit(f"{args.features} not found: probing extract --config configs/extract/paper.yaml")
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    if args.threads:
        for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[key] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cmds = variants(args.features, Path(tmp))
        names = args.only or list(cmds)
        walls: dict[str, list[float]] = {n: [] for n in names}
        cpus: dict[str, list[float]] = {n: [] for n in names}
        load_before = os.getloadavg()[0]
        for r in range(args.repeats):
            for name in names:
                wall, cpu = timed(cmds[name], env)
                walls[name].append(wall)
                cpus[name].append(cpu)
                print(f"repeat {r + 1}: {name:<14} {wall:7.2f} s wall {cpu:7.2f} s CPU", flush=True)
        load_after = os.getloadavg()[0]
    med = {n: statistics.median(v) for n, v in walls.items()}
    print(f"\nload average (1 min): {load_before:.2f} -> {load_after:.2f}; threads: {args.threads}")
    print(f"{'variant':<14} {'wall (s)':>9} {'CPU (s)':>9}")
    for n in names:
        print(f"{n:<14} {med[n]:9.2f} {statistics.median(cpus[n]):9.2f}")
    pairs = [
        ("weak", "fit", "weak / fit (goal >= 2)"),
        ("fit --help", "lightning", "fit --help / lightning import"),
        ("graft (eager)", "graft", "graft import: eager / lazy"),
    ]
    for a, b, label in pairs:
        if a in med and b in med:
            print(f"{label}: {med[a] / med[b]:.2f}")


if __name__ == "__main__":
    main()
