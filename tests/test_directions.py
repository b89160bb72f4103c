"""``probing directions`` through the CLI on synthetic files with planted directions."""

from __future__ import annotations

import csv
import logging
import re

import h5py
import numpy as np
import pytest
from featurefactory import make_feature_file

from probing.cli import main

POSITIONS = ["inst", "post_1", "post_2"]
PLANTED = (2, 3)  # layers carrying the directions
N, L, D = 240, 5, 16


def planted_file(path, extra: dict[str, np.ndarray] | None = None):
    """Harm (``label``) planted along ``u`` at ``inst`` on layers 2-3; ``label_refused`` (balanced
    within each harm class, so independent of it) along an orthogonal ``v`` at ``inst`` and ``post_2``;
    ``label_same``: the harm labels with 10 % flipped and 20 rows without a verdict."""
    rng = np.random.default_rng(0)
    y = rng.permutation(np.arange(N) % 2)
    z = np.zeros(N, np.int64)
    for c in (0, 1):
        rows = np.flatnonzero(y == c)
        z[rng.permutation(rows)[: len(rows) // 2]] = 1
    same = y.copy()
    same[rng.choice(N, N // 10, replace=False)] ^= 1
    same[rng.choice(N, 20, replace=False)] = -1
    u, v = np.zeros(D, np.float32), np.zeros(D, np.float32)
    u[0], v[1] = 1, 1
    x = rng.standard_normal((N, L, len(POSITIONS), D)).astype(np.float32)
    for layer in PLANTED:
        x[:, layer, 0] += 8 * y[:, None] * u
        x[:, layer, 0] += 8 * z[:, None] * v
        x[:, layer, 2] += 8 * z[:, None] * v
    meta = {"positions": "template", "position_names": POSITIONS}
    make_feature_file(path, hidden=x, labels=y, meta=meta)
    datasets = {"label_refused": z, "label_same": same, **(extra or {})}
    with h5py.File(path, "a") as f:
        for name, values in datasets.items():
            f.create_dataset(name, data=values)
    return path


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def cell(rows, label_set, layer, position, column="auroc"):
    (row,) = [
        r
        for r in rows
        if (r["label_set"], r["layer"], r["position"]) == (label_set, str(layer), position)
    ]
    return float(row[column])


def test_planted_directions_auroc_and_cosines(tmp_path, caplog):
    h5 = planted_file(tmp_path / "f.h5")
    out = tmp_path / "dir"
    with caplog.at_level(logging.INFO, logger="probing"):
        assert main(["directions", str(h5), "--output", str(out)]) == 0
    rows = read_csv(out / "directions.csv")
    assert list(rows[0])[:9] == ["layer", "position", "label_set", "auroc", "rows", "positives",
                                 "test_rows", "test_positives", "norm"]  # fmt: skip
    assert {"cosine_label", "cosine_label_refused", "cosine_label_same"} <= set(rows[0])
    assert len(rows) == 3 * L * len(POSITIONS)
    for layer in range(L):
        harm = cell(rows, "label", layer, "inst")
        assert harm > 0.99 if layer in PLANTED else abs(harm - 0.5) < 0.2
        refused = cell(rows, "label_refused", layer, "post_2")
        assert refused > 0.99 if layer in PLANTED else abs(refused - 0.5) < 0.2
        assert abs(cell(rows, "label", layer, "post_1") - 0.5) < 0.2  # nothing planted there
    for layer in PLANTED:
        assert abs(cell(rows, "label", layer, "inst", "cosine_label_refused")) < 0.3
        assert cell(rows, "label", layer, "inst", "cosine_label_same") > 0.9
        assert cell(rows, "label_same", layer, "inst", "cosine_label") > 0.9
    own = [r["cosine_label"] for r in rows if r["label_set"] == "label"]
    assert set(own) == {""}  # a label set's own cosine is left empty
    harm_rows = [r for r in rows if r["label_set"] == "label"]
    assert {(r["rows"], r["positives"]) for r in harm_rows} == {(str(N), str(N // 2))}
    assert all(int(r["test_rows"]) == 72 for r in harm_rows)  # 30 % held out per class
    arrays = np.load(out / "directions.npz", allow_pickle=False)
    assert arrays["directions"].shape == (3, len(POSITIONS), L, D)
    assert list(arrays["label_sets"]) == ["label", "label_refused", "label_same"]
    assert list(arrays["positions"]) == POSITIONS and list(arrays["layers"]) == list(range(L))
    d = arrays["directions"][0, 0, 2]
    assert abs(d[0] - 8) < 1.5  # the class-mean difference along u, in raw units
    assert (out / "directions.png").stat().st_size > 0
    assert not list(out.glob(".*tmp*"))
    best = r"label set label: its difference-in-means direction separates the held-out rows best at layer [23], position inst \(AUROC 1.000 on 72 rows, 36 positive\)"
    assert re.search(best, caplog.text), caplog.text


def test_named_positions_layers_and_label_sets_are_selected(tmp_path):
    h5 = planted_file(tmp_path / "f.h5")
    out = tmp_path / "dir"
    argv = ["directions", str(h5), "--output", str(out), "--positions", "[post_2, inst]",
            "--layers", "1:4", "--label_sets", "[label_refused]", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    rows = read_csv(out / "directions.csv")
    assert {r["position"] for r in rows} == {"inst", "post_2"}
    assert {r["layer"] for r in rows} == {"1", "2", "3"}
    assert {r["label_set"] for r in rows} == {"label_refused"}
    assert cell(rows, "label_refused", 2, "post_2") > 0.99
    assert not any(c.startswith("cosine_") and c != "cosine_label_refused" for c in rows[0])
    # `last` names post_2 of a template file
    assert main([*argv[:4], "--positions", "[last]", "--label_sets", "[label]", "--classes",
                 "[normal, malicious]"]) == 0  # fmt: skip
    assert {r["position"] for r in read_csv(out / "directions.csv")} == {"post_2"}


def test_the_harm_label_set_takes_classes_and_a_class_map(tmp_path):
    h5 = planted_file(tmp_path / "f.h5")
    out = tmp_path / "dir"
    argv = ["directions", str(h5), "--output", str(out), "--class_map", "{malicious: harmful}",
            "--classes", "[normal, harmful]", "--label_sets", "[label]"]  # fmt: skip
    assert main(argv) == 0
    assert cell(read_csv(out / "directions.csv"), "label", 2, "inst") > 0.99


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (["--positions", "[inst, nope]"], None, r"--positions='nope' is not a position of .*'inst', 'post_1', 'post_2'"),
        (["--positions", "[7]"], None, r"--positions=7 is out of range"),
        (["--classes", "[normal, contrast]"], None, r"\['contrast'\] is not a class of .*--classes"),
        (["--label_sets", "[label_nope]"], None, r"--label_sets names \['label_nope'\], which .* has the label sets \['label', 'label_refused', 'label_same'\]"),
        ([], {"label_empty": np.full(N, -1)}, r"label set 'label_empty' has no rows of class '0' .*--label_sets"),
        (["--label_sets", "[label_few]"], {"label_few": np.r_[1, np.zeros(N - 1, int)]},
         r"label set 'label_few' has too few rows for a held-out split: 239 negative and 1 positive .*--test_fraction"),
        (["--label_sets", "[label_bad]"], {"label_bad": np.full(N, 2)}, r"label set 'label_bad' holds values \[2\]"),
        (["--test_fraction", "1.5"], None, r"--test_fraction must be strictly between 0 and 1"),
        (["--bootstrap", "-1"], None, r"--bootstrap must be >= 0 \(0 = no intervals\), got -1"),
        (["--layers", "9"], None, r"--layers"),
        (["--label_sets", "[]"], None, r"--label_sets is empty"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(tmp_path, capsys, args, extra, message):
    h5 = planted_file(tmp_path / "f.h5", extra)
    out = tmp_path / "dir"
    err = _error(["directions", str(h5), "--output", str(out), *args], capsys)
    assert err.startswith("probing directions: error: ")
    assert re.search(message, err), err
    assert not out.exists()  # validated before any work


def test_a_class_with_no_rows_and_an_output_that_is_a_file(tmp_path, capsys):
    h5 = make_feature_file(tmp_path / "f.h5", n=40, label_names=("normal", "malicious", "contrast"),
                           labels=np.arange(40) % 2, hidden=np.zeros((40, 2, 4), np.float32))  # fmt: skip
    err = _error(["directions", str(h5), "--classes", "[normal, contrast]",
                  "--output", str(tmp_path / "d")], capsys)  # fmt: skip
    assert "label set 'label' has no rows of class 'contrast'" in err and "--classes" in err
    (tmp_path / "file").write_text("x")
    err = _error(["directions", str(h5), "--output", str(tmp_path / "file")], capsys)
    assert f"--output {tmp_path / 'file'} is a file; give a folder" in err
    err = _error(["directions", str(tmp_path / "none.h5"), "--output", str(tmp_path / "d")], capsys)
    assert "none.h5" in err


def test_directions_log_a_wandb_table_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    h5 = planted_file(tmp_path / "f.h5")
    out = tmp_path / "dir"
    argv = ["directions", str(h5), "--output", str(out), "--wandb_project", "probing-test"]
    assert main(argv) == 0
    assert list(out.rglob("directions_*.table.json")), sorted(p.name for p in out.rglob("*"))[:20]
    import wandb

    wandb.teardown()


@pytest.mark.parametrize(
    ("harm_kept", "reading"),
    [
        (True, "the harm belief persists while the refusal signal drops"),
        (False, "the harmfulness reading itself moves towards normal"),
    ],
)
def test_locate_places_a_held_out_class_on_each_direction(
    tmp_path, caplog, monkeypatch, harm_kept, reading
):
    """Jailbreak rows planted with the harm signal at ``inst`` but no refusal signal: on the harm
    direction they sit near the malicious mean (placement ≈ 1), on the refusal direction near the
    complied rows (≈ 0); they are fitted on by no label set. Each position is read once."""
    from probing.features.store import FeatureFile

    reads = []
    layers = FeatureFile.layers
    monkeypatch.setattr(
        FeatureFile, "layers", lambda self, *a, **k: reads.append(k) or layers(self, *a, **k)
    )
    rng = np.random.default_rng(1)
    n, jb = 200, 60
    y = np.r_[np.arange(n) % 2, np.full(jb, 2)]
    z = np.r_[(rng.random(n) < 0.5).astype(np.int64), np.ones(jb, np.int64)]  # "refused" verdicts
    x = rng.standard_normal((n + jb, L, len(POSITIONS), D)).astype(np.float32)
    x[:, 3, 0, 0] += 8 * ((y == 1) | (harm_kept & (y == 2)))  # harm along u at inst
    x[:n, 3, 2, 1] += 8 * z[:n]  # refusal along v at post_2: plain rows only
    meta = {"positions": "template", "position_names": POSITIONS}
    h5 = make_feature_file(
        tmp_path / "j.h5", hidden=x, labels=y, meta=meta,
        label_names=("normal", "malicious", "jailbreak"),
    )  # fmt: skip
    with h5py.File(h5, "a") as f:
        f.create_dataset("label_refused", data=z)
    out = tmp_path / "dir"
    with caplog.at_level(logging.INFO, logger="probing"):
        args = ["directions", str(h5), "--output", str(out), "--locate", "[jailbreak]"]
        assert main(args) == 0
    assert len(reads) == len(POSITIONS)  # one read per position for directions and placements
    rows = read_csv(out / "located.csv")
    assert list(rows[0]) == ["class", "label_set", "position", "layer", "n", "placement",
                             "placement_lo", "placement_hi", "auroc_vs_negative",
                             "auroc_vs_positive"]  # fmt: skip
    assert len(rows) == 2 * len(POSITIONS) * L and {r["n"] for r in rows} == {str(jb)}
    harm = cell(rows, "label", 3, "inst", "placement")
    lo, hi = (cell(rows, "label", 3, "inst", f"placement_{k}") for k in ("lo", "hi"))
    assert lo < harm < hi and hi - lo < 0.3  # 60 located rows and 30 held-out rows per class
    refusal = cell(rows, "label_refused", 3, "post_2", "placement")
    assert (0.85 < harm < 1.15 if harm_kept else -0.15 < harm < 0.15) and -0.15 < refusal < 0.15
    vs_normal, vs_harmful = (
        cell(rows, "label", 3, "inst", f"auroc_vs_{k}") for k in ("negative", "positive")
    )
    assert (vs_normal > 0.99 and abs(vs_harmful - 0.5) < 0.15) if harm_kept else vs_harmful < 0.01
    # never fitted on: the refusal label set's rows exclude the 60 jailbreak rows (all "refused")
    dirs = read_csv(out / "directions.csv")
    assert {r["rows"] for r in dirs if r["label_set"] == "label_refused"} == {str(n)}
    assert (out / "located.png").stat().st_size > 1000
    assert "jailbreak (60 rows, never fitted on) sits" in caplog.text
    assert reading in caplog.text and "places rows loosely" not in caplog.text


def test_locate_refuses_an_unknown_class(tmp_path, capsys):
    h5 = planted_file(tmp_path / "f.h5")
    capsys.readouterr()
    assert main(["directions", str(h5), "--output", str(tmp_path / "d"), "--locate", "[jb]"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--locate ['jb']: not a class of" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_the_placement_interval_covers_the_true_placement():
    """Located rows at 0.3 of the way from the negatives' mean to the positives': the 95 % interval
    holds 0.3 in about 95 % of repeated samples (percentile bootstrap of a ratio: a little less)."""
    from probing.directions.locate import placement_interval

    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        neg, pos = rng.normal(0, 1, (50, 1)), rng.normal(2, 1, (50, 1))
        mine = rng.normal(0.6, 1, (50, 1))
        lo, hi = placement_interval(mine, neg, pos, 500, rng)
        hits += bool(lo[0] <= 0.3 <= hi[0])
    assert 0.88 <= hits / 200 <= 0.99, hits
    same = np.zeros((20, 1))  # the classes do not differ: no interval, said as NaN
    lo, hi = placement_interval(same, same, same, 100, rng)
    assert np.isnan(lo).all() and np.isnan(hi).all()
