"""``GraftingCallback``: a grafting evaluation with the probes being trained, at fit end (or every N epochs).

Configured in a probe YAML under ``trainer.callbacks``. It loads the base model named in the feature
file, grafts the donor class's mean state into a held-out sample of target prompts at the chosen
layers, and reports refusal rate, affirmative first token, KL and the trained probes' flip rate — as
``grafting/graft_summary.csv`` in the run directory and, with W&B, as a table and a plot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L

from probing.features.identity import recorded_model
from probing.grafting.run import GraftConfig, sweep
from probing.layers import LayerSpec
from probing.models.config import ModelOverride
from probing.probes.wandb_utils import run_dir

log = logging.getLogger(__name__)


class GraftingCallback(L.Callback):
    """Grafting evaluation during probe training.

    Args:
        source_class: class whose prompts' states are grafted (one donor prompt per target).
        target_class: class grafted into.
        jailbreak_class: class of real jailbreaks for comparison (skipped if absent).
        limit: target prompts evaluated (a seeded sample).
        layers: layers to graft at: an index, a list or ``"start:stop[:step]"`` (default: every
            ``layer_stride``-th from 1).
        layer_stride: spacing of the default layers.
        max_new_tokens: continuation length judged for refusal.
        batch_size: prompts per prefill pass.
        rows_per_pass: prompt × condition rows decoded together.
        every_n_epochs: also run after every N-th validation epoch (default: only at fit end).
        model: how to load the feature file's model (``{name, device, dtype, trust_remote_code}``;
            a plain string is the ``name``); default: as it was extracted, without remote code.
    """

    def __init__(
        self,
        source_class: str = "normal",
        target_class: str = "malicious",
        jailbreak_class: str | None = "jailbreak",
        limit: int = 16,
        layers: LayerSpec | None = None,
        layer_stride: int = 4,
        max_new_tokens: int = 16,
        batch_size: int = 8,
        rows_per_pass: int = 64,
        every_n_epochs: int | None = None,
        model: ModelOverride | str | None = None,
    ):
        self.kwargs = {
            "source_class": source_class,
            "target_class": target_class,
            "jailbreak_class": jailbreak_class,
            "limit": limit,
            "layers": layers,
            "layer_stride": layer_stride,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "rows_per_pass": rows_per_pass,
        }
        self.every_n_epochs = every_n_epochs
        self.model = ModelOverride(name=model) if isinstance(model, str) else model
        self._lm: Any = None
        self.last_summary: list[dict[str, Any]] | None = None

    def _load(self, meta: dict[str, Any]) -> Any:
        if self._lm is None:
            from probing.models.load import load_model

            option = "GraftingCallback's model.name"
            self._lm = load_model(recorded_model(meta, self.model, option))
        return self._lm

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: str) -> None:
        root = run_dir(trainer)  # a collective: every rank calls it
        if not trainer.is_global_zero:
            return
        data = trainer.datamodule
        path = getattr(data, "path", None)
        if path is None:
            log.warning("GraftingCallback needs a datamodule with a feature file `path`; skipped")
            return
        from probing.features.store import FeatureFile

        ff = FeatureFile(path)
        out = root / "grafting" / tag
        cfg = GraftConfig(features=str(path), output=str(out), **self.kwargs)
        was_training = pl_module.training
        pl_module.eval()
        try:
            result = sweep(cfg, lm=self._load(ff.meta), probe=pl_module)
        finally:
            pl_module.train(was_training)
        self.last_summary = result.summary
        self._log(trainer, result.summary, out, tag)

    def _log(self, trainer: L.Trainer, summary: list[dict[str, Any]], out: Path, tag: str) -> None:
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                import wandb

                columns = list(summary[0])
                logger.log_table(
                    key=f"grafting/{tag}/summary",
                    columns=columns,
                    data=[[r[c] for c in columns] for r in summary],
                )
                logger.experiment.log(
                    {f"grafting/{tag}/plot": wandb.Image(str(out / "graft_sweep.png"))}
                )
        log.info("grafting results (%s) in %s", tag, out)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (
            self.every_n_epochs
            and not trainer.sanity_checking
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        ):
            self.run(trainer, pl_module, f"epoch_{trainer.current_epoch:03d}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.run(trainer, pl_module, "fit_end")
