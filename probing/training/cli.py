"""``probing fit|validate|test|predict``: the command-line entry of the Lightning CLI
(:mod:`probing.training.lightning`); ``--help`` is answered by :mod:`probing.training.help`."""

from __future__ import annotations

from collections.abc import Sequence

from probing.training.help import full_help_argv
from probing.training.lightning import build_cli, finish_wandb


def run(argv: Sequence[str]) -> int:
    """Entry of ``probing fit|validate|test|predict`` (argv starts with the subcommand)."""
    try:
        build_cli(full_help_argv(argv))
    finally:
        finish_wandb()
    return 0
