"""Stage 5b: logit grafting — replace a middle layer's last-token state and watch the output change.

The names are imported on first use: ``probing.grafting.config`` (read by ``--help``) needs neither
torch nor Lightning, and ``probing graft`` needs no Lightning (``GraftingCallback``).
"""

from typing import Any

__all__ = ["GraftingCallback", "check_graft", "graft"]


def __getattr__(name: str) -> Any:
    if name == "GraftingCallback":
        from probing.grafting.callback import GraftingCallback

        return GraftingCallback
    if name in {"check_graft", "graft"}:
        from probing.grafting import hooks

        return getattr(hooks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
