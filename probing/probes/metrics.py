"""Per-layer classification metrics, vectorised over layers.

Scores ``[N, L, C]`` (any score monotone in each class's probability: probabilities, log-probabilities,
decision values) and targets ``[N]`` give accuracy, F1 and AUROC for every layer at once:

* accuracy: fraction of rows whose arg-max class is the target;
* F1: binary (C = 2) F1 of the positive class (index 1); multiclass the macro average over classes,
  skipping classes that appear in neither targets nor predictions (as torchmetrics does);
* AUROC: binary AUROC of the positive class; multiclass the macro one-vs-rest AUROC
  (:mod:`probing.probes.auroc`). Undefined (NaN) when a class has no positive or no negative row,
  e.g. a transfer test set that holds only one class.

Only the per-class loop (C is 2 or 3) remains; there is no loop over layers.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from probing.probes.auroc import auroc_ovr

METRICS = ("accuracy", "f1", "auroc")


def confusion(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[L, C, C]`` confusion matrices (rows = target, columns = prediction) from ``preds [N, L]``."""
    n, num_layers = preds.shape
    layer = torch.arange(num_layers, device=preds.device).expand(n, num_layers)
    idx = (layer * num_classes + target[:, None]) * num_classes + preds
    counts = torch.bincount(idx.reshape(-1), minlength=num_layers * num_classes * num_classes)
    return counts.view(num_layers, num_classes, num_classes)


def f1_from_confusion(conf: torch.Tensor) -> torch.Tensor:
    """Binary F1 of class 1 (C = 2) or macro F1 (C > 2) per layer from ``[L, C, C]``."""
    conf = conf.double()
    tp = conf.diagonal(dim1=1, dim2=2)
    fp = conf.sum(1) - tp
    fn = conf.sum(2) - tp
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    if conf.shape[-1] == 2:
        return f1[:, 1]
    present = (tp + fp + fn) > 0
    return (f1 * present).sum(1) / present.sum(1).clamp_min(1)


def auroc(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary (class 1) or macro one-vs-rest AUROC per layer; classes without positives are skipped."""
    num_classes = scores.shape[-1]
    if num_classes == 2:
        return auroc_ovr(scores[..., 1] - scores[..., 0], target == 1)
    per_class = torch.stack([auroc_ovr(scores[..., c], target == c) for c in range(num_classes)], 1)
    return per_class.nanmean(1)


def layer_metrics(
    scores: torch.Tensor, target: torch.Tensor, preds: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """``{"accuracy", "f1", "auroc"}`` -> ``[L]`` float64 tensors.

    ``scores [N, L, C]``; ``preds [N, L]`` defaults to the arg-max of the scores (pass them when the
    classifier's decision differs from the arg-max, as for a one-vs-one SVM).
    """
    if scores.dim() != 3 or scores.shape[0] != target.shape[0]:
        raise ValueError(
            f"scores must be [N, L, C] with N = len(target), got {tuple(scores.shape)}"
        )
    target = target.long()
    preds = scores.argmax(-1) if preds is None else preds.long()
    conf = confusion(preds, target, scores.shape[-1])
    n = conf.sum((1, 2)).double().clamp_min(1)
    return {
        "accuracy": conf.diagonal(dim1=1, dim2=2).sum(1).double() / n,
        "f1": f1_from_confusion(conf),
        "auroc": auroc(scores, target),
    }


def bootstrap_accuracy(
    correct: torch.Tensor, n_boot: int, seed: int = 0, level: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bootstrap interval of per-layer accuracy from ``correct [N, L]`` (rows resampled)."""
    gen = torch.Generator().manual_seed(seed)
    correct = correct.double().cpu()
    n = correct.shape[0]
    accs = []
    for start in range(0, n_boot, 64):
        idx = torch.randint(0, n, (min(64, n_boot - start), n), generator=gen)
        accs.append(correct[idx].mean(1))
    acc = torch.cat(accs)
    alpha = (1 - level) / 2
    return acc.quantile(alpha, dim=0), acc.quantile(1 - alpha, dim=0)


class LayerMetrics(Metric):
    """Accumulates scores ``[B, L, C]`` and targets; :meth:`compute` returns :func:`layer_metrics`.

    The per-step update is an append (no per-layer work); everything is computed once per epoch.
    Under DDP the states are gathered across processes (``compute`` is then a collective).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_layers: int, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_layers, self.num_classes = num_layers, num_classes
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, target: torch.Tensor) -> None:
        if scores.shape[1:] != (self.num_layers, self.num_classes):
            raise ValueError(
                f"expected scores [B, {self.num_layers}, {self.num_classes}], got {tuple(scores.shape)}"
            )
        self.scores.append(scores.detach().float())
        self.target.append(target.detach().long())

    def _cat(self) -> tuple[torch.Tensor, torch.Tensor]:
        scores, target = self.scores, self.target
        if isinstance(scores, list):
            if not scores:
                empty = torch.zeros(0, self.num_layers, self.num_classes, device=self.device)
                return empty, torch.zeros(0, dtype=torch.long, device=self.device)
            scores, target = torch.cat(scores), torch.cat(target)
        return scores, target

    def compute(self) -> dict[str, torch.Tensor]:
        scores, target = self._cat()
        return layer_metrics(scores, target)

    def correct(self) -> torch.Tensor:
        """``[N, L]`` booleans: was each accumulated row classified right at each layer."""
        scores, target = self._cat()
        return scores.argmax(-1) == target[:, None]

    def accuracy_interval(self, n_boot: int, seed: int = 0) -> dict[str, list[float]]:
        """``accuracy_lo``/``accuracy_hi`` per layer: :func:`bootstrap_accuracy` over the rows of every
        process (a collective under DDP)."""
        with self.sync_context():
            correct = self.correct()
        lo, hi = bootstrap_accuracy(correct, n_boot, seed=seed)
        return {"accuracy_lo": lo.tolist(), "accuracy_hi": hi.tolist()}
