"""Stage 5b: logit grafting — replace a middle layer's last-token state and watch the output change.

The names are imported on first use: ``probing.grafting.config`` (read by ``--help``) needs neither
torch nor Lightning, and ``probing graft`` needs no Lightning (``GraftingCallback``).
"""

from probing.lazy import lazy_names

__all__, __getattr__ = lazy_names(
    __name__,
    {
        "callback": ["GraftingCallback"],
        "hooks": ["check_graft", "graft"],
    },
)
