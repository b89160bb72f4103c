"""Stage 4: per-layer probes (all layers in one module) and the paper's weak classifiers.

The classes are imported on first use (``probing.probes.LinearProbe`` in a config resolves as before),
so that a light submodule (a command's options, read by ``--help``) does not import Lightning.
"""

from typing import Any

__all__ = ["LinearHeads", "LinearMLPProbe", "LinearProbe", "MLPHeads", "MLPProbe", "ProbeModule"]


def __getattr__(name: str) -> Any:
    if name in {"LinearHeads", "MLPHeads"}:
        from probing.probes import heads

        return getattr(heads, name)
    if name in __all__:
        from probing.probes import module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
