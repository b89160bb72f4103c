"""Benchmark: all-layer probes in one `probing fit` vs the paper's per-layer scikit-learn loop.

    python bench/probes.py                       # both cases (synthetic 7B shape takes ~15-40 min on 2 cores)
    python bench/probes.py --case paper --features features/paper-smollm2.h5
    python bench/probes.py --case synthetic --sklearn_layers 4

Both sides use the same rows: a stratified 70/30 train/test split (seed 42) of the data module, with
train-statistics standardisation. The probe side is one `probing fit` subprocess (linear + MLP heads on
every layer, then test; `--batch full` by default, as in configs/probe/), timed end to end including
Python start-up and the HDF5 read, and also after its imports (`bench/fit_timed.py`: config parsing,
data set-up, fit, test and reports), which is what the sklearn side's time covers. The sklearn side
is the paper's loop: per layer, read, standardise, `SVC(kernel="linear")` and `MLPClassifier((100,))`.
On the synthetic 7B shape the sklearn loop runs on `--sklearn_layers` evenly spaced layers and its time
is extrapolated to all layers (said so in the output); accuracies are compared on those layers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from fit_config import fit_yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def run_probes(
    features: Path,
    workdir: Path,
    epochs: int,
    batch: int | str,
    lr: float,
    accelerator: str = "auto",
    devices: int = 1,
) -> dict:
    """One `probing fit` (LinearMLPProbe on all layers, test after fit); returns timing and metrics."""
    out = workdir / "probe-run"
    config = workdir / "bench.yaml"
    config.write_text(fit_yaml(features, out, epochs, batch, lr, accelerator, devices))
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    cpu0 = _children_cpu()
    start = time.perf_counter()
    times = workdir / "fit-times.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fit_timed.py"), str(config), str(times)],
        cwd=workdir, env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    cpu = _children_cpu() - cpu0
    if proc.returncode:
        sys.exit(f"probing fit failed:\n{proc.stderr[-4000:]}")
    split = json.loads(times.read_text())
    report = json.loads((out / "per_layer_metrics.json").read_text())
    acc: dict[str, dict[int, float]] = {}
    for r in report["rows"]:
        if r["split"] == "test":
            acc.setdefault(r["probe"], {})[r["layer"]] = r["accuracy"]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "import_seconds": split["import_seconds"],
        "run_seconds": split["run_seconds"],
        "accuracy": acc,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_sklearn(features: Path, layers: list[int] | None) -> dict:
    """The paper's per-layer loop on the same split; ``layers`` = a sample (None = all)."""
    from probing.data import ActivationDataModule
    from probing.probes.weak import fit_layers

    dm = ActivationDataModule(
        str(features),
        classes=["normal", "malicious"],
        split=(0.7, 0.0, 0.3),
        seed=42,
        standardize=True,
    )
    chosen = dm.layers if layers is None else layers
    start, cpu0 = time.perf_counter(), time.process_time()
    out = fit_layers(dm, ["svm", "mlp"], seed=42, layers=chosen)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    acc = {
        name: dict(zip(chosen, out["metrics"][name]["accuracy"], strict=True))
        for name in ("svm", "mlp")
    }
    fit_seconds = {name: float(np.sum(v)) for name, v in out["seconds"].items()}
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "fit_seconds": fit_seconds,
        "accuracy": acc,
        "layers": chosen,
        "all_layers": len(dm.layers),
    }


def mean_on(acc: dict[int, float], layers: list[int]) -> float:
    return float(np.mean([acc[i] for i in layers]))


