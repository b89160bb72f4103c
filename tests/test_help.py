"""`probing COMMAND --help` is answered without the heavy libraries (times: bench/help.py), the Trainer
commands' short help names only options of the full parser, and ``python -m probing`` works."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from probing.cli import COMMANDS, TRAINER_COMMANDS, main
from probing.training.help import short_help

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "sklearn", "transformers", "torchmetrics", "wandb", "matplotlib")
ALLOWED: dict[str, set[str]] = {}
WRAPPER = """
import contextlib, io, sys
from probing.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print(code, ",".join(heavy))
"""


def _help_in_subprocess(*argv: str) -> tuple[int, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    code, _, heavy = out.stdout.strip().rpartition("\n")[2].partition(" ")
    return int(code or 0), set(filter(None, heavy.split(",")))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_imports_no_heavy_library(command):
    code, heavy = _help_in_subprocess(command, "--help")
    assert code == 0
    assert heavy <= ALLOWED.get(command, set()), f"probing {command} --help imported {heavy}"


def test_print_config_of_a_light_command_imports_no_heavy_library(tmp_path):
    code, heavy = _help_in_subprocess("weak", "--data.path", "x.h5", "--print_config")
    assert (code, heavy) == (0, set())


def test_every_help_function_is_the_commands_own_parse(monkeypatch):
    """The light function answering ``--help`` is the very parse the command runs with: the
    dispatcher parses once with the registry's ``config`` and hands that config to ``run``."""
    for name, command in COMMANDS.items():
        if name in TRAINER_COMMANDS:
            continue
        seen = []
        for field, fake in (
            (
                "config",
                lambda argv, name=name, seen=seen: seen.append(("parse", list(argv))) or name,
            ),
            ("run", lambda cfg, seen=seen: seen.append(("run", cfg)) or "result"),
        ):
            module, func = getattr(command, field).split(":")
            monkeypatch.setattr(importlib.import_module(module), func, fake)
        if command.report:
            module, func = command.report.split(":")
            report = lambda cfg, result, seen=seen: seen.append(("report", cfg, result))  # noqa: E731
            monkeypatch.setattr(importlib.import_module(module), func, report)
        assert main([name, "a", "--b", "c"]) == 0, name
        expected = [("parse", ["a", "--b", "c"]), ("run", name)]
        assert seen == expected + ([("report", name, "result")] if command.report else []), name
        monkeypatch.undo()


def test_registry_targets_exist_and_parses_are_light():
    """Every target names a function; importing every ``config`` module imports no heavy library."""
    code = (
        "import importlib, sys\n"
        "from probing.cli import COMMANDS\n"
        "for c in COMMANDS.values():\n"
        "    m, f = c.config.split(':'); assert callable(getattr(importlib.import_module(m), f)), m\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr
    for name, command in COMMANDS.items():
        for target in filter(None, (command.run, command.report)):
            module, func = target.split(":")
            assert callable(getattr(importlib.import_module(module), func)), (name, target)


def _stdout(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    return out.getvalue()


def test_short_help_names_only_options_of_the_full_parser():
    full = _stdout(["test", "--help", "all"])  # the Lightning CLI's own help (imports Lightning)
    assert "--trainer.max_epochs" in full and len(full.splitlines()) > 300
    fit_full = _stdout(["fit", "--help", "all"])
    for sub, text in (("test", full), ("fit", fit_full)):
        short = short_help(sub)
        options = set(re.findall(r"(--[a-z_]+(?:\.[a-z_]+)*)", short)) - {"--help"}
        assert options and "--data.path" in options
        known = set(re.findall(r"(--[a-z_]+(?:\.[a-z_]+)*)", text))
        known |= {"--model.lr"}  # jsonargparse's shorthand for --model.init_args.lr
        assert options <= known, sorted(options - known)
        assert len(short.splitlines()) < 80


def test_short_help_of_every_trainer_command():
    for sub in ("fit", "validate", "test", "predict"):
        text = _stdout([sub, "--help"])
        assert text.startswith(f"usage: probing {sub}") and f"probing {sub} --help all" in text
        assert ("--test_after_fit" in text) == (sub == "fit")


def test_python_dash_m_probing():
    out = subprocess.run(
        [sys.executable, "-m", "probing", "info", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0 and "usage: probing info" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "probing", "no-such-command"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2 and "unknown command 'no-such-command'" in out.stderr
