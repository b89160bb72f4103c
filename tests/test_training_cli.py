"""End to end through ``probing fit|test|predict`` (in process, W&B offline) and the error paths."""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.cli import main
from probing.errors import ProbingError
from probing.probes.wandb_utils import wandb_mode
from probing.training.lightning import build_cli

ROOT = Path(__file__).resolve().parents[1]
LINEAR = str(ROOT / "configs" / "probe" / "linear.yaml")
LINEAR_MLP = str(ROOT / "configs" / "probe" / "linear_mlp.yaml")
FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / "runs" / "probing").iterdir(), key=lambda p: p.stat().st_mtime)


def test_fit_test_predict_end_to_end(workdir, feat, capsys):
    argv = [
        "--config",
        LINEAR_MLP,
        "--data.path",
        feat,
        "--trainer.max_epochs",
        "4",
        "--model.init_args.lr",
        "0.03",
    ]
    assert main(["fit", *argv, *FAST]) == 0
    (run,) = run_dirs(workdir)
    for name in (
        "config.yaml",
        "per_layer_metrics.csv",
        "per_layer_metrics.json",
        "accuracy_per_layer.png",
    ):
        assert (run / name).is_file(), name
    ckpts = sorted((run / "checkpoints").glob("epoch*.ckpt"))
    assert len(ckpts) == 1 and (run / "checkpoints" / "last.ckpt").is_file()
    assert f"path: {feat}" in (run / "config.yaml").read_text()
    with open(run / "per_layer_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["probe"], r["split"]) for r in rows} == {
        (p, s) for p in ("linear", "mlp", "text") for s in ("val", "test")
    }
    assert {r["layer"] for r in rows if r["probe"] == "text"} == {""}
    test_acc = {
        int(r["layer"]): float(r["accuracy"])
        for r in rows
        if r["split"] == "test" and r["probe"] == "linear"
    }
    assert test_acc[3] > 0.9
    report = json.loads((run / "per_layer_metrics.json").read_text())
    assert report["best_layer_on_val"]["linear"]["layer"] == 3
    assert report["feature_meta"]["model"] == "synthetic-model"

    # W&B offline run: table, image and the config/feature metadata in the run file
    (wrun,) = (workdir / "runs" / "wandb").glob("offline-run-*")
    assert wrun.name.endswith(run.name)
    assert list((wrun / "files" / "media" / "table").glob("per_layer_metrics*.table.json"))
    assert list((wrun / "files" / "media" / "images").glob("accuracy_per_layer*.png"))
    tables = (wrun / "files" / "media" / "table").glob("per_layer_metrics*.json")
    table = json.loads(next(tables).read_text())
    assert (
        table["columns"][:3] == ["layer", "probe", "split"] and len(table["data"]) == 4 * 2 * 2 + 2
    )
    needles = (b"prompt_hash", b"synthetic-model", b"test_after_fit", b"layer_03")
    for _ in range(100):  # the W&B service may still be writing the offline run file
        blob = next(wrun.glob("run-*.wandb")).read_bytes()
        if all(n in blob for n in needles):
            break
        time.sleep(0.2)
    for needle in needles:
        assert needle in blob, needle

    # test from the checkpoint: a new run directory with the same test metrics
    assert main(["test", *argv, "--ckpt_path", str(ckpts[0]), *FAST]) == 0
    test_run = run_dirs(workdir)[-1]
    with open(test_run / "per_layer_metrics.csv") as f:
        again = {
            int(r["layer"]): float(r["accuracy"])
            for r in csv.DictReader(f)
            if r["split"] == "test" and r["probe"] == "linear"
        }
    assert again == test_acc

    assert main(["validate", *argv, "--ckpt_path", str(ckpts[0]), *FAST]) == 0

    # predict: per prompt, per layer probabilities
    assert main(["predict", *argv, "--ckpt_path", str(ckpts[0]), *FAST]) == 0
    pred_run = run_dirs(workdir)[-1]
    with open(pred_run / "predictions.csv") as f:
        preds = list(csv.DictReader(f))
    assert list(preds[0]) == [
        "prompt_index",
        "row",
        "split",
        "label",
        "probe",
        "layer",
        "p_normal",
        "p_malicious",
    ]
    assert len(preds) == 240 * 4 * 2
    assert {r["split"] for r in preds} == {"train", "val", "test"}
    p = np.array([[float(r["p_normal"]), float(r["p_malicious"])] for r in preds[:50]])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)

    # a checkpoint trained on other layers is refused with the option to change
    capsys.readouterr()
    code = main(["test", *argv, "--data.layers", "0:2", "--ckpt_path", str(ckpts[0]), *FAST])
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        last.startswith("probing test: error: the checkpoint was trained with")
        and "--data.layers" in last
    )


