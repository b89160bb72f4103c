"""``--trainer.devices 2 --trainer.strategy ddp`` on CPU gives the test metrics of one process.

Full-batch training makes both runs take the same steps: with 2 processes each rank holds half of the
(even) train split and DDP averages the two halves' gradients, which is the full-batch gradient.
The CLI runs in a subprocess because the ``ddp`` launcher re-runs the command line.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from featurefactory import make_feature_file

ROOT = Path(__file__).resolve().parents[1]
LINEAR = str(ROOT / "configs" / "probe" / "linear.yaml")


def run_cli(tmp: Path, feat: Path, devices: int, batch: int, *extra: str, sub: str = "fit") -> Path:
    out = tmp / f"{sub}-devices{devices}"
    argv = [
        sys.executable, "-m", "probing.cli", sub, "--config", LINEAR, "--data.path", str(feat),
        "--trainer.logger", "false", "--trainer.default_root_dir", str(out), "--trainer.accelerator", "cpu",
        "--trainer.devices", str(devices), "--trainer.strategy", "ddp" if devices > 1 else "auto",
        "--trainer.max_epochs", "25", "--trainer.enable_progress_bar", "false",
        "--data.batch_size", str(batch), "--model.init_args.lr", "0.05", "--model.init_args.scheduler", "none",
        *extra,
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
        "PYTHONWARNINGS": "ignore",
    }
    proc = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def predictions(out: Path) -> dict:
    with open(out / "predictions.csv", newline="") as f:
        return {(r["row"], r["layer"]): float(r["p_malicious"]) for r in csv.DictReader(f)}


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(tmp_path):
    # 400 balanced rows -> train 280, val 60, test 60: every split divides evenly over 2 ranks
    feat = make_feature_file(tmp_path / "feat.h5", n=400, num_layers=4, hidden_size=12,
                             separability=[0.3, 0.8, 1.5, 3.0], seed=11)  # fmt: skip
    fit1 = run_cli(tmp_path, feat, devices=1, batch=280)
    fit2 = run_cli(tmp_path, feat, devices=2, batch=140)
    one, two = (json.loads((d / "per_layer_metrics.json").read_text()) for d in (fit1, fit2))
    rows1 = {(r["layer"], r["split"]): r for r in one["rows"]}
    rows2 = {(r["layer"], r["split"]): r for r in two["rows"]}
    assert (one["world_size"], two["world_size"]) == (1, 2)
    # 4 layers x (val, test), and the text baseline on val and test (layer None; rank zero fits it)
    assert rows1.keys() == rows2.keys() and len(rows1) == 8 + 2
    for key, r in rows1.items():
        assert rows2[key]["accuracy"] == pytest.approx(r["accuracy"], abs=1 / 60 + 1e-9), key
        assert rows2[key]["auroc"] == pytest.approx(r["auroc"], abs=0.01), key
    assert (
        one["best_layer_on_val"]["linear"]["layer"]
        == two["best_layer_on_val"]["linear"]["layer"]
        == 3
    )
    # predict with 2 processes: every row once (the sampler's padding dropped), as with one process
    pred1 = predictions(run_cli(tmp_path, feat, 1, 64, "--ckpt_path", str(fit2), sub="predict"))
    pred2 = predictions(run_cli(tmp_path, feat, 2, 64, "--ckpt_path", str(fit2), sub="predict"))
    assert len(pred1) == 400 * 4 and pred2.keys() == pred1.keys()
    for key, p in pred1.items():
        assert pred2[key] == pytest.approx(p, abs=1e-5), key
