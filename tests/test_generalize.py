"""`probing generalize` and per-source metrics: a spurious source feature shows as in-distribution ≈ 1,
cross-source ≈ chance; the linear heads match scikit-learn; bad input is one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from featurefactory import make_feature_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from probing.cli import main
from probing.generalize.fit import fit_heads, score_heads
from probing.probes.auroc import auroc_columns
from probing.probes.rates import source_metrics

SOURCES = ["normal_a", "normal_b", "harm_real", "harm_styled"]


def spurious_file(path, n_per=120, layers=3, dim=16, seed=0):
    """Four sources: two normal ones; ``harm_real`` carries the real harm direction ``u``;
    ``harm_styled`` is harmful but carries only its own style direction ``v`` (no ``u``)."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((2, dim))
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    v = v - (v @ u) * u
    v /= np.linalg.norm(v)
    src = np.repeat(np.arange(4), n_per)
    y = (src >= 2).astype(np.int64)
    x = rng.standard_normal((len(src), layers, dim)).astype(np.float32)
    x[src == 2] += 6 * u
    x[src == 3] += 6 * v
    meta = {"sources": [{"path": s, "label": None} for s in SOURCES]}
    return make_feature_file(path, hidden=x, labels=y, sources=src, meta=meta)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_spurious_source_is_in_distribution_perfect_and_cross_source_chance(tmp_path, caplog):
    h5 = spurious_file(tmp_path / "f.h5")
    out = tmp_path / "gen"
    code = main(
        ["generalize", "--features", f"[{h5}]", "--output", str(out), "--probes", "[linear]"]
    )
    assert code == 0
    rows = _rows(out / "generalization.csv")
    assert {
        "train",
        "test",
        "layer",
        "probe",
        "accuracy",
        "auroc",
        "tpr_at_1fpr",
        "flagged_rate",
    } <= set(rows[0])
    held = [r for r in rows if r["train"] == "all but harm_styled"]
    ind = [float(r["accuracy"]) for r in held if r["split"] == "in_distribution"]
    assert min(float(r["auroc"]) for r in held if r["split"] == "in_distribution") > 0.99
    cross = [r for r in held if r["split"] == "cross_source"]
    assert min(ind) > 0.9
    assert all(r["test"] == "harm_styled" for r in cross)
    assert all(0.25 < float(r["auroc"]) < 0.75 for r in cross)  # chance: ranked like the negatives
    assert all(float(r["accuracy"]) < 0.2 for r in cross)  # its catch rate at the 1% FPR threshold
    # a held-out *normal* source is handled fine: nothing spurious about it
    normal = [r for r in rows if r["train"] == "all but normal_a" and r["split"] == "cross_source"]
    assert all(float(r["auroc"]) > 0.95 and float(r["flagged_rate"]) < 0.2 for r in normal)
    md = (out / "generalization.md").read_text()
    assert "part" in md and "harm_styled" in md
    assert (out / "generalization.png").stat().st_size > 0


def test_matrix_fold_and_names(tmp_path):
    h5 = spurious_file(tmp_path / "f.h5")
    out = tmp_path / "gen"
    matrix = "[{train: [normal_a, harm_real], test: [normal_b, harm_styled], name: real-only}]"
    assert main(["generalize", "--features", f"[{h5}]", "--output", str(out), "--loso", "false",
                 "--matrix", matrix, "--probes", "[linear, mlp]"]) == 0  # fmt: skip
    rows = _rows(out / "generalization.csv")
    assert {r["train"] for r in rows} == {"real-only"}
    assert {r["probe"] for r in rows} == {"linear", "mlp"}
    assert {r["test"] for r in rows} == {"in-distribution", "normal_b", "harm_styled"}