def test_weak_comparison_overlay_and_transfer(workdir, feat):
    weak_dir = workdir / "weak"
    assert (
        main(["weak", "--data.path", feat, "--output_dir", str(weak_dir), "--classifiers", "[svm]"])
        == 0
    )
    assert main(["fit", "--config", LINEAR, "--data.path", feat, "--trainer.max_epochs", "2",
                 "--trainer.logger", "false", "--trainer.default_root_dir", "plain", "--model.init_args.compare_with",
                 f"[{weak_dir}]", "--model.init_args.bootstrap", "50", *FAST]) == 0  # fmt: skip
    with open(workdir / "plain" / "per_layer_metrics.csv") as f:
        header = f.readline().strip()
    assert header == "layer,probe,split,accuracy,f1,auroc,accuracy_lo,accuracy_hi"


def test_print_config(workdir, feat, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", LINEAR, "--data.path", feat, "--print_config"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "class_path: probing.probes.LinearProbe" in out and "WandbLogger" in out


@pytest.mark.parametrize(
    ("environ", "mode"),
    [({}, "offline"), ({"WANDB_API_KEY": "k"}, None), ({"WANDB_MODE": "disabled"}, None)],
)
def test_wandb_mode_is_given_to_the_run_not_the_environment(
    workdir, feat, monkeypatch, environ, mode
):
    """Offline without an API key; with one (or WANDB_MODE set) W&B decides; os.environ untouched."""
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    cli = build_cli(["--config", LINEAR, "--data.path", feat], run=False)
    (logger,) = cli.trainer.loggers
    assert logger._wandb_init.get("mode") == mode
    assert {k: v for k, v in os.environ.items() if k in ("WANDB_MODE", "WANDB_API_KEY")} == environ
    assert wandb_mode(environ) == mode


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data.layers", "[9]"], "--data.layers: layer 9 is out of range"),
        (["--data.classes", "[normal]"], "--data.classes"),
        (["--data.path", "missing.h5"], "does not exist"),
    ],
)
def test_user_errors_exit_2(workdir, feat, capsys, extra, message):
    code = main(
        ["fit", "--config", LINEAR, "--data.path", feat, "--trainer.logger", "false", *extra, *FAST]
    )
    assert code == 2
    last = (
        capsys.readouterr().err.strip().splitlines()[-1]
    )  # (earlier lines: other libraries' logs)
    assert last.startswith("probing fit: error: ") and message in last


def test_nan_and_corrupt_files_exit_2(workdir, capsys):
    hidden = np.ones((30, 2, 4), np.float32)
    hidden[3, 1, 0] = np.inf
    nan = make_feature_file(workdir / "nan.h5", hidden=hidden, labels=np.arange(30) % 2)
    (workdir / "bad.h5").write_bytes(b"\x89HDF\r\n garbage" * 50)
    for path, message in (
        (nan, "(NaN/inf) activations at layer 1"),
        (workdir / "bad.h5", "not a readable HDF5"),
    ):
        code = main(
            [
                "fit",
                "--config",
                LINEAR,
                "--data.path",
                str(path),
                "--trainer.logger",
                "false",
                *FAST,
            ]
        )
        assert code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("probing fit: error: ") and message in last


