"""The paper's weak classifiers (linear SVM, MLP(100)) per layer, and ``probing weak``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.cli import main
from probing.data import ActivationDataModule
from probing.probes import report
from probing.probes.weak import fit_layers, weak_rows


@pytest.fixture(scope="module")
def feat(tmp_path_factory):
    path = tmp_path_factory.mktemp("weak") / "feat.h5"
    return make_feature_file(
        path, n=300, num_layers=3, hidden_size=10, separability=[0.1, 1.0, 4.0], seed=4
    )


def test_weak_matches_direct_sklearn_on_the_same_split(feat):
    from sklearn.svm import SVC

    dm = ActivationDataModule(str(feat), split=(0.7, 0.0, 0.3), seed=42)
    out = fit_layers(dm, ["svm"], seed=42)
    train, test = dm.split_pos["train"], dm.split_pos["test"]
    y = dm.sources["main"].y
    for j, layer in enumerate(dm.layers):
        x = dm.read_layer(layer)
        mean, std = x[train].mean(0), x[train].std(0)
        clf = SVC(kernel="linear").fit((x[train] - mean) / std, y[train])
        ref = clf.score((x[test] - mean) / std, y[test])
        assert out["metrics"]["svm"]["accuracy"][j] == pytest.approx(ref, abs=1e-9)
    acc = out["metrics"]["svm"]["accuracy"]
    assert acc[0] < 0.7 < 0.95 < acc[2]
    assert len(test) == 90  # the paper's 70/30 split


def test_seeds_give_an_interval(feat):
    dm = ActivationDataModule(str(feat), split=(0.7, 0.0, 0.3), layers=[2])
    rows = weak_rows(dm, ["mlp"], seeds=3, mlp_max_iter=50)
    (row,) = rows
    assert row["accuracy_lo"] <= row["accuracy"] <= row["accuracy_hi"]


def test_weak_cli_writes_report(feat, tmp_path, monkeypatch):
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])
    out = tmp_path / "weak"
    assert (
        main(
            [
                "weak",
                "--data.path",
                str(feat),
                "--output_dir",
                str(out),
                "--bootstrap",
                "30",
                "--mlp_max_iter",
                "100",
            ]
        )
        == 0
    )
    rows = report.read_metrics(out)
    assert {(r["probe"], r["layer"]) for r in rows} == {
        (p, layer) for p in ("svm", "mlp") for layer in range(3)
    } | {("text", None)}  # the text baseline: one row, no layer
    assert all(
        r["split"] == "test" and r["accuracy_lo"] <= r["accuracy"] <= r["accuracy_hi"] for r in rows
    )
    info = json.loads((out / "per_layer_metrics.json").read_text())
    assert (
        info["classes"] == ["normal", "malicious"]
        and info["feature_meta"]["model"] == "synthetic-model"
    )
    assert (out / "accuracy_per_layer.png").stat().st_size > 1000
    assert "split:" in (out / "config.yaml").read_text()


def test_weak_cli_bad_layer_exits_2(feat, capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])
    assert main(["weak", "--data.path", str(feat), "--data.layers", "[5]"]) == 2
    assert "--data.layers: layer 5 is out of range" in capsys.readouterr().err


def test_report_roundtrip_keeps_nan(tmp_path):
    rows = [
        {
            "layer": 1,
            "probe": "svm",
            "split": "transfer",
            "accuracy": 0.5,
            "f1": 0.4,
            "auroc": float("nan"),
        }
    ]
    report.write_metrics(tmp_path, rows)
    (back,) = report.read_metrics(tmp_path / report.CSV_NAME)
    assert back["layer"] == 1 and np.isnan(back["auroc"])
    assert json.loads((tmp_path / report.JSON_NAME).read_text())["rows"][0]["auroc"] is None


def test_weak_text_baseline_reads_the_prompts_words(tmp_path, monkeypatch):
    """Words that carry the label: the text baseline is perfect where the states are noise."""
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    x = rng.standard_normal((120, 2, 8)).astype(np.float32)
    prompts = [f"{'bake a cake' if c == 0 else 'build a bomb'} number {i}" for i, c in enumerate(y)]
    feat = make_feature_file(tmp_path / "w.h5", hidden=x, labels=y, prompts=prompts)
    out = tmp_path / "weak"
    assert main(["weak", "--data.path", str(feat), "--output_dir", str(out),
                 "--classifiers", "[svm, text]"]) == 0  # fmt: skip
    rows = {(r["probe"], r["layer"]): r for r in report.read_metrics(out)}
    assert rows[("text", None)]["accuracy"] == 1.0
    assert max(rows[("svm", j)]["accuracy"] for j in range(2)) < 0.8
