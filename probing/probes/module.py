"""Probe LightningModules: all-layer heads (from ``heads.py``) plus loss, metrics and logging.

``LinearProbe``, ``MLPProbe`` and ``LinearMLPProbe`` (both in one run) share :class:`ProbeModule`. The
loss is the sum over layers (and probes) of each head's mean cross-entropy; ``train/val/test/loss`` log
its mean over the heads (one head's cross-entropy, whatever the layer count). Per-layer metrics are
computed once per epoch, vectorised over layers, and logged as ``val/acc/layer_07`` (with a probe
prefix, ``val/linear/acc/layer_07``, when a module holds several probes). The best layer is chosen on
validation accuracy only.

Everything a probe needs from the data is given at instantiation (linked by the CLI from the data
module; ``ActivationDataModule.probe_args()`` in Python): shapes, classes, the train statistics, the
feature identity and ``full_batch``; a probe never reads ``trainer.datamodule``. Files are written by
the callbacks it brings (:meth:`ProbeModule.configure_callbacks`, :mod:`probing.probes.callbacks`): at
test time the run directory receives ``per_layer_metrics.csv``/``.json``, ``accuracy_per_layer.png``,
``per_source_metrics.csv`` and ``above_words.csv``; at predict time ``predictions.csv``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from probing.data.options import full_batch_applies
from probing.errors import ProbingError
from probing.probes import fullbatch, report
from probing.probes.callbacks import ProbePredictionWriter, ProbeReports
from probing.probes.heads import LinearHeads, MLPHeads
from probing.probes.linked import check_linked
from probing.probes.metrics import METRICS, LayerMetrics

log = logging.getLogger(__name__)
SHORT = {"accuracy": "acc", "f1": "f1", "auroc": "auroc"}


class ProbeModule(L.LightningModule):
    """Base of the probe modules: one independent head per selected layer, for each probe kind.

    Args:
        num_layers: Layers stored in the feature file (linked from the data).
        hidden_size: Hidden size D (linked from the data).
        num_classes: Number of classes (linked from the data).
        layers: Absolute indices of the probed layers (linked from the data; default all).
        class_names: Class names in index order (linked from the data).
        lr: AdamW learning rate (mini-batches; also the full-batch MLP heads').
        weight_decay: AdamW (decoupled) weight decay.
        scheduler: ``cosine`` anneals the learning rate to 0 over training; ``none`` keeps it constant
            (mini-batches only).
        l2: Full-batch mode (``--data.batch_size full``): L2 penalty of the linear heads, fitted with
            L-BFGS to each layer's mean cross-entropy + ``l2 / 2 * |W|^2`` (two classes: scikit-learn's
            ``LogisticRegression(C=2 / (l2 * n_train))``).
        max_iter: Full-batch mode: L-BFGS iterations of the linear heads at most.
        tol: Full-batch mode: L-BFGS stops when no gradient entry exceeds this (scikit-learn's
            default ``tol`` is also 1e-4); smaller values fit closer to the exact optimum.
        max_full_epochs: Full-batch mode: full-batch AdamW steps of the MLP heads at most.
        patience: Full-batch mode: an MLP layer stops after this many steps without a lower
            validation loss (training loss without validation rows) and keeps its best weights.
        bootstrap: Bootstrap resamples of the test rows for an accuracy interval (0 = none).
        compare_with: Other ``per_layer_metrics.csv`` files (or run directories), e.g. ``probing weak``'s,
            whose test accuracy is drawn in the same plot.
        text_baseline: At test time also fit the text baseline (the prompt's word and character
            n-grams) on the training split and report it beside the layers, with ``above_words.csv``.
        feature_meta: Provenance of the training features (model, template, ...; linked from the
            data); checked when the checkpoint is applied to a model (monitor, grafting).
        input_stats: Train mean and std ``[L, D]`` of the raw activations (linked from the data; None
            without standardisation), kept as buffers so that :meth:`raw_logits` scores activations
            read straight from a model. Not a hyperparameter: checkpoints keep the buffers.
        full_batch: The data gives the whole training split as one batch with its validation rows
            (linked from the data: ``batch_size: full`` in memory); heads are then fitted at once.
    """

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        num_classes: int = 2,
        layers: list[int] | None = None,
        class_names: list[str] | None = None,
        lr: float = 2e-3,
        weight_decay: float = 1e-2,
        scheduler: Literal["cosine", "none"] = "cosine",
        l2: float = 1e-3,
        max_iter: int = 100,
        tol: float = 1e-4,
        max_full_epochs: int = 500,
        patience: int = 10,
        bootstrap: int = 0,
        compare_with: list[str] | None = None,
        text_baseline: bool = True,
        feature_meta: dict[str, Any] | None = None,
        input_stats: Any = None,
        full_batch: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["input_stats", "full_batch"])
        if num_layers < 1 or hidden_size < 1 or num_classes < 2:
            raise ProbingError(
                f"a probe needs num_layers >= 1, hidden_size >= 1 and num_classes >= 2, got "
                f"{num_layers}, {hidden_size}, {num_classes} (they are linked from --data)"
            )
        self.layers = list(range(num_layers)) if layers is None else [int(i) for i in layers]
        if any(not 0 <= i < num_layers for i in self.layers):
            raise ProbingError(f"model layers {self.layers} are outside 0..{num_layers - 1}")
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        # Train standardisation of the raw activations (identity when off), kept in checkpoints so
        # that raw_logits() applies the probe to activations read straight from a model.
        self.register_buffer("input_mean", torch.zeros(len(self.layers), hidden_size))
        self.register_buffer("input_std", torch.ones(len(self.layers), hidden_size))
        if input_stats is not None:
            self._set_stats(input_stats)
        self.full_batch_requested = bool(full_batch)
        self.heads = nn.ModuleDict()
        self.metrics = nn.ModuleDict()
        # Validation results of the epoch the weights come from (saved in checkpoints).
        self.val_results: dict[str, dict[str, list[float]]] = {}
        self.test_results: dict[str, dict[str, list[float]]] = {}  # of the last test epoch
        self.full_batch = False  # in effect in this fit (one process; see setup)

    def _set_stats(self, stats: Any) -> None:
        mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in stats)
        if mean.numel() != self.input_mean.numel() or std.numel() != self.input_std.numel():
            raise ProbingError(
                f"input_stats of shape {tuple(mean.shape)} do not fit a probe of "
                f"{tuple(self.input_mean.shape)} (layers x hidden size); give the data's own "
                "(ActivationDataModule.probe_args())"
            )
        self.input_mean.copy_(mean.reshape(self.input_mean.shape))
        self.input_std.copy_(std.reshape(self.input_std.shape))

    # -- construction -------------------------------------------------------------------------------
    def add_head(self, name: str, head: nn.Module) -> None:
        self.heads[name] = head
        for stage in ("val", "test"):
            self.metrics[f"{stage}_{name}"] = LayerMetrics(
                len(self.layers), self.hparams.num_classes
            )

    @property
    def probe_names(self) -> list[str]:
        return list(self.heads)

    def _prefix(self, stage: str, probe: str) -> str:
        return f"{stage}/" if len(self.heads) == 1 else f"{stage}/{probe}/"

    # -- forward and loss ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits ``[B, L, C]`` of every probe for activations ``[B, L, D]``."""
        n = len(self.layers)
        if x.dim() != 3 or x.shape[1] != n or x.shape[2] != self.hparams.hidden_size:
            raise ProbingError(
                f"probe expects activations [batch, {n} layers, {self.hparams.hidden_size}], got "
                f"{tuple(x.shape)}; --data.layers and --data.path must match the model"
            )
        xt = x.transpose(0, 1).contiguous()  # layer-major once, shared by all heads
        return {
            name: head.forward_layer_major(xt).transpose(0, 1) for name, head in self.heads.items()
        }

    def raw_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits ``[B, L, C]`` for *raw* activations ``[B, L, D]`` (standardised here as in training)."""
        return self((x.to(self.input_mean) - self.input_mean) / self.input_std)

    @staticmethod
    def layer_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of each layer's head, ``[L]``."""
        target = y[:, None].expand(-1, logits.shape[1])
        return F.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(0)

    def _log_loss(self, stage: str, loss: torch.Tensor, batch_size: int) -> None:
        """``<stage>/loss``, the mean over heads (one head's cross-entropy); the objective is the sum."""
        mean = loss.detach() / (len(self.layers) * len(self.heads))
        self.log(f"{stage}/loss", mean, prog_bar=stage != "test", on_step=False, on_epoch=True,
                 batch_size=batch_size, sync_dist=stage != "train")  # fmt: skip

    def _step(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = sum(self.layer_losses(out, y).sum() for out in logits.values())
        return loss, logits

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.full_batch = full_batch_applies(self.full_batch_requested, self.trainer.world_size)
            self.automatic_optimization = not self.full_batch
            if self.full_batch:  # one epoch fits everything; the progress bar says so
                self.trainer.fit_loop.max_epochs = 1

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.full_batch:
            return self._fit_full_batch(batch)
        loss, _ = self._step(batch)
        self._log_loss("train", loss, len(batch[1]))
        return loss

    def _fit_full_batch(self, batch: Any) -> torch.Tensor:
        """Fit every head on the whole training split at once, then end training (one epoch)."""
        if len(batch) != 5:
            raise ProbingError(
                "the probe was given full_batch=True but the data gives mini-batches; build both "
                "from one ActivationDataModule(batch_size='full') (probe_args())"
            )
        x, y, _, vx, vy = batch
        xt = x.transpose(0, 1).contiguous()
        val = (vx.to(x).transpose(0, 1).contiguous(), vy.to(y.device)) if len(vy) else None
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        hp = self.hparams
        notes = fullbatch.fit_heads(
            self.heads, opts, xt, y, val, hp.l2, hp.max_full_epochs, hp.patience,
            backward=self.manual_backward,
        )  # fmt: skip
        log.info("full-batch fit on %d rows (%s)", len(y), "; ".join(notes))
        self.trainer.should_stop = True  # everything is fitted: one epoch, then validation
        with torch.no_grad():
            loss, _ = self._step(batch)
        self._log_loss("train", loss, len(y))
        return loss

    def _eval_step(self, batch: Any, stage: str) -> torch.Tensor:
        loss, logits = self._step(batch)
        y = batch[1]
        for name, out in logits.items():
            self.metrics[f"{stage}_{name}"].update(out.log_softmax(-1), y)
        self._log_loss(stage, loss, len(y))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "test")

    # -- epoch-level metrics ------------------------------------------------------------------------
    def _compute(self, stage: str) -> dict[str, dict[str, list[float]]]:
        """Per-probe metric lists ``[L]`` (a collective under DDP), logged once per epoch."""
        out = {}
        for name in self.heads:
            metric = self.metrics[f"{stage}_{name}"]
            values = {k: v.reshape(-1).tolist() for k, v in metric.compute().items()}
            if stage == "test" and self.hparams.bootstrap:
                values.update(metric.accuracy_interval(self.hparams.bootstrap))
            metric.reset()
            out[name] = values
            prefix = self._prefix(stage, name)
            logged = {
                f"{prefix}{SHORT[k]}/{report.layer_name(layer)}": values[k][j]
                for k in METRICS
                for j, layer in enumerate(self.layers)
            }
            logged[f"{prefix}acc/mean"] = sum(values["accuracy"]) / len(self.layers)
            if stage == "val":  # the best layer is chosen on validation only
                best = _argmax(values["accuracy"])
                logged[f"{prefix}acc/best"] = values["accuracy"][best]
                logged[f"{prefix}best_layer"] = float(self.layers[best])
            elif name in self.val_results:  # test accuracy at the layer chosen on validation
                best = _argmax(self.val_results[name]["accuracy"])
                logged[f"{prefix}acc/at_best_val_layer"] = values["accuracy"][best]
            self.log_dict(logged, sync_dist=False)
        return out

    def on_validation_epoch_end(self) -> None:
        results = self._compute("val")
        if not self.trainer.sanity_checking:
            self.val_results = results

    def best_layers(self) -> dict[str, dict[str, Any]]:
        """The layer with the best validation accuracy for each probe (empty without validation)."""
        out = {}
        for name, values in self.val_results.items():
            j = _argmax(values["accuracy"])
            out[name] = {"layer": self.layers[j], "val_accuracy": values["accuracy"][j]}
        return out

    def on_test_epoch_end(self) -> None:
        self.test_results = self._compute("test")  # written by ProbeReports at test end

    def configure_callbacks(self) -> list[L.Callback]:
        """The writers of this probe's files: the test report and ``predictions.csv`` (those the
        trainer does not hold yet: a test after fit keeps the ones attached for the fit)."""
        present = {type(c) for c in self.trainer.callbacks} if self._trainer is not None else set()
        return [c() for c in (ProbeReports, ProbePredictionWriter) if c not in present]

    # -- predict --------------------------------------------------------------------------------------
    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Class probabilities ``[B, L, C]`` of every probe, with the batch's file rows and labels
        (``predictions.csv`` by :class:`~probing.probes.callbacks.ProbePredictionWriter`)."""
        x, y, rows = batch
        out = {name: logits.softmax(-1) for name, logits in self(x).items()}
        out["rows"], out["label"] = rows, y
        return out

    # -- optimisation ---------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        if self.full_batch:  # one optimizer per head, used by fullbatch.fit_heads
            return fullbatch.optimizers(
                self.heads.values(), hp.lr, hp.weight_decay, hp.max_iter, hp.tol
            )
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return opt
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints ----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["probe_val_results"] = self.val_results
        checkpoint["probe_class"] = f"{type(self).__module__}.{type(self).__qualname__}"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_linked(checkpoint.get("hyper_parameters", {}), self.hparams)
        self.val_results = checkpoint.get("probe_val_results", {})


def _argmax(values: list[float]) -> int:
    clean = [v if not math.isnan(v) else -math.inf for v in values]
    return max(range(len(clean)), key=clean.__getitem__)


class LinearProbe(ProbeModule):
    """One linear classifier (logistic regression) per layer, all layers in one batched matmul."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_head(
            "linear",
            LinearHeads(len(self.layers), self.hparams.hidden_size, self.hparams.num_classes),
        )


class MLPProbe(ProbeModule):
    """One MLP (``D -> hidden_dim -> C``, ReLU, dropout) per layer, all layers in two batched matmuls.

    Args:
        hidden_dim: Hidden units of each layer's MLP (the paper's weak MLP has 100).
        dropout: Dropout on the hidden units.
    """

    def __init__(self, hidden_dim: int = 100, dropout: float = 0.1, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_head(
            "mlp",
            MLPHeads(
                len(self.layers),
                self.hparams.hidden_size,
                self.hparams.num_classes,
                hidden_dim,
                dropout,
            ),
        )


class LinearMLPProbe(ProbeModule):
    """A linear and an MLP probe on every layer, trained together in one run (one data pass).

    Args:
        hidden_dim: Hidden units of each layer's MLP.
        dropout: Dropout on the MLP's hidden units.
    """

    def __init__(self, hidden_dim: int = 100, dropout: float = 0.1, **kwargs: Any):
        super().__init__(**kwargs)
        n, d, c = len(self.layers), self.hparams.hidden_size, self.hparams.num_classes
        self.add_head("linear", LinearHeads(n, d, c))
        self.add_head("mlp", MLPHeads(n, d, c, hidden_dim, dropout))