def _last_error(capsys, match: str) -> None:
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("probing ") and ": error: " in last, err
    assert match in last, err
    # (a handler left by an earlier test on a closed capture stream prints "--- Logging error ---")
    assert err.count("Traceback") == err.count("--- Logging error ---"), err


def test_test_validate_predict_need_a_trained_checkpoint(workdir, feat, capsys):
    plain = [
        "--data.path",
        feat,
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        "plain",
    ]
    fit = [
        "fit",
        "--config",
        LINEAR,
        *plain,
        "--trainer.max_epochs",
        "2",
        "--test_after_fit",
        "false",
    ]
    assert main([*fit, *FAST]) == 0
    metrics = workdir / "plain" / "per_layer_metrics.csv"
    assert not metrics.exists()
    (best,) = (workdir / "plain" / "checkpoints").glob("epoch*.ckpt")
    # without --ckpt_path an untrained probe would be scored: refused, nothing written
    for sub in ("test", "validate", "predict"):
        assert main([sub, "--config", LINEAR, *plain, *FAST]) == 2
        _last_error(capsys, "give --ckpt_path")
    assert not metrics.exists() and not (workdir / "plain" / "predictions.csv").exists()
    # a missing, an unreadable and a code-carrying path: one line each
    (workdir / "junk.ckpt").write_text("not a checkpoint")
    torch.save({"state_dict": {}, "x": _Payload(workdir / "ran")}, workdir / "evil.ckpt")
    for path, match in (
        ("nope.ckpt", "does not exist"),
        ("junk.ckpt", "not a readable checkpoint"),
        ("evil.ckpt", "refusing to unpickle it"),
    ):
        assert main(["test", "--config", LINEAR, *plain, "--ckpt_path", path, *FAST]) == 2
        _last_error(capsys, match)
    assert not (workdir / "ran").exists() and not metrics.exists()
    # best / last of the newest run, resolved in this new process; best == the file itself
    results = {}
    for ckpt in ("best", str(best), "last", "plain"):
        assert main(["test", "--config", LINEAR, *plain, "--ckpt_path", ckpt, *FAST]) == 0
        results[ckpt] = metrics.read_text()
    assert results["best"] == results[str(best)] == results["plain"]


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_resumed_fit_writes_into_its_own_run(workdir, feat):
    base = ["fit", "--config", LINEAR, "--data.path", feat, "--test_after_fit", "false", *FAST]
    base += ["--data.batch_size", "32"]  # mini-batches: epochs to resume (full batch is one epoch)
    assert main([*base, "--trainer.max_epochs", "1"]) == 0
    (run,) = run_dirs(workdir)
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    assert main([*base, "--trainer.max_epochs", "2", "--ckpt_path", str(last)]) == 0
    assert run_dirs(workdir) == [run]  # no second run folder
    assert torch.load(last, weights_only=True)["epoch"] == 1


def test_train_is_probing_fit_as_a_function(workdir, feat, caplog):
    from probing.training.train import train

    caplog.set_level(logging.INFO)
    run = train(
        LINEAR,
        {
            "data.path": Path(feat),
            "data.classes": None,
            "data.split": [0.6, 0.2, 0.2],
            "trainer.max_epochs": 2,
            "trainer.logger": False,
            "trainer.default_root_dir": workdir / "plain",
            "trainer.enable_progress_bar": False,
        },
    )
    assert run == workdir / "plain"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["path"] == feat and config["data"]["split"] == [0.6, 0.2, 0.2]
    assert config["trainer"]["max_epochs"] == 2 and config["trainer"]["logger"] is False
    assert (run / "per_layer_metrics.csv").is_file()
    # the run's log: probing's lines and Lightning's own, without its hosted-logger advertisement
    assert "best layer on val" in caplog.text and "Seed set to" in caplog.text
    assert "litlogger" not in caplog.text


def test_train_refuses_an_override_below_a_value(workdir):
    from probing.training.train import train

    with pytest.raises(
        ProbingError, match=r"override 'trainer.max_epochs.x': 'max_epochs' in .* is not a mapping"
    ):
        train(LINEAR, {"trainer.max_epochs.x": 1})
