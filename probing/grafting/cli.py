"""`probing graft --config configs/graft/NAME.yaml`: a grafting sweep over layers, CSV + plot."""

from __future__ import annotations

from probing.config import parse_config
from probing.grafting.run import GraftConfig, donors, plot, sweep, write

__all__ = ["GraftConfig", "donors", "parse", "plot", "run", "sweep", "write"]


def parse(argv: list[str]) -> GraftConfig:
    return parse_config(GraftConfig, argv, "probing graft", "Logit-grafting sweep over layers.")


def run(argv: list[str]) -> int:
    sweep(parse(argv))
    return 0