def compare(name: str, probes: dict, sk: dict) -> dict:
    layers, n_all = sk["layers"], sk["all_layers"]
    factor = n_all / len(layers)
    sk_total = sk["seconds"] * factor
    res = {
        "case": name,
        "layers_total": n_all,
        "sklearn_layers_timed": layers,
        "probe_seconds": round(probes["seconds"], 1),
        "sklearn_seconds_measured": round(sk["seconds"], 1),
        "sklearn_seconds_all_layers": round(sk_total, 1),
        "sklearn_extrapolated": factor != 1,
        "speedup": round(sk_total / probes["seconds"], 1),
        "probe_import_seconds": round(probes["import_seconds"], 1),
        "probe_seconds_after_imports": round(probes["run_seconds"], 1),
        "speedup_after_imports": round(sk_total / probes["run_seconds"], 2),
        "probe_cpu_seconds": round(probes["cpu_seconds"], 1),
        "sklearn_cpu_seconds_all_layers": round(sk["cpu_seconds"] * factor, 1),
        "speedup_cpu_time": round(sk["cpu_seconds"] * factor / probes["cpu_seconds"], 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    for p in ("linear", "mlp"):
        res[f"probe_{p}_mean_acc"] = round(mean_on(probes["accuracy"][p], layers), 4)
        res[f"probe_{p}_mean_acc_all_layers"] = round(
            float(np.mean(list(probes["accuracy"][p].values()))), 4
        )
    for s in ("svm", "mlp"):
        res[f"sklearn_{s}_mean_acc"] = round(mean_on(sk["accuracy"][s], layers), 4)
    res["per_layer"] = {
        int(i): {
            "linear": round(probes["accuracy"]["linear"][i], 4),
            "mlp": round(probes["accuracy"]["mlp"][i], 4),
            "svm": round(sk["accuracy"]["svm"][i], 4),
            "sk_mlp": round(sk["accuracy"]["mlp"][i], 4),
        }
        for i in layers
    }
    return res


def synthetic_file(path: Path, n: int, num_layers: int, hidden: int, seed: int = 0) -> Path:
    """7B-shaped features: separability rising over the first half of the layers, noise varying by layer."""
    from featurefactory import make_feature_file, synthetic_arrays

    depth = np.linspace(0, 1, num_layers)
    separability = 0.15 + 2.2 * np.clip(depth / 0.5, 0, 1) ** 1.5 * (
        1 - 0.25 * np.clip(depth - 0.5, 0, 1)
    )
    x, y = synthetic_arrays(n, num_layers, hidden, 2, separability, seed=seed, dtype=np.float16)
    scale = (1.0 + 3.0 * depth).astype(np.float16)  # activation scale grows with depth, as in LLMs
    x *= scale[None, :, None]
    return make_feature_file(path, hidden=x, labels=y, storage_dtype="float16",
                             meta={"model": f"synthetic-{num_layers}x{hidden}"}, batch=500)  # fmt: skip


def print_result(res: dict) -> None:
    print(json.dumps({k: v for k, v in res.items() if k != "per_layer"}, indent=1))
    print("layer  probe-linear  probe-mlp  sk-svm  sk-mlp")
    for layer, r in res["per_layer"].items():
        print(
            f"{layer:5d}  {r['linear']:12.4f}  {r['mlp']:9.4f}  {r['svm']:6.4f}  {r['sk_mlp']:6.4f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=["paper", "synthetic", "both"], default="both")
    ap.add_argument("--features", type=Path, default=ROOT / "features" / "paper-smollm2.h5")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--layers", type=int, default=33)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument(
        "--sklearn_layers",
        type=int,
        default=4,
        help="synthetic: layers timed with sklearn (0 = all)",
    )
    ap.add_argument(
        "--epochs", type=int, default=0, help="probe epochs (default 40 paper, 6 synthetic)"
    )
    ap.add_argument(
        "--batch",
        default="full",
        help="probe batch size: full (one-pass L-BFGS / early-stopped MLP, the configs' default) or rows",
    )
    ap.add_argument("--lr", type=float, default=0.0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument(
        "--accelerator", default="auto", help="Lightning accelerator of the probe run (cpu, gpu)"
    )
    ap.add_argument("--devices", type=int, default=1, help="devices of the probe run (> 1: DDP)")
    ap.add_argument("--skip_sklearn", action="store_true", help="time the probes only")
    args = ap.parse_args()
    args.batch = args.batch if args.batch == "full" else int(args.batch)
    default_lr = 1e-2 if args.batch == "full" else 2e-3
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-probes-") as tmp:
        tmp = Path(tmp)
        if args.case in ("paper", "both"):
            if not args.features.is_file():
                print(f"case (i) skipped: {args.features} does not exist; run "
                      "`probing extract --config configs/extract/paper.yaml` or pass --features")  # fmt: skip
            else:
                probes = run_probes(
                    args.features, tmp, args.epochs or 40, args.batch, args.lr or default_lr
                )
                sk = run_sklearn(args.features, None)
                results.append(compare(f"paper ({args.features.name})", probes, sk))
                print_result(results[-1])
        if args.case in ("synthetic", "both"):
            start = time.perf_counter()
            path = synthetic_file(tmp / "synthetic.h5", args.n, args.layers, args.hidden)
            print(
                f"synthetic {args.n}x{args.layers}x{args.hidden} float16 written in {time.perf_counter() - start:.0f} s"
            )
            probes = run_probes(
                path,
                tmp,
                args.epochs or 6,
                args.batch,
                args.lr or default_lr,
                args.accelerator,
                args.devices,
            )
            print(f"probes: {probes['seconds']:.1f} s")
            if not args.skip_sklearn:
                k = args.sklearn_layers
                sample = (
                    None
                    if k <= 0
                    else sorted({int(round(i)) for i in np.linspace(0, args.layers - 1, k)})
                )
                sk = run_sklearn(path, sample)
                results.append(
                    compare(f"synthetic N={args.n} L={args.layers} D={args.hidden}", probes, sk)
                )
                print_result(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
