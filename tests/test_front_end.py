"""One front end: every command parses ``--print_config`` (and ``--help``) through jsonargparse."""

from __future__ import annotations

import contextlib
import gc
import io
import sys
from pathlib import Path

import pytest
import yaml

from probing.cli import COMMANDS, entry, main
from probing.errors import ProbingError
from probing.features.info_config import parse as parse_info
from probing.features.merge_config import parse as parse_merge
from probing.monitor.config import parse as parse_monitor


def _exit_code(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:  # jsonargparse exits after printing
            code = exc.code or 0
    return int(code), out.getvalue()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_prints_its_config(command):
    code, text = _exit_code([command, "--print_config"])
    assert code == 0, text
    assert isinstance(yaml.safe_load(text), dict)


def test_positional_arguments_bare_flags_and_aliases(caplog):
    assert parse_info(["f.h5", "--json"]).json and parse_info(["--path", "f.h5"]).path == "f.h5"
    cfg = parse_merge(["a.h5", "b.h5", "--output", "m.h5", "--overwrite"])
    assert cfg.shards == ["a.h5", "b.h5"] and cfg.overwrite
    cfg = parse_monitor(["--ckpt", "c", "--model_name", "m", "--device=cuda", "--eval"])
    assert (cfg.model.name, cfg.model.device, cfg.eval) == ("m", "cuda", True)
    assert "--model_name is deprecated; use --model.name" in caplog.text
    with pytest.raises(ProbingError, match=r"unexpected argument\(s\) \['b.h5'\]"):
        parse_info(["a.h5", "b.h5"])


def test_console_script_exits_with_the_commands_status_after_freezing_gc(monkeypatch):
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert 'probing = "probing.cli:entry"' in pyproject
    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(sys, "argv", ["probing", "no-such-command"])
    with pytest.raises(SystemExit) as exc:
        entry()
    assert exc.value.code == 2 and calls == ["freeze"]
    monkeypatch.setattr(sys, "argv", ["probing", "info", "--help"])  # the parser exits itself
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stdout(io.StringIO()):
        entry()
    assert exc.value.code == 0 and calls == ["freeze", "freeze"]
