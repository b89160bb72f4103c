"""Per-source results of a trained probe: ``per_source_metrics.csv`` beside the per-layer metrics.

Each prompt source of the test split, and each source held out of training entirely
(``--data.holdout_sources``), gets accuracy at the threshold chosen on the validation split (at most
``fpr`` of its negatives flagged), AUROC, TPR at 1% FPR and its flag rate — per probe and layer. Sources
with one class are ranked against the test split's rows of the other class (see
:mod:`probing.probes.rates`). The score is ``p(class 1)`` for binary probes and ``1 - p(class 0)``
(anything but the first class) otherwise.

The text baseline (:mod:`probing.probes.text`), fitted on the training split's prompts, gets the same rows
(``probe = text``, empty ``layer``), and every probe's paired difference to it (``above_words.csv``,
:mod:`probing.probes.above_words`) on the test split and on each held-out source.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probing.probes.above_words import Paired, delta_rows, paired_deltas
from probing.probes.rates import per_source_rows, thresholds_at_fpr
from probing.probes.text import TEXT, fit_text, harm_score, text_probs
from probing.tables import write_csv

log = logging.getLogger(__name__)
CSV_NAME = "per_source_metrics.csv"
COLUMNS = (
    "split", "source", "probe", "layer", "rows", "positives", "accuracy", "auroc", "tpr_at_1fpr",
    "flagged_rate", "threshold",
)  # fmt: skip
SPLITS = ("val", "test", "heldout")


@torch.no_grad()
def _scores(module: Any, x: torch.Tensor) -> dict[str, np.ndarray]:
    if not len(x):
        return {}
    out = {}
    for name, logits in module(x.to(module.device)).items():
        p = logits.float().softmax(-1).cpu()
        out[name] = (p[..., 1] if p.shape[-1] == 2 else 1 - p[..., 0]).numpy()
    return out


def text_baseline(dm: Any, seed: int = 0) -> dict[str, np.ndarray] | None:
    """The text baseline fitted on the training split's prompts (C chosen on the validation split):
    class probabilities ``[n, C]`` of the val, test and held-out rows in :meth:`source_rows` order,
    or None where the rows are not read in memory (their order is then the chunks')."""
    if not hasattr(dm, "prompts") or any(s.x is None for s in dm.sources.values()):
        log.info("text baseline: skipped (it needs the in-memory data path, --data.in_memory)")
        return None
    prompts, y = dm.prompts("main"), dm.sources["main"].y
    pos = dm.split_pos
    clf = fit_text(prompts[pos["train"]], y[pos["train"]], (prompts[pos["val"]], y[pos["val"]]))
    held = dm.prompts("heldout") if "heldout" in dm.sources else prompts[:0]
    texts = {"val": prompts[pos["val"]], "test": prompts[pos["test"]], "heldout": held}
    return {k: text_probs(clf, v, dm.num_classes) for k, v in texts.items()}


def per_source_results(
    module: Any,
    dm: Any,
    fpr: float = 0.01,
    text: dict[str, np.ndarray] | None = None,
    bootstrap: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows ``split, source, probe, layer, ...metrics`` for the test split and the held-out sources
    (the text baseline's too, given its probabilities) and, with ``bootstrap``, the ``above_words``
    rows: each probe − text on the test split and each held-out source."""
    if not hasattr(dm, "source_rows"):
        return [], []
    was_training = module.training
    module.eval()
    try:
        data = {s: dm.source_rows(s) for s in SPLITS}
        scores = {s: _scores(module, data[s][0]) for s in SPLITS}
    finally:
        module.train(was_training)
    layers: dict[str, list[int | None]] = {name: list(dm.layers) for name in scores["test"]}
    if text is not None and len(data["test"][1]):
        for s in SPLITS:
            scores[s][TEXT] = harm_score(text[s])[:, None]
        layers[TEXT] = [None]
    (_, y_val, _), (_, y_test, s_test), (_, y_held, s_held) = (data[s] for s in SPLITS)
    pos_t = y_test > 0
    rows: list[dict[str, Any]] = []
    thresholds = {}
    for name, s_t in scores["test"].items():
        neg_val = scores["val"][name][y_val == 0] if name in scores["val"] else np.zeros((0, 1))
        threshold = thresholds_at_fpr(neg_val, fpr) if len(neg_val) else np.full(s_t.shape[1], 0.5)
        thresholds[name] = threshold
        rows += per_source_rows(
            s_t, pos_t, s_test, threshold, layers[name], reference=(s_t, pos_t), fpr=fpr,
            extra={"probe": name, "split": "test"},
        )  # fmt: skip
        if name in scores["heldout"]:
            rows += per_source_rows(
                scores["heldout"][name], y_held > 0, s_held, threshold, layers[name],
                reference=(s_t, pos_t), fpr=fpr, extra={"probe": name, "split": "heldout"},
            )  # fmt: skip
    above = []
    if TEXT in layers and bootstrap > 0:
        for name in (n for n in layers if n != TEXT):
            above += _above(name, scores, thresholds, (pos_t, y_held > 0, s_held), dm.layers,
                            fpr, bootstrap)  # fmt: skip
    return rows, above


def _above(
    name: str, scores: dict, thresholds: dict, truth: tuple, layers: list[int], fpr: float,
    bootstrap: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """``above_words`` rows of one probe: the test split, then each held-out source."""
    pos_t, pos_h, s_held = truth
    t = scores["test"][TEXT][:, 0]
    th, tt = thresholds[name], float(thresholds[TEXT][0])
    test = Paired(scores["test"][name], t, pos_t, th, tt)
    out = delta_rows(paired_deltas(test, fpr, bootstrap), layers,
                     {"train": "train split", "test": "test split", "probe": name})  # fmt: skip
    if name in scores["heldout"]:
        reference = (scores["test"][name], t, pos_t)
        for source in dict.fromkeys(np.asarray(s_held).tolist()):
            sel = np.asarray(s_held) == source
            held = Paired(scores["heldout"][name][sel], scores["heldout"][TEXT][sel, 0], pos_h[sel],
                          th, tt, reference)  # fmt: skip
            out += delta_rows(paired_deltas(held, fpr, bootstrap), layers,
                              {"train": "train split", "test": source, "probe": name})  # fmt: skip
    return out


def write_per_source(rows: list[dict[str, Any]], directory: Path) -> Path | None:
    if not rows:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CSV_NAME
    write_csv(path, rows, COLUMNS, digits="")
    held = [r for r in rows if r["split"] == "heldout"]
    if held:
        log.info("held-out sources: %s", ", ".join(sorted({r["source"] for r in held})))
    log.info("per-source metrics: %s", path)
    return path
