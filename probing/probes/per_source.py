"""Per-source results of a trained probe: ``per_source_metrics.csv`` beside the per-layer metrics.

Each prompt source of the test split, and each source held out of training entirely
(``--data.holdout_sources``), gets accuracy at the threshold chosen on the validation split (at most
``fpr`` of its negatives flagged), AUROC, TPR at 1% FPR and its flag rate — per probe and layer. Sources
with one class are ranked against the test split's rows of the other class (see
:mod:`probing.probes.rates`). The score is ``p(class 1)`` for binary probes and ``1 - p(class 0)``
(anything but the first class) otherwise.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probing.probes.rates import per_source_rows, thresholds_at_fpr

log = logging.getLogger(__name__)
CSV_NAME = "per_source_metrics.csv"
COLUMNS = (
    "split", "source", "probe", "layer", "rows", "positives", "accuracy", "auroc", "tpr_at_1fpr",
    "flagged_rate", "threshold",
)  # fmt: skip


@torch.no_grad()
def _scores(module: Any, x: torch.Tensor) -> dict[str, np.ndarray]:
    if not len(x):
        return {}
    out = {}
    for name, logits in module(x.to(module.device)).items():
        p = logits.float().softmax(-1).cpu()
        out[name] = (p[..., 1] if p.shape[-1] == 2 else 1 - p[..., 0]).numpy()
    return out


def per_source_results(module: Any, dm: Any, fpr: float = 0.01) -> list[dict[str, Any]]:
    """Rows ``split, source, probe, layer, ...metrics`` for the test split and the held-out sources."""
    if not hasattr(dm, "source_rows"):
        return []
    was_training = module.training
    module.eval()
    try:
        x_val, y_val, _ = dm.source_rows("val")
        x_test, y_test, s_test = dm.source_rows("test")
        x_held, y_held, s_held = dm.source_rows("heldout")
        val, test, held = _scores(module, x_val), _scores(module, x_test), _scores(module, x_held)
    finally:
        module.train(was_training)
    rows: list[dict[str, Any]] = []
    for name, s_t in test.items():
        neg_val = val[name][y_val == 0] if name in val else np.zeros((0, s_t.shape[1]))
        threshold = thresholds_at_fpr(neg_val, fpr) if len(neg_val) else np.full(s_t.shape[1], 0.5)
        pos_t = y_test > 0
        extra = {"probe": name, "split": "test"}
        rows += per_source_rows(
            s_t, pos_t, s_test, threshold, dm.layers, reference=(s_t, pos_t), fpr=fpr, extra=extra
        )
        if name in held:
            rows += per_source_rows(
                held[name], y_held > 0, s_held, threshold, dm.layers,
                reference=(s_t, pos_t), fpr=fpr, extra={"probe": name, "split": "heldout"},
            )  # fmt: skip
    return rows


def write_per_source(rows: list[dict[str, Any]], directory: Path) -> Path | None:
    if not rows:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CSV_NAME
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            )
    held = [r for r in rows if r["split"] == "heldout"]
    if held:
        log.info("held-out sources: %s", ", ".join(sorted({r["source"] for r in held})))
    log.info("per-source metrics: %s", path)
    return path
