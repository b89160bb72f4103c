"""Stage 4: per-layer probes (all layers in one module) and the paper's weak classifiers."""

from probing.probes.heads import LinearHeads, MLPHeads
from probing.probes.module import LinearMLPProbe, LinearProbe, MLPProbe, ProbeModule

__all__ = ["LinearHeads", "LinearMLPProbe", "LinearProbe", "MLPHeads", "MLPProbe", "ProbeModule"]
