"""`probing fit|test` at the edges a tester's sweep found: one probed layer, too few rows to
validate, a checkpoint naming a foreign class, a plain pickle as checkpoint, Ctrl-C."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "probe"
LINEAR, LINEAR_MLP = str(CONFIGS / "linear.yaml"), str(CONFIGS / "linear_mlp.yaml")
FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
RUNS = ["--trainer.logger", "false", "--trainer.default_root_dir", "runs"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def feat(workdir):
    return str(make_feature_file(workdir / "feat.h5", n=60, num_layers=4, hidden_size=8, seed=5))


def last_error(capsys, match: str) -> str:
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("probing ") and ": error: " in last, err
    assert match in last and "Traceback" not in err, err
    return last


@pytest.mark.parametrize(("layers", "probed"), [("2", 2), ("[2]", 2), ("-1", 3)])
def test_fit_one_layer(workdir, feat, layers, probed):
    """`--data.layers 12` is the documented way to probe one layer (it died in the metrics)."""
    fit = ["fit", "--config", LINEAR_MLP, "--data.path", feat, "--data.layers", layers]
    assert main([*fit, "--trainer.max_epochs", "2", *RUNS, *FAST]) == 0
    with open(workdir / "runs" / "per_layer_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["layer"], r["probe"], r["split"]) for r in rows} == {
        (str(probed), p, s) for p in ("linear", "mlp") for s in ("val", "test")
    }
