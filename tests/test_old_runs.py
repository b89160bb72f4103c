"""A run written by an older probing (tests/data/old_run: config, checkpoint, metrics) keeps loading:
its YAML and class paths through the Lightning CLI, its checkpoint in `probing test` (the same
metrics) and in the monitor (the split rebuilt, as it holds no split rows)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.data import ActivationDataModule
from probing.monitor.labelled import split_rows
from probing.monitor.probe import load_probe
from probing.training.lightning import build_cli

OLD = Path(__file__).parent / "data" / "old_run"


@pytest.fixture
def old_run(workdir):
    make_feature_file(
        workdir / "feat.h5",
        n=120,
        num_layers=3,
        hidden_size=8,
        separability=[0.5, 1.0, 3.0],
        seed=7,
    )
    for name in ("config.yaml", "probe.ckpt"):
        shutil.copy(OLD / name, workdir / name)
    return workdir


def metrics(path):
    with open(path, newline="") as f:
        return [(r["layer"], r["split"], round(float(r["accuracy"]), 6)) for r in csv.DictReader(f)]


def test_old_config_and_checkpoint_test_to_the_same_metrics(old_run):
    argv = ["test", "--config", "config.yaml", "--ckpt_path", "probe.ckpt",
            "--trainer.default_root_dir", "again"]  # fmt: skip
    build_cli(argv)
    assert metrics(old_run / "again" / "per_layer_metrics.csv") == metrics(
        OLD / "per_layer_metrics.csv"
    )
    build_cli(["predict", *argv[1:5], "--trainer.default_root_dir", "pred"])
    lines = (old_run / "pred" / "predictions.csv").read_text().splitlines()
    assert len(lines) == 1 + 120 * 3  # every row at each of the 3 layers


def test_old_checkpoint_in_the_monitor(old_run):
    probe = load_probe("probe.ckpt")
    assert probe.data_path.resolve() == (old_run / "feat.h5").resolve()
    assert probe.split_rows is None  # written before checkpoints kept them: rebuilt
    dm = ActivationDataModule(**{**probe.data_hparams, "path": "feat.h5"})
    expected = {k: v.numpy() for k, v in dm.state_dict()["split_rows"].items()}
    for name in ("train", "val", "test"):
        rows, _ = split_rows(probe, probe.data_path, name, 120)
        np.testing.assert_array_equal(rows, expected[name])
    # its standardisation buffers are the data's train statistics, as the new probes get them
    mean, std = dm.input_stats
    torch.testing.assert_close(probe.module.input_mean, torch.as_tensor(mean))
    torch.testing.assert_close(probe.module.input_std, torch.as_tensor(std))
