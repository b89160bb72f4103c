"""`--help` of every command as whole processes: wall and CPU seconds (goal: under 2 s each).

Each command's ``python -m probing COMMAND --help`` is run ``--repeats`` times, interleaved with the
others so that a change in the machine's load hits all of them; ``python -c pass`` and
``import torch`` / ``import lightning`` are the floors for comparison. ``--baseline DIR``: another
checkout (e.g. ``git archive <commit> | tar -x -C DIR``) whose ``python -m probing.cli COMMAND
--help`` is timed in the same rounds. Prints a Markdown table with the medians, the CPU and the load
average before and after. Usage:

    python bench/help.py [--repeats 5] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probing.cli import COMMANDS  # noqa: E402 (the tree beside this bench)

PY = sys.executable


def timed(cmd: list[str], root: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the child) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline", type=Path, default=None)
    args = ap.parse_args()
    floors = {
        "python -c pass": [PY, "-c", "pass"],
        "import torch": [PY, "-c", "import torch"],
        "import lightning": [PY, "-c", "import lightning"],
    }
    commands = {"probing --help": [PY, "-m", "probing.cli", "--help"]}
    commands |= {f"probing {c} --help": [PY, "-m", "probing.cli", c, "--help"] for c in COMMANDS}
    trees = [ROOT] if args.baseline is None else [ROOT, args.baseline.resolve()]
    variants = [(name, cmd, ROOT) for name, cmd in floors.items()]
    variants += [(name, cmd, tree) for name, cmd in commands.items() for tree in trees]
    times: dict[tuple[str, Path], list[tuple[float, float]]] = {(n, t): [] for n, _, t in variants}
    load0 = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, cmd, tree in variants:
            times[name, tree].append(timed(cmd, tree))
    load1 = os.getloadavg()[0]
    print(f"CPU: {cpu_name()}; load {load0:.2f} -> {load1:.2f}; medians of {args.repeats}\n")
    head = "| command | wall (s) | CPU (s) |" + (
        " baseline wall (s) | baseline CPU (s) |" * len(trees[1:])
    )
    print(head + "\n" + "|---" * (head.count("|") - 1) + "|")
    for name in [*floors, *commands]:
        cells = []
        for tree in trees if name in commands else [ROOT]:
            runs = times[name, tree]
            cells += [f"{statistics.median(w for w, _ in runs):.2f}",
                      f"{statistics.median(c for _, c in runs):.2f}"]  # fmt: skip
        print(f"| `{name}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
