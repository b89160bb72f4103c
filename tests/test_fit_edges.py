"""`probing fit|test` at the edges a tester's sweep found: one probed layer, too few rows to
validate, a checkpoint naming a foreign class, a plain pickle as checkpoint, Ctrl-C."""

from __future__ import annotations

import csv
import pickle
import signal
from pathlib import Path

import pytest
import torch
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.cli import main
from probing.probes.module import ProbeModule

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "probe"
LINEAR, LINEAR_MLP = str(CONFIGS / "linear.yaml"), str(CONFIGS / "linear_mlp.yaml")
FAST = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
RUNS = ["--trainer.logger", "false", "--trainer.default_root_dir", "runs"]


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
    } | {("", "text", s) for s in ("val", "test")}  # the text baseline: no layer


def test_too_few_rows_for_validation_is_refused(workdir, capsys):
    """Case 16: 8 rows leave no validation rows; fit ran on with a Lightning warning only."""
    few = make_feature_file(workdir / "few.h5", n=8, num_layers=3, hidden_size=8, seed=1)
    assert main(["fit", "--config", LINEAR, "--data.path", str(few), *RUNS, *FAST]) == 2
    last_error(capsys, "--data.split=[0.7, 0.15, 0.15] leaves no validation rows of the 8 rows")
    assert not (workdir / "runs").exists()
    # without a validation split it trains, as documented
    split = ["--data.split", "[0.5, 0, 0.5]", "--trainer.max_epochs", "1"]
    assert main(["fit", "--config", LINEAR, "--data.path", str(few), *split, *RUNS, *FAST]) == 0


@pytest.fixture
def trained(workdir, feat):
    fit = ["fit", "--config", LINEAR, "--data.path", feat, "--trainer.max_epochs", "1"]
    assert main([*fit, "--test_after_fit", "false", *RUNS, *FAST]) == 0
    return workdir / "runs" / "checkpoints" / "last.ckpt"


def test_test_refuses_a_foreign_probe_class(workdir, feat, trained, capsys):
    """Case 15: `probe_class: os.system` went through `probing test` (monitor refused it)."""
    raw = torch.load(trained, weights_only=True)
    raw["probe_class"] = "os.system"
    evil = workdir / "evil.ckpt"
    torch.save(raw, evil)
    test = ["test", "--config", LINEAR, "--data.path", feat, "--ckpt_path", str(evil)]
    assert main([*test, *RUNS, *FAST]) == 2
    last_error(capsys, "names the probe class 'os.system'; only LinearProbe")
    assert not (workdir / "runs" / "per_layer_metrics.csv").exists()


def test_plain_pickle_as_checkpoint_says_what_it_is(workdir, feat, capsys):
    """Case 14: a plain pickle was 'not a pickle'."""
    plain = workdir / "plain.ckpt"
    plain.write_bytes(pickle.dumps({"state_dict": {}}, protocol=4))
    for argv in (
        ["monitor", "--ckpt", str(plain), "--prompt", "hello"],
        ["test", "--config", LINEAR, "--data.path", feat, "--ckpt_path", str(plain), *RUNS, *FAST],
    ):
        assert main(argv) == 2
        last_error(capsys, f"{plain} is not a readable checkpoint: it is a plain Python pickle")


def test_ctrl_c_during_fit_is_interrupted_130(workdir, feat, capsys, monkeypatch):
    """Case 13: Ctrl-C in `probing fit` was exit 1 and Lightning's message (and SIGINT ignored after)."""

    def interrupt(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(ProbeModule, "training_step", interrupt)
    handler = signal.getsignal(signal.SIGINT)
    fit = ["fit", "--config", LINEAR_MLP, "--data.path", feat, "--data.batch_size", "16"]
    assert main([*fit, *RUNS, *FAST]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "probing fit: interrupted", err
    assert "Traceback" not in err and "Detected KeyboardInterrupt" not in err, err
    assert signal.getsignal(signal.SIGINT) is handler