def test_repeats_keep_every_seed_and_show_the_spread(tmp_path):
    h5 = spurious_file(tmp_path / "f.h5")
    out = tmp_path / "gen"
    matrix = "[{train: [normal_a, harm_real], test: [normal_b, harm_styled], name: real-only}]"
    assert main(["generalize", "--features", f"[{h5}]", "--output", str(out), "--loso", "false",
                 "--matrix", matrix, "--probes", "[linear]", "--repeats", "3", "--seed", "5"]) == 0  # fmt: skip
    rows = _rows(out / "generalization.csv")
    assert {r["seed"] for r in rows} == {"5", "6", "7"}
    one = [r for r in rows if r["test"] == "harm_styled" and r["layer"] == "0"]
    assert len(one) == 3  # one row per repeat
    md = (out / "generalization.md").read_text()
    assert "3 repeats (seeds 5–7)" in md and "± repeats" in md
    # the in-distribution splits differ between repeats: new fit/val/test parts per seed
    thresholds = {r["threshold"] for r in rows if r["test"] == "in-distribution"}
    assert len(thresholds) > 1


def test_average_repeats_means_and_spread():
    from probing.generalize.report import average_repeats

    base = {"train": "f", "test": "s", "split": "cross_source", "layer": 1, "probe": "linear",
            "auroc": 0.9, "flagged_rate": 0.1, "threshold": 0.5, "rows": 10, "positives": 10}  # fmt: skip
    rows = [
        {**base, "accuracy": 0.6, "tpr_at_1fpr": 0.2, "seed": 0},
        {**base, "accuracy": 0.8, "tpr_at_1fpr": 0.4, "seed": 1},
        {**base, "layer": 2, "accuracy": 0.5, "tpr_at_1fpr": 0.5, "seed": 0},
    ]
    got = {r["layer"]: r for r in average_repeats(rows)}
    assert got[1]["accuracy"] == pytest.approx(0.7) and got[1]["accuracy_sd"] == pytest.approx(0.1)
    assert got[1]["tpr_at_1fpr_sd"] == pytest.approx(0.1) and got[1]["repeats"] == 2
    assert got[2]["accuracy_sd"] == 0 and got[2]["repeats"] == 1 and "seed" not in got[2]


