"""``probing compare``: the accuracy grid over tiny saved models of two architectures, end to end.

Prompts are built so that the two classes differ in their last character ('.' vs '!'): with raw text
the embedding layer already separates them, which pins the "first layer >= threshold" logic.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import yaml
from featurefactory import single_thread  # noqa: F401 (autouse fixture)
from tiny import save_tiny

from probing.cli import main
from probing.compare.run import (
    METRIC_COLUMNS,
    SUMMARY_COLUMNS,
    CompareConfig,
    RunResult,
    RunSpec,
    first_crossing,
    summarize,
)
from probing.compare.spec import parse
from probing.features.extract import ExtractConfig, extract
from probing.models.assemble import Part
from probing.models.builtin import BUILTIN_MODELS, BuiltinModel
from probing.models.gemma import GEMMA_PIP, PackagedSplitGGUF
from probing.models.load import ModelConfig
from probing.prompts.sources import PromptSource

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "compare" / "smoke.yaml"
N = 40


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny")
    return {arch: save_tiny(base / arch, arch) for arch in ("llama", "gpt2")}


@pytest.fixture(scope="module")
def prompt_files(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("prompts")
    out = {}
    for name, end in (("benign", "."), ("harmful", "!")):
        path = base / f"{name}.csv"
        rows = [f"{name} request number {i} about topic {i % 7}{end}" for i in range(N)]
        path.write_text("prompt\n" + "\n".join(rows) + "\n")
        out[name] = path
    return out


def _config(tmp_path: Path, tiny, prompt_files, runs: list[dict], **extra) -> Path:
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg.update(
        runs=runs,
        prompts=[{"path": str(prompt_files["benign"])}, {"path": str(prompt_files["harmful"])}],
        features_dir=str(tmp_path / "features"),
        output_dir=str(tmp_path / "out"),
    )
    cfg.update(extra)
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _runs(tiny) -> list[dict]:
    return [
        {"model": str(tiny["llama"]), "template": "chat", "name": "llama-chat"},
        {"model": str(tiny["llama"]), "template": "raw", "name": "llama-raw"},
        {"model": str(tiny["gpt2"]), "template": "raw", "name": "gpt2-raw"},
    ]


def _read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_compare_end_to_end_with_a_missing_model(tmp_path, tiny, prompt_files, capsys):
    missing = {"model": str(tmp_path / "no-such-model"), "template": "raw", "name": "missing"}
    config = _config(tmp_path, tiny, prompt_files, [*_runs(tiny)[:2], missing, _runs(tiny)[2]])
    assert main(["compare", "--config", str(config)]) == 1  # some runs failed, the rest reported
    err = capsys.readouterr().err
    assert "run 'missing' failed: model path" in err and "does not exist" in err
    assert "Traceback" not in err
    out = tmp_path / "out"
    for name in (
        "compare_grid.png",
        "compare_grid_relative.png",
        "compare.md",
        "compare_runs.json",
    ):
        assert (out / name).stat().st_size > 0, name

    columns, metrics = _read(out / "compare_metrics.csv")
    assert tuple(columns) == METRIC_COLUMNS
    assert {r["run"] for r in metrics} == {"llama-chat", "llama-raw", "gpt2-raw"}
    # tiny llama: 3 blocks, tiny gpt2: 3 blocks -> layers 0..3, two classifiers each
    assert len(metrics) == 3 * 2 * 4
    for r in metrics:
        assert float(r["relative_depth"]) == pytest.approx(int(r["layer"]) / 3)
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and r["split"] == "test"

    columns, summary = _read(out / "compare_summary.csv")
    assert tuple(columns) == SUMMARY_COLUMNS
    by = {(r["run"], r["classifier"]): r for r in summary}
    failed = by[("missing", "")]
    assert failed["status"] == "failed" and "does not exist" in failed["reason"]
    assert "\n" not in failed["reason"]
    raw = by[("llama-raw", "svm")]  # the last character tells the classes apart at the embeddings
    assert raw["status"] == "ok" and raw["first_layer"] == "0" and float(raw["best_accuracy"]) == 1
    assert float(raw["first_relative_depth"]) == 0.0
    chat = by[("llama-chat", "svm")]  # the chat template's last token is the same for every prompt
    assert chat["first_layer"] != "0"

    report = (out / "compare.md").read_text()
    assert "compare_grid.png" in report and "missing" in report and "| llama-raw |" in report
    record = json.loads((out / "compare_runs.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["ok", "ok", "failed", "ok"]
    assert record["runs"][0]["feature_meta"]["template"] == "chat"


def test_rerun_reuses_feature_files_without_loading(tmp_path, tiny, prompt_files, monkeypatch):
    config = _config(tmp_path, tiny, prompt_files, _runs(tiny)[1:])
    assert main(["compare", "--config", str(config)]) == 0
    files = sorted((tmp_path / "features").glob("*.h5"))
    assert [f.name for f in files] == ["gpt2-raw.h5", "llama-raw.h5"]
    stamps = [f.stat().st_mtime_ns for f in files]

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded although its feature file is complete")

    monkeypatch.setattr("probing.compare.run.load_model", no_load)
    assert main(["compare", "--config", str(config)]) == 0
    assert [f.stat().st_mtime_ns for f in files] == stamps
    record = json.loads((tmp_path / "out" / "compare_runs.json").read_text())
    assert all(r["reused"] for r in record["runs"])


def test_mixed_prompt_sets_are_refused(tmp_path, tiny, prompt_files, capsys):
    other = tmp_path / "other.h5"  # same model and template, but only the first 30 harmful prompts
    extract(
        ExtractConfig(
            model=ModelConfig(name=str(tiny["gpt2"])),
            prompts=[
                PromptSource(path=str(prompt_files["benign"])),
                PromptSource(path=str(prompt_files["harmful"]), limit=30),
            ],
            output=str(other),
            template="raw",
            progress=False,
        )
    )
    runs = [
        *_runs(tiny)[1:2],
        {"model": str(tiny["gpt2"]), "template": "raw", "features": str(other)},
    ]
    config = _config(tmp_path, tiny, prompt_files, runs)
    assert main(["compare", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "holds another prompt set than `prompts`" in err and "gpt2-raw" in err
    _, summary = _read(tmp_path / "out" / "compare_summary.csv")
    assert {r["run"]: r["status"] for r in summary} == {"llama-raw": "ok", "gpt2-raw": "failed"}


def test_missing_builtin_package_names_the_pip_command(
    tmp_path, tiny, prompt_files, monkeypatch, capsys
):
    fake = PackagedSplitGGUF(
        name="fake-gemma",
        filename="fake.gguf",
        sha256="0" * 64,
        parts=(Part("no_such_probing_part1", "no-such-probing-part1==1.0", "data/x.part00"),),
        meta_pip=GEMMA_PIP,
        make_target="setup-gemma",
    )
    monkeypatch.setitem(
        BUILTIN_MODELS,
        "fake-gemma",
        BuiltinModel(
            "fake-gemma", "no_such_probing_part1", GEMMA_PIP, "fake.gguf", "", fake.assemble
        ),
    )
    runs = [{"model": "fake-gemma", "template": "raw"}, _runs(tiny)[2]]
    config = _config(tmp_path, tiny, prompt_files, runs)
    assert main(["compare", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"`pip install {GEMMA_PIP}` (or `make setup-gemma`)" in err
    assert "run 'fake-gemma-raw' failed" in err


def test_every_run_failing_is_one_error(tmp_path, tiny, prompt_files, capsys):
    runs = [{"model": str(tmp_path / "nope"), "template": "raw"}]
    config = _config(tmp_path, tiny, prompt_files, runs)
    assert main(["compare", "--config", str(config)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("probing compare: error: all 1 runs failed")


@pytest.mark.parametrize(
    ("runs", "extra", "match"),
    [
        ([], {}, "--runs is empty"),
        ([{"model": "a", "name": "x"}, {"model": "b", "name": "x"}], {}, "distinct `name`"),
        ([{"model": "a", "name": "bad/name"}], {}, "not usable as a file name"),
        ([{"model": "a"}], {"threshold": 1.5}, "--threshold must be in (0, 1]"),
        ([{"model": "a"}], {"prompts": []}, "--prompts is empty"),
    ],
)
def test_bad_config_is_one_line(tmp_path, tiny, prompt_files, capsys, runs, extra, match):
    config = _config(tmp_path, tiny, prompt_files, runs, **extra)
    assert main(["compare", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert match in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs" / "compare").glob("*.yaml")), ids=lambda p: p.name
)
def test_configs_parse(path):
    cfg = parse(["--config", str(path)])
    assert isinstance(cfg, CompareConfig) and cfg.runs and cfg.prompts
    assert all(isinstance(r, RunSpec) and r.template in ("chat", "raw") for r in cfg.runs)
    assert len({r.run_name for r in cfg.runs}) == len(cfg.runs)


def test_default_config_runs_the_two_embedded_models():
    cfg = parse(["--config", str(ROOT / "configs" / "compare" / "default.yaml")])
    assert [(r.model, r.template) for r in cfg.runs] == [
        ("smollm2-135m-instruct", "chat"),
        ("smollm2-135m-instruct", "raw"),
        ("gemma3-270m", "raw"),
    ]
    assert all(r.model in BUILTIN_MODELS for r in cfg.runs)
    assert [p.path for p in cfg.prompts] == ["normal", "malicious"]
    assert cfg.classifiers == ["svm", "mlp"] and cfg.threshold == 0.95


def test_summary_first_crossing_and_failures():
    rows = [
        {"classifier": "svm", "layer": i, "relative_depth": i / 4, "accuracy": a}
        for i, a in enumerate([0.5, 0.96, 0.9, 0.97, 0.97])
    ]
    assert first_crossing(rows, 0.95)["layer"] == 1
    assert first_crossing(rows, 0.99) is None
    ok = RunResult("a", RunSpec("m", "raw"), num_layers=5, rows=rows)
    bad = RunResult("b", RunSpec("m"), status="failed", reason="nope")
    summary = summarize([ok, bad], CompareConfig(classifiers=["svm"]))
    assert summary[0]["first_layer"] == 1 and summary[0]["first_relative_depth"] == 0.25
    assert summary[0]["best_accuracy"] == 0.97 and summary[0]["best_layer"] == 3  # earliest best
    assert summary[1]["status"] == "failed" and summary[1]["reason"] == "nope"


@pytest.mark.slow
def test_probes_join_the_grid(tmp_path, tiny, prompt_files):
    probe = yaml.safe_load((ROOT / "configs" / "probe" / "linear.yaml").read_text())
    probe["trainer"]["max_epochs"] = 2
    probe_path = tmp_path / "linear.yaml"
    probe_path.write_text(yaml.safe_dump(probe))
    config = _config(tmp_path, tiny, prompt_files, _runs(tiny)[1:2], classifiers=["svm"])
    assert main(["compare", "--config", str(config), "--probes", f'["{probe_path}"]']) == 0
    _, metrics = _read(tmp_path / "out" / "compare_metrics.csv")
    assert sorted({r["classifier"] for r in metrics}) == ["probe-linear", "svm"]
    assert len([r for r in metrics if r["classifier"] == "probe-linear"]) == 4
    _, summary = _read(tmp_path / "out" / "compare_summary.csv")
    assert [r["classifier"] for r in summary] == ["svm", "probe-linear"]
    assert (
        tmp_path / "out" / "probes" / "llama-raw" / "linear" / "per_layer_metrics.csv"
    ).is_file()
