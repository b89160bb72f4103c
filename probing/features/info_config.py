"""`probing info FILE [--json]`: its options (light: answers ``--help`` without numpy or h5py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from probing.config import parse_config


@dataclass
class InfoConfig:
    """Summarise a feature file.

    Args:
        path: feature file (``.h5``); may be given without ``--path``.
        json: print JSON instead of text.
    """

    path: str
    json: bool = False


def parse(argv: Sequence[str]) -> InfoConfig:
    return parse_config(
        InfoConfig, argv, "probing info", "Summarise a feature file.", positional=("path",)
    )