def test_repeats_below_one_is_one_line(tmp_path, capsys):
    h5 = spurious_file(tmp_path / "f.h5")
    code = main(
        ["generalize", "--features", f"[{h5}]", "--output", str(tmp_path / "g"), "--repeats", "0"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--repeats must be at least 1" in err and "Traceback" not in err


def test_unknown_source_is_one_line(tmp_path, capsys):
    h5 = spurious_file(tmp_path / "f.h5")
    code = main(["generalize", "--features", f"[{h5}]", "--output", str(tmp_path / "g"), "--loso", "false",
                 "--matrix", "[{train: [nope], test: [harm_real]}]"])  # fmt: skip
    assert code == 2
    err = [x for x in capsys.readouterr().err.strip().splitlines() if "error" in x]
    assert len(err) == 1 and "nope" in err[0] and "harm_real" in err[0]
    assert "Traceback" not in capsys.readouterr().err


def test_linear_heads_match_sklearn():
    rng = np.random.default_rng(0)
    n, dim, l2 = 300, 8, 0.05
    x = rng.standard_normal((n, 2, dim)).astype(np.float32)
    y = (x[:, 1, 0] + 0.5 * rng.standard_normal(n) > 0).astype(np.int64)
    head = fit_heads(torch.from_numpy(x), torch.from_numpy(y), "linear", l2=l2)
    ours = score_heads(head, torch.from_numpy(x)).numpy()
    for j in range(2):
        # mean CE + l2/2 (|w0|² + |w1|²) == sklearn's sum CE + |w|² / (2C) with C = 2 / (l2 n)
        ref = LogisticRegression(C=2 / (l2 * n), tol=1e-10, max_iter=10000).fit(x[:, j], y)
        np.testing.assert_allclose(ours[:, j], ref.predict_proba(x[:, j])[:, 1], atol=2e-3)


def test_source_metrics_against_reference():
    scores = np.array([[0.9], [0.2], [0.8]])
    positive = np.array([True, True, True])
    ref = (np.array([[0.1], [0.3], [0.5]]), np.array([False, False, False]))
    m = source_metrics(scores, positive, np.array([0.5]), reference=ref)
    assert m["accuracy"][0] == pytest.approx(2 / 3)
    assert m["flagged_rate"][0] == pytest.approx(2 / 3)
    assert m["auroc"][0] == pytest.approx(
        7 / 9
    )  # 0.9 and 0.8 beat all three negatives, 0.2 beats 0.1


def test_auroc_columns_equal_sklearn_with_ties():
    rng = np.random.default_rng(0)
    positive = rng.random(300) < 0.3
    scores = rng.random((300, 6))
    scores[:, 1] = np.round(scores[:, 1], 1)  # many ties, across the classes
    scores[:, 2] = 0.5  # one value: 0.5
    scores[:, 3] = positive + 0.0  # perfect: 1.0
    ours = auroc_columns(scores, positive)
    ref = [roc_auc_score(positive, scores[:, j]) for j in range(6)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert ours[2] == 0.5 and ours[3] == 1.0
    assert np.isnan(auroc_columns(scores, np.ones(300, bool))).all()


def _two_layer_shortcut_file(path, n_per=150, dim=16, seed=1):
    """Layer 0: every source has its own direction (in-distribution shortcut); layer 2: the harmful
    sources share a real direction ``u``; layer 1: noise."""
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((5, dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    src = np.repeat(np.arange(4), n_per)
    y = np.isin(src, [2, 3]).astype(np.int64)
    x = rng.standard_normal((len(src), 3, dim)).astype(np.float32)
    for s in range(4):
        x[src == s, 0] += 7 * dirs[s]
    x[y == 1, 2] += 3 * dirs[4]
    names = ["normal", "normal-heldout", "malicious", "malicious-heldout"]
    meta = {"sources": [{"path": n, "name": n} for n in names]}
    return make_feature_file(path, hidden=x, labels=y, sources=src, meta=meta)


def test_monitor_chooses_layer_and_threshold_on_held_out_sources(tmp_path):
    import lightning as L

    from probing.data import ActivationDataModule
    from probing.monitor import load_probe
    from probing.monitor.config import MonitorConfig
    from probing.monitor.probe import choose_layer
    from probing.monitor.run import monitor
    from probing.probes import LinearProbe

    L.seed_everything(0)
    h5 = _two_layer_shortcut_file(tmp_path / "f.h5")
    held = ["normal-heldout", "malicious-heldout"]
    dm = ActivationDataModule(str(h5), holdout_sources=held, batch_size=64)
    assert set(dm.source_names[i] for i in dm.sources["heldout"].source) == set(held)
    assert not set(dm.sources["main"].source.tolist()) & {1, 3}
    module = LinearProbe(
        lr=0.05,
        **dm.probe_args(),
    )
    trainer = L.Trainer(max_epochs=15, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=dm)
    ckpt = tmp_path / "probe.ckpt"
    trainer.save_checkpoint(ckpt)
    probe = load_probe(ckpt)
    assert choose_layer(probe, "auto", 0.02) == 0  # in-distribution validation: the shortcut layer
    report = monitor(
        MonitorConfig(ckpt=str(ckpt), eval=True, auto_tolerance=0.02, eval_fprs=[0.05])
    )
    assert report["chosen_layer"] == 2  # cross-source validation: the layer that transfers
    assert "held-out sources" in report["calibration_set"] or "heldout" in report["calibration_set"]
    assert set(report["chosen"]["per_source"]) == {"normal", "malicious"}  # eval: the test split
    with pytest.raises(Exception, match="holdout_sources"):
        ActivationDataModule(str(h5), holdout_sources=["nope"])


def test_demo_section_states_where_the_claim_holds(tmp_path):
    """The demo's "Does it generalise?" section on a file whose harmful sources share no direction with the
    held-out harmful questions: the verdict must say the early-layer claim does not hold."""
    from probing.demo_generalise import run_generalise, section

    rng = np.random.default_rng(3)
    names = ["normal", "malicious", "contrast", "heldout-benign-imperative", "heldout-benign-question",
             "heldout-harmful-imperative", "heldout-harmful-question", "jailbreak"]  # fmt: skip
    labels = ["normal", "malicious", "contrast", "heldout_benign", "heldout_benign",
              "heldout_harmful", "heldout_harmful", "jailbreak"]  # fmt: skip
    label_names = list(dict.fromkeys(labels))
    src = np.repeat(np.arange(len(names)), 80)
    y = np.array([label_names.index(labels[s]) for s in src])
    x = rng.standard_normal((len(src), 3, 8)).astype(np.float32)
    u, q = np.eye(8)[0], np.eye(8)[1]
    x[np.isin(src, [1, 5, 7])] += 5 * u  # harmful imperatives share u
    x[src == 6] += 5 * q  # harmful questions do not
    meta = {"sources": [{"path": n, "name": n} for n in names]}
    h5 = make_feature_file(
        tmp_path / "d.h5", hidden=x, labels=y, sources=src, label_names=label_names, meta=meta
    )
    result = run_generalise(h5, tmp_path / "gen", names)
    text = section(result, "gen", "synthetic")
    assert "## Does it generalise?" in text and "normal+malicious+contrast" in text
    assert "does not hold" in text


@pytest.mark.parametrize("in_memory", ["always", "never"])
def test_fit_writes_per_source_metrics_for_held_out_sources(tmp_path, monkeypatch, in_memory):
    import logging

    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])
    monkeypatch.chdir(tmp_path)
    h5 = spurious_file(tmp_path / "f.h5")
    linear = str(Path(__file__).resolve().parents[1] / "configs" / "probe" / "linear.yaml")
    argv = ["fit", "--config", linear, "--data.path", str(h5), "--trainer.max_epochs", "3",
            "--data.holdout_sources", "[harm_styled]", "--data.in_memory", in_memory,
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]  # fmt: skip
    assert main(argv) == 0
    (path,) = (tmp_path / "runs").rglob("per_source_metrics.csv")
    rows = _rows(path)
    assert {r["source"] for r in rows if r["split"] == "heldout"} == {"harm_styled"}
    assert {r["source"] for r in rows if r["split"] == "test"} == {
        "normal_a",
        "normal_b",
        "harm_real",
    }
    held = [r for r in rows if r["split"] == "heldout"]
    assert all(int(r["rows"]) == 120 and int(r["positives"]) == 120 for r in held)
    # the text baseline is reported where the rows are read in memory (its rows pair with theirs)
    assert any(r["probe"] == "text" and r["layer"] == "" for r in held) == (in_memory != "never")
    rows = [r for r in rows if r["probe"] != "text"]  # its prompts are "prompt i": no words to read
    held = [r for r in held if r["probe"] != "text"]
    if (
        in_memory == "never"
    ):  # one HDF5 chunk = one batch: 3 steps train too little to judge quality
        return
    # the held-out styled source carries no harm direction: missed, not ranked above the normals
    assert all(float(r["auroc"]) < 0.8 and float(r["accuracy"]) < 0.3 for r in held)
    real = [r for r in rows if r["split"] == "test" and r["source"] == "harm_real"]
    assert all(float(r["auroc"]) > 0.95 for r in real if r["layer"] != "0")
    normal = [r for r in rows if r["split"] == "test" and r["source"] == "normal_a"]
    assert all(r["tpr_at_1fpr"] == "" and float(r["flagged_rate"]) <= 0.2 for r in normal)


def test_generalize_logs_a_wandb_table_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    h5 = spurious_file(tmp_path / "f.h5", n_per=40)
    out = tmp_path / "gen"
    argv = ["generalize", "--features", f"[{h5}]", "--output", str(out), "--probes",
            "[linear, text]", "--bootstrap", "20", "--wandb_project", "probing-test"]  # fmt: skip
    assert main(argv) == 0
    tables = list(out.rglob("generalization_*.table.json"))
    assert tables, sorted(p.name for p in out.rglob("*"))[:20]
    assert list(out.rglob("above_words_*.table.json"))
    import wandb

    wandb.teardown()  # the next test's WandbLogger starts its own W&B service


def test_features_take_several_files_shell_style(tmp_path):
    from probing.generalize.config import parse

    assert parse(["--features", "a.h5", "b.h5", "--output", "o"]).features == ["a.h5", "b.h5"]
    assert parse(["--features", "[a.h5, b.h5]"]).features == ["a.h5", "b.h5"]
    assert parse(["--output", "o", "--features", "a.h5"]).features == ["a.h5"]
