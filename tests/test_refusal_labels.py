"""Refusal verdicts as a second label set: ``probing refusal --features`` / ``--verdicts`` join them
to a feature file of the same model and prompts (``label_refused``), and ``fit``, ``weak``,
``generalize`` and ``directions`` train on "did the model refuse"."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from tiny import save_tiny

from probing.cli import main
from probing.features import FeatureFile
from probing.monitor.probe import load_probe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A saved tiny llama, 24 normal + 24 malicious prompts and their features (three positions)."""
    tmp = tmp_path_factory.mktemp("refusal-labels")
    model = save_tiny(tmp / "tiny", "llama")
    normal, bad = tmp / "normal.txt", tmp / "bad.txt"
    normal.write_text("\n".join(f"tell me about topic {i}" for i in range(24)) + "\n")
    bad.write_text("\n".join(f"help me do harm {i} {'!' * (i % 3)}" for i in range(24)) + "\n")
    prompts = f"[{{path: {normal}, label: normal}}, {{path: {bad}, label: malicious}}]"
    feats = tmp / "f.h5"
    args = ["extract", "--model.name", str(model), "--prompts", prompts, "--output", str(feats),
            "--positions", "[inst, last, mean]", "--progress", "false"]  # fmt: skip
    assert main(args) == 0
    return {"model": model, "prompts": prompts, "features": feats}


@pytest.fixture
def feats(made, tmp_path):
    """A fresh copy of the features (joins change the file)."""
    path = tmp_path / "f.h5"
    path.write_bytes(made["features"].read_bytes())
    return path


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])


def verdict_of(i: int, label: str) -> str:
    """Planted: most malicious prompts refused, some normal ones; every 7th unclear."""
    if i % 7 == 3:
        return "unclear"
    refused = (label == "malicious") != (i % 3 == 0)
    return "refusal" if refused else "compliance"


def write_verdicts(folder: Path, features: Path, edit=None, model: str | None = None) -> Path:
    """A refusal run's output written by hand, in prompt order, for the prompts of ``features``."""
    with FeatureFile(features) as ff:
        order = np.argsort(ff.column("prompt_index"))
        prompts = [ff.column("prompt")[r] for r in order]
        labels = [ff.label_names[ff.labels[r]] for r in order]
        meta = ff.meta
    rows = [
        [lab, p, "...", 0, verdict_of(i, lab)] for i, (lab, p) in enumerate(zip(labels, prompts))
    ]
    if edit:
        rows = edit(rows)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "refusal.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["label", "prompt", "continuation", "refused", "verdict"])
        w.writerows(rows)
    summary = {
        "model": {"model": model or meta["model"], "gguf_sha256": "", "model_revision": ""},
        "template": meta["template"],
        "system_prompt": meta["system_prompt"],
        "max_new_tokens": 20,
    }
    (folder / "refusal_summary.json").write_text(json.dumps(summary))
    return folder


def join(verdicts: Path, features: Path) -> int:
    return main(["refusal", "--verdicts", str(verdicts), "--features", str(features)])


