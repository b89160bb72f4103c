"""Stage 4: per-layer probes (all layers in one module) and the paper's weak classifiers.

The classes are imported on first use (``probing.probes.LinearProbe`` in a config resolves as before),
so that a light submodule (a command's options, read by ``--help``) does not import Lightning.
"""

from probing.lazy import lazy_names

__all__, __getattr__ = lazy_names(
    __name__,
    {
        "heads": ["LinearHeads", "MLPHeads"],
        "module": ["LinearMLPProbe", "LinearProbe", "MLPProbe", "ProbeModule"],
    },
)
