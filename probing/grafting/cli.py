"""`probing graft --config configs/graft/NAME.yaml`: a grafting sweep over layers, CSV + plot."""

from __future__ import annotations

from probing.grafting.config import GraftConfig, parse
from probing.grafting.run import donors, plot, sweep, write

__all__ = ["GraftConfig", "donors", "parse", "plot", "run", "sweep", "write"]


def run(argv: list[str]) -> int:
    sweep(parse(argv))
    return 0
