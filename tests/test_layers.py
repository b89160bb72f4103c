"""One layer option (probing.layers): how a spec reads, how it fails, ``auto``; and through the CLI,
a bad layer in every command that takes one exits 2 with one line naming the option."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import pytest
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.cli import main
from probing.data import ActivationDataModule
from probing.errors import ProbingError
from probing.layers import earliest_within, layers_text, resolve_layer, resolve_layers
from probing.probes import LinearProbe

LINEAR = str(Path(__file__).resolve().parents[1] / "configs" / "probe" / "linear.yaml")
SOURCES = [{"path": "normal", "label": None}, {"path": "malicious", "label": None}]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("all", [0, 1, 2, 3, 4, 5]), ("2:5", [2, 3, 4]), ("::2", [0, 2, 4]), ("-2:", [4, 5]),
     ("1::4", [1, 5]), (3, [3]), ([0, -1], [0, 5]), ("1,4", [1, 4]), ("[1, 4]", [1, 4]),
     (None, [0, 1, 2, 3, 4, 5])],
)  # fmt: skip
def test_resolve_layers(spec, expected):
    assert resolve_layers(spec, 6, "--x") == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [(7, "--x: layer 7 is out of range; f.h5 has layers 0..5"), ([0, 6], "layer 6 is out of range"),
     ("a:b", "cannot read --x='a:b'"), ("4:2", "--x='4:2' selects no layer; f.h5 has layers 0..5"),
     ([1, 1], "--x lists a layer twice"), ("", "--x is empty"), ("auto", "--x does not take 'auto'"),
     ("1:2:0", "cannot read --x")],
)  # fmt: skip
def test_resolve_layers_names_the_option(spec, message):
    with pytest.raises(ProbingError, match=message):
        resolve_layers(spec, 6, "--x", "f.h5")


def test_one_layer_and_the_text_of_layers():
    assert resolve_layer(-1, 4, "--layer") == 3 and resolve_layer("2:3", 4, "--layer") == 2
    with pytest.raises(ProbingError, match="--layer takes one layer, got 4: 0..3"):
        resolve_layer("all", 4, "--layer")
    assert layers_text([3, 4, 5]) == "3..5" and layers_text([1, 5]) == "1,5"


def test_auto_is_the_earliest_layer_within_the_tolerance():
    assert earliest_within([2, 4, 6], [0.90, 0.996, 1.0], 0.005) == (4, 0.996, 1.0)
    assert earliest_within([2, 4, 6], [0.90, 0.996, 1.0], 0) == (6, 1.0, 1.0)
    assert earliest_within([2, 4], [math.nan, 0.5], 0.005) == (4, 0.5, 0.5)


# -- through the CLI ---------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fresh_logging(monkeypatch):
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])


@pytest.fixture
def feat(tmp_path):
    return make_feature_file(
        tmp_path / "f.h5", n=80, num_layers=3, hidden_size=8, seed=1, meta={"sources": SOURCES}
    )


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["fit", "--config", LINEAR, "--data.layers", "[0, 3]"],
         "--data.layers: layer 3 is out of range"),
        (["weak", "--data.layers", "5:"], "--data.layers='5:' selects no layer"),
        (["generalize", "--classes", "[normal, malicious]", "--layers", "[1, 1]"],
         "--layers lists a layer twice"),
        (["directions", "--layers", "x"], "cannot read --layers='x'"),
        (["lens", "--output", "{out}", "--layers", "0:9:0"], "cannot read --layers='0:9:0'"),
        (["graft", "--output", "{out}", "--layers", "-4"], "--layers: layer -4 is out of range"),
    ],
)  # fmt: skip
def test_a_bad_layer_exits_2_naming_the_option(feat, tmp_path, capsys, command, message):
    data = {"fit": "--data.path", "weak": "--data.path", "generalize": "--features"}
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in command]
    argv += [data.get(command[0], "--features"), str(feat)]  # after --config
    assert main(argv) == 2
    line = one_line(capsys)
    assert line.startswith(f"probing {command[0]}: error: ") and message in line, line


def test_monitor_layer_exits_2_naming_the_option(feat, tmp_path, capsys):
    L.seed_everything(0, verbose=False)
    dm = ActivationDataModule(str(feat), split=(0.5, 0.25, 0.25), batch_size=64, layers="1:")
    probe = LinearProbe(
        **dm.probe_args(),
    )  # fmt: skip
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(probe, datamodule=dm)
    ckpt = tmp_path / "p.ckpt"
    trainer.save_checkpoint(ckpt)
    base = ["monitor", "--ckpt", str(ckpt), "--prompt", "hello", "--layer"]
    for layer, message in [
        ("7", "--layer: layer 7 is out of range; the training file of p.ckpt has layers 0..2"),
        ("all", "--layer takes one layer, got 3: 0..2"),
        ("0", "--layer 0 is not probed by p.ckpt; it probes layers 1..2"),
    ]:
        assert main([*base, layer]) == 2
        line = one_line(capsys)
        assert line.startswith("probing monitor: error: ") and message in line, line
