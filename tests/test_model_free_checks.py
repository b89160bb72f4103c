"""Every command that loads a model checks what needs none first — prompt files, the output location,
options and files it reads — so that a typo costs no model load: one line, exit 2, model never loaded.
(`probing monitor`'s are in test_monitor_order.py.)"""

from __future__ import annotations

import logging
import textwrap

import pytest
from featurefactory import make_feature_file, single_thread  # noqa: F401 (autouse fixture)

from probing.cli import main

LOADERS = {
    "extract": ["probing.features.extract.load_tokenizer", "probing.features.extract.load_model"],
    "lens": ["probing.lens.run.file_tokenizer"],
    "refusal": ["probing.generation.refusal.load_model"],
    "graft": ["probing.grafting.run.load_model"],
    "compare": ["probing.compare.run.load_tokenizer", "probing.compare.run.load_model"],
    "demo": ["probing.demo.probing_side"],  # its first stage: loads the model
}


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("hello there\nwhat is rain\n")
    (tmp_path / "blocker").write_text("a file, not a folder\n")
    make_feature_file(tmp_path / "feat.h5", n=20, num_layers=3, hidden_size=4)
    make_feature_file(
        tmp_path / "template.h5", n=20, num_layers=3, hidden_size=4, meta={"positions": "template"}
    )
    return tmp_path


def _no_model(monkeypatch, command):
    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the model-free checks")

    for target in LOADERS[command]:
        monkeypatch.setattr(target, loaded)


def _refused(capsys, command, argv, match):
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if ": error: " in line]
    assert len(errors) == 1 and errors[0] == err[-1], err
    assert err[-1].startswith(f"probing {command}: error: ") and match in err[-1], err
    assert not any("Traceback" in line for line in err)


MODEL = ["--model.name", "smollm2-135m-instruct"]
CASES = [
    ("extract", ["--prompts", "[{path: missing.txt}]", "--output", "f.h5"], "missing.txt"),
    ("extract", ["--prompts", "[{path: prompts.txt}]", "--output", "blocker/f.h5"], "not a folder"),
    ("extract", ["--prompts", "[{path: prompts.txt}]", "--output", "."], "is a folder"),
    ("lens", ["feat.h5", "--output", "blocker/out"], "not a folder"),
    ("lens", ["feat.h5", "--output", "out", "--classes", "[nope]"], "--classes 'nope'"),
    ("lens", ["feat.h5", "--output", "out", "--position", "inst"], "--position"),
    ("refusal", [*MODEL, "--prompts", "[{path: prompts.txt}]", "--output", "blocker"], "blocker"),
    ("refusal", [*MODEL, "--prompts", "[{path: missing.txt}]"], "missing.txt"),
    ("graft", ["--features", "feat.h5", "--judge", "nojudge.yaml"], "nojudge.yaml"),
    ("graft", ["--features", "feat.h5", "--emotions", "noemo.yaml"], "noemo.yaml"),
    ("graft", ["--features", "feat.h5", "--limit", "0"], "--limit must be >= 1"),
    ("graft", ["--features", "template.h5", "--position", "mean"], "--position='mean'"),
    ("graft", ["--features", "template.h5", "--source", "paired", "--source_class", "x"], "'x'"),
    ("graft", ["--features", "feat.h5", "--output", "blocker"], "--output"),
    ("demo", ["--output", "blocker"], "not a folder"),
    ("demo", ["--threads", "0"], "--threads must be >= 1"),
]


@pytest.mark.parametrize(("command", "argv", "match"), CASES)
def test_refused_before_the_model_loads(here, monkeypatch, capsys, command, argv, match):
    _no_model(monkeypatch, command)
    _refused(capsys, command, argv, match)


def _compare_config(here, **extra):
    runs = extra.pop("runs", [{"model": "smollm2-135m-instruct", "template": "raw"}])
    text = textwrap.dedent(
        f"""\
        runs: {runs}
        prompts: [{{path: prompts.txt, label: a}}, {{path: prompts.txt, label: b}}]
        output_dir: {extra.pop("output_dir", "out")}
        features_dir: {extra.pop("features_dir", "features")}
        """
    )
    (here / "compare.yaml").write_text(text)
    return ["--config", "compare.yaml"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"output_dir": "blocker/out"}, "--output_dir"),
        ({"features_dir": "blocker"}, "--features_dir"),
        ({"runs": [{"model": "smollm2-135m-instruct", "features": "nofile.h5"}]}, "nofile.h5"),
    ],
)
def test_compare_refuses_before_the_first_model(here, monkeypatch, capsys, extra, match):
    _no_model(monkeypatch, "compare")
    _refused(capsys, "compare", _compare_config(here, **extra), match)


def test_valid_options_reach_the_model(here, monkeypatch):
    """The checks let a good command through: the loader is reached."""
    _no_model(monkeypatch, "graft")
    with pytest.raises(AssertionError, match="model was loaded"):
        main(["graft", "--features", "feat.h5", "--output", "out"])
    _no_model(monkeypatch, "lens")
    with pytest.raises(AssertionError, match="model was loaded"):
        main(["lens", "feat.h5", "--output", "out"])
