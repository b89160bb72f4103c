"""Stage 5b: logit grafting — replace a middle layer's last-token state and watch the output change."""

from typing import Any

from probing.grafting.hooks import check_graft, graft

__all__ = ["GraftingCallback", "check_graft", "graft"]


def __getattr__(name: str) -> Any:
    """``GraftingCallback`` on first use: it needs Lightning, which ``probing graft`` does not."""
    if name == "GraftingCallback":
        from probing.grafting.callback import GraftingCallback

        return GraftingCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
