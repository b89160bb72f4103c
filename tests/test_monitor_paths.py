"""`probing monitor` finds a probe's training feature file from any folder: the checkpoint records
its absolute path and fingerprint; a relative path is tried from the checkpoint's folders first."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.cli import run_command
from probing.data import ActivationDataModule
from probing.monitor import load_probe
from probing.monitor.probe import DATA_STATE_KEY
from probing.probes import LinearProbe


def fit_here(data: str, ckpt: Path) -> Path:
    """Train a tiny probe on ``data`` as given (relative to the current folder), saved like `fit`."""
    L.seed_everything(0, verbose=False)
    dm = ActivationDataModule(data, split=(0.5, 0.25, 0.25), batch_size=64)
    module = LinearProbe(
        **dm.probe_args(), lr=0.05,
    )  # fmt: skip
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=dm)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(ckpt)
    return ckpt


@pytest.fixture
def project(tmp_path, monkeypatch):
    """``a/feat.h5`` with a probe fitted in ``a`` on ``feat.h5``; ``b/feat.h5`` another file of the
    same name (another fingerprint); the current folder is ``b``."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    make_feature_file(
        a / "feat.h5", n=80, num_layers=3, hidden_size=4, meta={"fingerprint": "a" * 64}
    )
    make_feature_file(
        b / "feat.h5", n=80, num_layers=3, hidden_size=4, meta={"fingerprint": "b" * 64}
    )
    monkeypatch.chdir(a)
    ckpt = fit_here("feat.h5", a / "runs" / "probing" / "x" / "checkpoints" / "best.ckpt")
    monkeypatch.chdir(b)
    return a, b, ckpt


def test_the_checkpoint_records_the_absolute_path(project):
    a, _, ckpt = project
    raw = torch.load(ckpt, weights_only=True)
    assert raw["datamodule_hyper_parameters"]["path"] == "feat.h5"  # as given
    state = raw[DATA_STATE_KEY]
    assert (state["path"], state["fingerprint"]) == (str(a / "feat.h5"), "a" * 64)
    assert set(state["split_rows"]) == {"train", "val", "test"}  # file rows, for the monitor


def test_monitor_from_another_folder_uses_the_training_file(project, caplog):
    a, b, ckpt = project
    assert load_probe(ckpt).data_path == a / "feat.h5"  # not b/feat.h5 in the current folder
    moved = b / "elsewhere" / "probe.ckpt"  # a copied checkpoint: the absolute path still holds
    moved.parent.mkdir()
    shutil.copy(ckpt, moved)
    assert load_probe(moved).data_path == a / "feat.h5"
    # --eval on the training file's test split, from folder b (no model needed)
    out = b / "report.json"
    argv = ["--ckpt", str(moved), "--eval", "--json", "--output", str(out), "--bootstrap", "0"]
    assert run_command("monitor", argv) == 0
    report = json.loads(out.read_text())
    assert report["checkpoint"] == str(moved) and report["layers"]


def test_older_checkpoints_resolve_from_the_checkpoint_folder(project, caplog):
    """Without the recorded state: the relative path from the checkpoint's folders, before the
    current folder; a file of another fingerprint is never taken."""
    a, b, ckpt = project
    raw = torch.load(ckpt, weights_only=True)
    del raw[DATA_STATE_KEY]
    old = a / "runs" / "old.ckpt"
    torch.save(raw, old)
    assert load_probe(old).data_path == a / "feat.h5"
    raw = torch.load(ckpt, weights_only=True)
    raw[DATA_STATE_KEY]["path"] = str(b / "gone.h5")  # the training file was deleted
    stray = b / "stray.ckpt"  # and the checkpoint lies beside another file of the name
    torch.save(raw, stray)
    (a / "feat.h5").unlink()
    caplog.set_level(logging.WARNING)
    assert load_probe(stray).data_path is None
    assert "b/feat.h5 is not the training file" in caplog.text
