"""``train(config, overrides)``: ``probing fit`` as a library function, for the demo and ``probing
compare`` (typed values given to the parser as values, never command-line words)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from probing.errors import ProbingError
from probing.probes import wandb_utils
from probing.training.lightning import build_cli, finish_wandb


def train(config: str | Path, overrides: dict[str, Any] | None = None) -> Path:
    """The library form of ``probing fit``: train the probes of the fit config ``config`` (YAML) with
    dotted ``overrides`` (``{"data.path": "f.h5", "trainer.max_epochs": 5, "trainer.logger": False}``,
    typed values, given to the parser as values, not command-line words); returns the run folder
    (metrics, config and checkpoints)."""
    values = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    for key, value in (overrides or {}).items():
        _set_dotted(values, key, str(value) if isinstance(value, Path) else value, config)
    try:
        cli = build_cli({"subcommand": "fit", "fit": values})
    finally:
        finish_wandb()
    return wandb_utils.run_dir(cli.trainer)


def _set_dotted(values: dict[str, Any], key: str, value: Any, config: str | Path) -> None:
    *parents, last = key.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ProbingError(f"override {key!r}: {part!r} in {config} is not a mapping")
    node[last] = value
