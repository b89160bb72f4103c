"""What `probing fit` shows by default: no Lightning parameter table, no W&B history tables, and a
closing summary (run folder, best layer per probe, files); losses logged as one head's mean."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.cli import main
from probing.probes.wandb_utils import set_wandb_mode
from probing.training.lightning import build_cli

ROOT = Path(__file__).resolve().parents[1]
LINEAR = str(ROOT / "configs" / "probe" / "linear.yaml")
LINEAR_MLP = str(ROOT / "configs" / "probe" / "linear_mlp.yaml")


def test_fit_ends_with_a_summary_without_tables(workdir, feat, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_SILENT", raising=False)  # W&B's own output as a user sees it
    monkeypatch.delenv("WANDB_QUIET", raising=False)
    argv = ["fit", "--config", LINEAR_MLP, "--data.path", feat, "--trainer.max_epochs", "2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*argv, "--trainer.enable_progress_bar", "false"]) == 0
    # a full-batch run has 1 batch per epoch, fewer than log_every_n_steps: no warning about it
    assert not [w for w in caught if "log_every_n_steps" in str(w.message)]
    out, err = capsys.readouterr()
    assert err.count("linear: best layer on val") == err.count("mlp: best layer on val") == 1
    assert "Trainable params" not in out + err  # Lightning's model summary is off by default
    assert "Run history" not in out + err and "Run summary" not in out + err  # W&B is quiet
    assert "configure_callbacks" not in out + err  # the test after fit keeps the fit's writers
    (run,) = (workdir / "runs" / "probing").iterdir()
    tail = err[err.index("I probing.training: done: run folder") :].splitlines()
    assert tail[0].endswith(f"done: run folder {Path('runs') / 'probing' / run.name}")
    assert tail[1].startswith("  linear: best layer on val 3 (val acc ")
    assert "test acc" in tail[1] and tail[2].startswith("  mlp: best layer on val 3")
    assert tail[3].startswith("  files: per_layer_metrics.csv, per_layer_metrics.json")
    assert "accuracy_per_layer.png" in tail[3] and "config.yaml" in tail[3]
    assert tail[4].startswith("  best checkpoint: ") and tail[4].endswith(".ckpt")
    assert Path(tail[4].split(": ", 1)[1]).is_file()
    assert len(tail) == 5  # the summary is the last thing written


def test_test_ends_with_the_summary(workdir, feat, capsys):
    common = ["--config", LINEAR, "--data.path", feat, "--trainer.logger", "false"]
    quiet = ["--trainer.enable_progress_bar", "false"]
    assert main(["fit", *common, *quiet, "--trainer.default_root_dir", "fit"]) == 0
    capsys.readouterr()
    assert (
        main(["test", *common, *quiet, "--ckpt_path", "fit", "--trainer.default_root_dir", "t"])
        == 0
    )
    out, err = capsys.readouterr()
    tail = err[err.index("done: run folder t") :].splitlines()
    assert tail[1].startswith("  linear: best layer on val 3 (val acc ") and "test acc" in tail[1]
    assert err.count("best layer on val") == 1
    assert "layer_03" not in out + err  # no Lightning table of every metric (--verbose true)
    argv = ["test", *common, *quiet, "--ckpt_path", "fit", "--trainer.default_root_dir", "tv"]
    assert main([*argv, "--verbose", "true"]) == 0
    assert "test/acc/layer_03" in capsys.readouterr().out
    # validate ends with the best layer of the validation it ran, not a table
    argv = ["validate", *common, *quiet, "--ckpt_path", "fit", "--trainer.default_root_dir", "v"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    summary = err[err.index("done: run folder v") :].splitlines()
    assert summary[1].startswith("  linear: best layer on val 3 (val acc ")
    assert "test acc" not in summary[1] and "layer_03" not in out + err


def test_summary_without_test(workdir, feat, caplog):
    caplog.set_level(logging.INFO)
    argv = ["fit", "--config", LINEAR, "--data.path", feat, "--test_after_fit", "false"]
    assert main([*argv, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]) == 0
    summary = caplog.text[caplog.text.index("done: run folder") :]
    assert "linear: best layer on val 3 (val acc " in summary and "test acc" not in summary
    assert "files: config.yaml" in summary


def test_logged_loss_is_the_mean_over_layers_and_probes(workdir, feat):
    cli = build_cli(
        ["fit", "--config", LINEAR_MLP, "--data.path", feat, "--trainer.max_epochs", "2"]
        + ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
        + ["--test_after_fit", "false"]
    )
    model, dm = cli.model, cli.datamodule
    with torch.no_grad():
        ((x, y, _),) = list(dm.val_dataloader())  # full batch: one batch
        per_head = torch.stack([model.layer_losses(out, y) for out in model(x).values()])
    assert per_head.shape == (2, 4)  # linear and mlp, 4 layers
    logged = float(cli.trainer.callback_metrics["val/loss"])
    assert logged == pytest.approx(float(per_head.mean()), rel=1e-5)
    assert logged < math.log(2)  # one head's cross-entropy, not the sum of eight


def wandb_logger(**init):
    return SimpleNamespace(_wandb_init={"mode": None, "anonymous": None, **init})


def test_wandb_runs_are_quiet_unless_asked():
    default, configured = wandb_logger(), wandb_logger(settings={"quiet": False})
    set_wandb_mode([default, configured], "offline", environ={})
    assert default._wandb_init == {"mode": "offline", "settings": {"quiet": True}}
    assert configured._wandb_init["settings"] == {"quiet": False}
    loud = wandb_logger()
    set_wandb_mode([loud], None, environ={"WANDB_QUIET": "false"})
    assert loud._wandb_init == {"mode": None}
