"""Every reader picks a stored position by index or by the name the file records: the data module
(``probing fit``, ``probing weak``), ``probing generalize``, the monitor's probe (through the
checkpoint's data options) and ``probing lens``; old files without ``position_names`` too."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.cli import main
from probing.data import ActivationDataModule
from probing.errors import ProbingError
from probing.monitor.probe import load_probe

ROOT = Path(__file__).resolve().parents[1]
LINEAR = str(ROOT / "configs" / "probe" / "linear.yaml")
NAMES = ["inst", "post_1", "post_2"]
SOURCES = ["a", "b", "c", "d"]


def template_file(path: Path, n: int = 160, layers: int = 3, dim: int = 8) -> Path:
    """Positions ``inst, post_1, post_2``: only ``inst`` carries the class (the others are noise)."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.standard_normal((n, layers, 3, dim)).astype(np.float32)
    x[:, :, 0, 0] += 6 * y[:, None]
    meta = {
        "positions": "template",
        "position_names": NAMES,
        "sources": [{"path": s, "label": None} for s in SOURCES],
    }
    src = np.arange(n) % 4
    return make_feature_file(path, hidden=x, labels=y, meta=meta, sources=src)


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])


def test_data_module_takes_names(tmp_path):
    path = template_file(tmp_path / "t.h5")
    with ActivationDataModule(str(path), position="inst").sources["main"].ff as ff:
        hidden = ff.column("hidden")
    for given, index in [("inst", 0), ("post_1", 1), ("post_2", 2), ("last", 2), (-1, 2), (0, 0)]:
        dm = ActivationDataModule(str(path), position=given)
        assert dm.position == index and dm.hparams["position"] == given
        np.testing.assert_array_equal(dm.read_layer(1), hidden[:, 1, index])
    with pytest.raises(
        ProbingError, match=r"'post_3' is not a position .*\['inst', 'post_1', 'post_2'\]"
    ):
        ActivationDataModule(str(path), position="post_3")


def test_old_file_without_names(tmp_path):
    path = make_feature_file(tmp_path / "old.h5", n=40, num_layers=2, hidden_size=4)
    assert ActivationDataModule(str(path), position="last").position == 0
    with pytest.raises(
        ProbingError, match=r"--data.position='inst' is not a position .*\['last'\]"
    ):
        ActivationDataModule(str(path), position="inst")


def test_fit_by_name_and_the_monitor_reads_it(tmp_path, quiet, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = template_file(tmp_path / "t.h5")
    fast = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    argv = ["fit", "--config", LINEAR, "--data.path", str(path), "--trainer.max_epochs", "2"]
    assert main([*argv, "--data.position", "post_1", "--trainer.logger", "false", *fast]) == 0
    (ckpt,) = sorted(tmp_path.glob("**/checkpoints/last.ckpt"))
    probe = load_probe(ckpt)
    assert probe.data_hparams["position"] == "post_1" and probe.position == 1
    assert probe.feature_meta["position_names"] == NAMES
    probe.feature_meta.pop("position_names")  # a checkpoint of an older file: names from the count
    assert probe.position == 1


def test_weak_generalize_and_bad_names_are_one_line(tmp_path, quiet, capsys):
    path = template_file(tmp_path / "t.h5")
    code = main(["weak", "--data.path", str(path), "--data.position", "post_9",
                 "--output_dir", str(tmp_path / "w")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--data.position='post_9' is not a position" in err and "'inst'" in err
    out = tmp_path / "gen"
    common = ["generalize", "--features", f"[{path}]", "--output", str(out), "--probes", "[linear]",
              "--bootstrap", "0", "--classes", "[normal, malicious]"]  # fmt: skip
    assert main([*common, "--position", "nope"]) == 2
    assert "--position='nope' is not a position" in capsys.readouterr().err
    assert main([*common, "--position", "inst"]) == 0
    assert (out / "generalization.csv").is_file()
