"""`probing monitor` checks what needs no model (prompt files exist and parse, --output can be
written) before it loads the model: a typo costs no model load."""

from __future__ import annotations

import logging

import pytest
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)
from test_monitor_paths import fit_here

from probing.cli import main


@pytest.fixture
def ckpt(tmp_path, monkeypatch):
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])
    make_feature_file(tmp_path / "feat.h5", n=80, num_layers=3, hidden_size=4)
    monkeypatch.chdir(tmp_path)
    return str(fit_here("feat.h5", tmp_path / "probe.ckpt"))


@pytest.fixture
def no_model(monkeypatch):
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the model-free checks")

    monkeypatch.setattr("probing.monitor.run.load_model", load_model)


@pytest.mark.parametrize(
    ("make", "args", "match"),
    [
        (None, ["--prompts", "missing.txt"], "missing.txt"),
        ({"bad.json": "[{not json"}, ["--prompts", "bad.json"], "bad.json"),
        ({"ok.txt": "hello\n"}, ["--prompts", "ok.txt", "--calibrate", "nocal.csv"], "nocal.csv"),
        (None, ["--eval", "--prompts", "missing.jsonl"], "missing.jsonl"),
        (
            {"ok.txt": "hello\n", "f": ""},
            ["--prompts", "ok.txt", "--output", "f/o.jsonl"],
            "--output",
        ),
    ],
)
def test_model_free_checks_come_first(ckpt, no_model, capsys, make, args, match):
    for name, text in (make or {}).items():
        with open(name, "w") as f:
            f.write(text)
    assert main(["monitor", "--ckpt", ckpt, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("probing monitor: error: "), err
    assert match in err[0]


def test_valid_prompts_reach_the_model(ckpt, no_model, tmp_path):
    (tmp_path / "ok.txt").write_text("hello\n")
    with pytest.raises(AssertionError, match="model was loaded"):
        main(["monitor", "--ckpt", ckpt, "--prompts", "ok.txt", "--threshold", "0.5"])
