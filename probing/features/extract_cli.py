"""`probing extract --config configs/extract/NAME.yaml [--option value ...]`."""

from __future__ import annotations

from probing.features.extract import extract
from probing.features.extract_config import DESCRIPTION, parse

__all__ = ["DESCRIPTION", "parse", "run"]


def run(argv: list[str]) -> int:
    extract(parse(argv))
    return 0
