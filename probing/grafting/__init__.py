"""Stage 5b: logit grafting — replace a middle layer's last-token state and watch the output change."""

from probing.grafting.callback import GraftingCallback
from probing.grafting.hooks import check_graft, graft

__all__ = ["GraftingCallback", "check_graft", "graft"]
