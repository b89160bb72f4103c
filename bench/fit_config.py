"""The `probing fit` config the benchmarks time (bench/probes.py, bench/startup.py): a linear and an
MLP(100) head on every layer, normal vs malicious, stratified 70/30 split (seed 42), standardised,
no logger or checkpoints, test after fit."""

from __future__ import annotations

from pathlib import Path


def fit_yaml(
    features: Path,
    out: Path,
    epochs: int = 40,
    batch: int | str = "full",
    lr: float = 0.01,
    accelerator: str = "auto",
    devices: int = 1,
) -> str:
    """The YAML text; ``out`` is the run folder (``per_layer_metrics.json`` lands there)."""
    return f"""seed_everything: 42
trainer:
  max_epochs: {epochs}
  accelerator: {accelerator}
  devices: {devices}
  strategy: {"ddp" if devices > 1 else "auto"}
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {out}
model:
  class_path: probing.probes.LinearMLPProbe
  init_args: {{lr: {lr}, weight_decay: 0.01, scheduler: cosine, hidden_dim: 100, dropout: 0.1}}
data:
  path: {features}
  layers: all
  classes: [normal, malicious]
  split: [0.7, 0.0, 0.3]
  seed: 42
  standardize: true
  batch_size: {batch}
  in_memory: always
"""
