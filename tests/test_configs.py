"""Every YAML in ``configs/`` parses (configs never rot).

One checker per folder in ``CHECKERS``; covering a new folder is one line there (and removing it from
``PENDING``).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from probing.training.lightning import build_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
BASE_PROBE = CONFIGS / "probe" / "linear.yaml"


def print_config(argv: list[str]) -> dict:
    """Parse ``argv`` with the Lightning CLI and return the resolved config (``--print_config``)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        build_cli([*argv, "--print_config"])
    assert exc.value.code == 0, out.getvalue()
    return yaml.safe_load(out.getvalue())


def check_probe_config(path: Path) -> None:
    text = yaml.safe_load(path.read_text())
    overlay = "model" not in text  # partial configs (e.g. transfer.yaml) are layered on linear.yaml
    argv = ["fit", *(["--config", str(BASE_PROBE)] if overlay else []), "--config", str(path)]
    cfg = print_config(argv)
    assert cfg["model"]["class_path"].startswith("probing.probes.")
    assert cfg["data"]["path"]
    for key, value in text.get("data", {}).items():
        assert cfg["data"][key] == value, key


def _sweep_argv(sweep: dict, params: dict[str, object]) -> list[str]:
    args = [f"--{k}={v}" for k, v in params.items()]
    argv: list[str] = []
    for item in sweep["command"]:
        if item == "${args}":
            argv += args
        elif item not in ("${env}", "${interpreter}", "${program}", "probing"):
            argv.append(item)
    return argv


def check_sweep_config(path: Path) -> None:
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] in {"grid", "random", "bayes"}
    assert sweep["metric"]["goal"] in {"maximize", "minimize"} and sweep["metric"]["name"]
    assert "${args}" in sweep["command"]
    params = sweep["parameters"]
    assert next(iter(params)) == "config" or "config" not in params, "`config` must come first"
    first = {
        k: (p["values"][0] if "values" in p else p.get("min", p.get("value")))
        for k, p in params.items()
    }
    variants = [first] + [
        {**first, k: v} for k, p in params.items() if "values" in p for v in p["values"][1:]
    ]
    for values in variants:
        for order in (list(values), sorted(values)):  # W&B may pass args in either order
            params_in_order = {k: values[k] for k in order}
            cfg = print_config(_sweep_argv(sweep, params_in_order))
            if "model.init_args.lr" in values:
                assert cfg["model"]["init_args"]["lr"] == pytest.approx(
                    float(values["model.init_args.lr"])
                )
            if "config" in values:
                expected = yaml.safe_load((ROOT / values["config"]).read_text())["model"][
                    "class_path"
                ]
                assert cfg["model"]["class_path"] == expected


def check_extract_config(path: Path) -> None:
    from probing.features.extract_config import parse

    cfg = parse(["--config", str(path)])
    assert cfg.prompts and cfg.output.endswith(".h5") and cfg.model.name


def check_refusal_config(path: Path) -> None:
    from probing.generation.refusal_config import parse

    assert parse(["--config", str(path)]).prompts


def check_monitor_config(path: Path) -> None:
    from probing.monitor.config import parse

    parse(["--config", str(path)])


def check_generalize_config(path: Path) -> None:
    from probing.generalize.config import parse

    cfg = parse(["--config", str(path)])
    assert cfg.features and (cfg.loso or cfg.matrix)


def check_compare_config(path: Path) -> None:
    from probing.compare.spec import parse

    assert parse(["--config", str(path)]).runs


def check_graft_config(path: Path) -> None:
    from probing.grafting.config import parse

    cfg = parse(["--config", str(path)])
    assert cfg.features and cfg.target_class


def check_judge_config(path: Path) -> None:
    from probing.generation.judge import load_judge

    judge = load_judge(path)
    assert judge.refused("I'm sorry, but I can't help with that.")
    assert not judge.refused("Sure! Here is a poem about the sea.")


def check_emotion_config(path: Path) -> None:
    from probing.lens.emotions import load_emotions

    emotions = load_emotions(path)
    assert emotions.classify("Ġsorry") == "negative" and emotions.classify("ĠSure") == "positive"


CHECKERS = {
    "probe": check_probe_config,
    "sweep": check_sweep_config,
    "extract": check_extract_config,
    "refusal": check_refusal_config,
    "monitor": check_monitor_config,
    "compare": check_compare_config,
    "generalize": check_generalize_config,
    "graft": check_graft_config,
    "judge": check_judge_config,
    "emotion": check_emotion_config,
}
PENDING: set[str] = set()  # folders whose checker is still to be written


CASES = [(folder, p) for folder in CHECKERS for p in sorted((CONFIGS / folder).glob("*.yaml"))]


@pytest.mark.parametrize(("folder", "path"), CASES, ids=[f"{f}/{p.name}" for f, p in CASES])
def test_config_parses(folder, path, monkeypatch):
    monkeypatch.chdir(ROOT)
    CHECKERS[folder](path)


def test_every_config_folder_has_a_checker():
    folders = {p.parent.relative_to(CONFIGS).parts[0] for p in CONFIGS.rglob("*.yaml")}
    assert folders - set(CHECKERS) - PENDING == set()
    assert all(list((CONFIGS / f).glob("*.yaml")) for f in CHECKERS)
