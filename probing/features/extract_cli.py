"""`probing extract --config configs/extract/NAME.yaml [--option value ...]`."""

from __future__ import annotations

from probing.config import parse_config
from probing.features.extract import ExtractConfig, extract

DESCRIPTION = (
    "Extract per-layer hidden states and logit-lens top-k of prompts into an HDF5 feature file."
)


def parse(argv: list[str]) -> ExtractConfig:
    return parse_config(ExtractConfig, argv, "probing extract", DESCRIPTION)


def run(argv: list[str]) -> int:
    extract(parse(argv))
    return 0