def test_join_then_train_on_refusal(feats, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert join(write_verdicts(tmp_path / "v", feats), feats) == 0
    with FeatureFile(feats) as ff:
        attrs = ff.attrs_of("label_refused")
        assert json.loads(attrs["names"]) == ["complied", "refused"]
        assert attrs["source"] == str(tmp_path / "v")
        got = ff.column("label_refused")
        names = [ff.label_names[y] for y in ff.labels]
        want = [
            {"refusal": 1, "compliance": 0, "unclear": -1}[verdict_of(int(i), lab)]
            for i, lab in zip(ff.column("prompt_index"), names, strict=True)
        ]
        np.testing.assert_array_equal(got, want)
        assert ff.meta["position_names"] == ["inst", "last", "mean"]  # the rest as it was
    fit = ["fit", "--config", str(ROOT / "configs/probe/linear.yaml"), "--data.path", str(feats),
           "--trainer.max_epochs", "1", "--trainer.logger", "false",
           "--trainer.enable_progress_bar", "false"]  # fmt: skip
    assert (
        main([*fit, "--data.label", "refused", "--data.position", "inst"]) == 2
    )  # config's classes
    assert main([*fit, "--data.label", "refused", "--data.classes", "[complied, refused]",
                 "--data.position", "inst"]) == 0  # fmt: skip
    (ckpt,) = sorted(tmp_path.glob("**/checkpoints/last.ckpt"))
    probe = load_probe(ckpt)
    assert probe.class_names == ["complied", "refused"] and probe.position == 0
    weak = ["weak", "--data.path", str(feats), "--data.label", "label_refused",
            "--classifiers", "[svm]", "--output_dir", str(tmp_path / "weak")]  # fmt: skip
    assert main(weak) == 0
    info = json.loads((tmp_path / "weak" / "per_layer_metrics.json").read_text())
    assert info["classes"] == ["complied", "refused"]
    gen = ["generalize", "--features", f"[{feats}]", "--output", str(tmp_path / "gen"),
           "--label", "refused", "--classes", "[complied, refused]", "--probes", "[linear]",
           "--bootstrap", "0", "--position", "mean", "--split", "[0.5, 0.25, 0.25]"]  # fmt: skip
    assert main(gen) == 0
    assert (tmp_path / "gen" / "generalization.csv").exists()
    out = tmp_path / "dirs"
    assert (
        main(["directions", str(feats), "--output", str(out), "--positions", "[inst, mean]"]) == 0
    )
    with open(out / "directions.csv", newline="") as f:
        sets = {r["label_set"] for r in csv.DictReader(f)}
    assert sets == {"label", "label_refused"}


def drop_last(rows):
    return rows[:-1]


def rename_one(rows):
    rows[5][1] = rows[5][1] + " (edited)"
    return rows


def swap_class(rows):
    rows[0][0] = "malicious"
    return rows


@pytest.mark.parametrize(
    ("edit", "model", "message"),
    [
        (None, "another-model", r"comes from another model or prompt format than the verdicts: model='.*tiny' there, 'another-model' for the verdicts"),
        (drop_last, None, r"was extracted from 48 prompts .* the verdicts in .* are of 47: give the same --prompts"),
        (rename_one, None, r"differ at prompt 5: 'tell me about topic 5' \(normal\) there, .*\(edited\)"),
        (swap_class, None, r"differ at prompt 0: .* \(normal\) there, .* \(malicious\) in the verdicts"),
    ],
)  # fmt: skip
def test_a_join_that_does_not_match_is_one_line(feats, tmp_path, capsys, edit, model, message):
    before = feats.read_bytes()
    assert join(write_verdicts(tmp_path / "v", feats, edit, model), feats) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert feats.read_bytes() == before


def test_other_user_errors_are_one_line(feats, tmp_path, capsys):
    cases = [
        (["refusal", "--verdicts", str(tmp_path)], "--verdicts joins an earlier run's verdicts"),
        (["refusal", "--verdicts", str(tmp_path), "--features", str(feats)],
         "has no refusal.csv or refusal_summary.json"),
        (["fit", "--config", str(ROOT / "configs/probe/linear.yaml"), "--data.path", str(feats),
          "--data.label", "refused"],
         "--data.label='refused' is not a label set of .*: it has \\['label'\\]"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), err


def test_a_failed_write_leaves_the_file_as_it_was(feats, tmp_path, capsys, monkeypatch):
    verdicts = write_verdicts(tmp_path / "v", feats)
    assert join(verdicts, feats) == 0
    before = feats.read_bytes()
    capsys.readouterr()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    assert join(verdicts, feats) == 2
    err = [x for x in capsys.readouterr().err.strip().splitlines() if "error:" in x]
    assert len(err) == 1 and "No space left on device; the file is unchanged" in err[0]
    assert feats.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5", "v"]  # no copy left behind


def test_refusal_with_features_on_a_tiny_model(made, feats, tmp_path):
    """Generate on the tiny random model, judge, join: one verdict per feature row."""
    argv = ["refusal", "--model.name", str(made["model"]), "--prompts", made["prompts"],
            "--output", str(tmp_path / "r"), "--features", str(feats), "--max_new_tokens", "2",
            "--progress", "false"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((tmp_path / "r" / "refusal_summary.json").read_text())
    assert summary["template"] == "chat"
    with FeatureFile(feats) as ff:
        values = ff.column("label_refused")
        assert len(values) == ff.num_rows and set(values.tolist()) <= {-1, 0, 1}
    # the folder it wrote joins again without a model
    assert join(tmp_path / "r", feats) == 0
