"""The writers of a probe run's files, as Lightning callbacks a probe brings with it
(:meth:`~probing.probes.module.ProbeModule.configure_callbacks`).

``ProbeReports`` logs the features' provenance to W&B when a fit or test starts and, at test end,
writes the test report of the metrics the probe computed (``per_layer_metrics.csv``/``.json``, the
plot, the text baseline beside the layers, ``per_source_metrics.csv``, ``above_words.csv``; rank
zero). ``ProbePredictionWriter`` gathers ``probing predict``'s probabilities from every process and
writes ``predictions.csv``. Both read the run's data from ``trainer.datamodule``.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from probing.data.datamodule import ActivationDataModule
from probing.probes import predictions, report, wandb_utils
from probing.probes.test_report import write_test_report

log = logging.getLogger(__name__)


def _log_features(trainer: L.Trainer) -> None:
    dm = getattr(trainer, "datamodule", None)
    if isinstance(dm, ActivationDataModule):
        wandb_utils.log_config(trainer, "features", report.provenance(dm.meta))


class ProbeReports(L.Callback):
    """Logs the features' provenance at fit and test start; writes the test report at test end."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _log_features(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _log_features(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        dm = getattr(trainer, "datamodule", None)
        results = pl_module.test_results
        if not isinstance(dm, ActivationDataModule) or not results:
            log.warning("no test report: the probe was tested without an ActivationDataModule")
            return
        layers = pl_module.layers
        split = dm.test_split_name
        rows = report.metric_rows(results, layers, split)
        if pl_module.val_results:
            rows = report.metric_rows(pl_module.val_results, layers, "val") + rows
        best = pl_module.best_layers()
        for name, info in best.items():
            info[f"{split}_accuracy"] = results[name]["accuracy"][layers.index(info["layer"])]
        directory = wandb_utils.run_dir(trainer)  # a collective: on every rank
        if not trainer.is_global_zero:
            return
        info = {
            "classes": pl_module.class_names, "layers": layers, "best_layer_on_val": best,
            "features": str(dm.path), "test_features": dm.test_path,
            "feature_meta": report.provenance(dm.meta), "world_size": trainer.world_size,
        }  # fmt: skip
        title = f"{dm.meta.get('model', '')} - {' vs '.join(pl_module.class_names)} ({split})"
        write_test_report(pl_module, dm, directory, rows, info, split, title)


class ProbePredictionWriter(BasePredictionWriter):
    """``predictions.csv`` of ``probing predict``: every process's rows, gathered, written once."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: Any, predictions_: Any, batch_indices: Any
    ) -> None:
        outs = (
            predictions_[0] if predictions_ and isinstance(predictions_[0], list) else predictions_
        )
        if not outs:
            return
        local = {k: torch.cat([p[k].detach().cpu() for p in outs]) for k in outs[0]}
        gathered = {k: pl_module.all_gather(v.to(pl_module.device)).cpu() for k, v in local.items()}
        if trainer.world_size > 1:
            gathered = {k: v.flatten(0, 1) for k, v in gathered.items()}
        directory = wandb_utils.run_dir(trainer)  # a collective: on every rank
        if trainer.is_global_zero:
            dm = getattr(trainer, "datamodule", None)
            predictions.write_predictions(
                directory / predictions.CSV_NAME, gathered, pl_module.probe_names,
                pl_module.layers, pl_module.class_names, getattr(dm, "describe_rows", None),
            )  # fmt: skip
