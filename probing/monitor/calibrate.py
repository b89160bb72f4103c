"""Scores, thresholds at a target false positive rate, TPR@FPR and AUROC, and ``monitor.json``.

A probe gives class probabilities; the monitor turns them into one *harm score* per prompt (the
:class:`Scorer` rule) and flags a prompt when ``score >= threshold``. The threshold is chosen on the
*negative* (normal) prompts of a labelled calibration set so that at most a fraction ``fpr`` of them
would be flagged. Chosen thresholds are kept in ``monitor.json`` beside the checkpoint.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probing.errors import ProbingError
from probing.monitor.config import EVAL_FPRS
from probing.probes.auroc import auroc
from probing.probes.rates import check_fpr, threshold_at_fpr, tpr_at_fpr

log = logging.getLogger(__name__)

STORE_NAME = "monitor.json"
STORE_FORMAT = "probing-monitor"


@dataclass(frozen=True)
class Scorer:
    """How class probabilities become one harm score in ``[0, 1]``, and which labels are harmful.

    Binary probes score ``p(positive)``; probes with more classes score ``1 - p(negative)`` (every
    class but the normal one counts as harmful, e.g. malicious and jailbreak). Ground truth: a row is
    positive when its (mapped) label is not ``negative``.
    """

    class_names: tuple[str, ...]
    positive: str = "malicious"
    negative: str = "normal"

    def __post_init__(self) -> None:
        names = list(self.class_names)
        if self.positive == self.negative:
            raise ProbingError(f"--positive and --negative are both {self.positive!r}")
        if len(names) == 2 and self.positive not in names and self.negative not in names:
            raise ProbingError(
                f"the probe's classes are {names}: neither --positive {self.positive!r} nor "
                f"--negative {self.negative!r} is one of them; set --positive to the harmful class"
            )
        if len(names) > 2 and self.negative not in names:
            raise ProbingError(
                f"a {len(names)}-class probe scores 1 - p(--negative), but {self.negative!r} is not "
                f"one of its classes {names}; set --negative to the normal class"
            )

    @property
    def rule(self) -> str:
        if len(self.class_names) == 2 and self.positive in self.class_names:
            return f"p({self.positive})"
        return f"1 - p({self.negative})"

    def __call__(self, probs: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Scores ``[...]`` of probabilities ``[..., C]``."""
        names = list(self.class_names)
        if len(names) == 2 and self.positive in names:
            return probs[..., names.index(self.positive)]
        return 1 - probs[..., names.index(self.negative)]

    def is_positive(
        self, labels: Sequence[str], class_map: dict[str, str] | None = None
    ) -> np.ndarray:
        """Ground truth per row: True unless the label (after ``class_map``) is ``negative``."""
        class_map = class_map or {}
        return np.array([class_map.get(x, x) != self.negative for x in labels], dtype=bool)


def check_threshold(threshold: float, option: str = "--threshold") -> float:
    if not (
        isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0 <= threshold <= 1
    ):
        raise ProbingError(
            f"{option} is a probability threshold in [0, 1], got {threshold}; or leave it out and "
            "choose one with --fpr"
        )
    return float(threshold)


def rates(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict[str, float]:
    """TPR and FPR of ``score >= threshold``."""
    flagged = np.asarray(scores) >= threshold
    positive = np.asarray(positive, dtype=bool)
    tpr = float(flagged[positive].mean()) if positive.any() else math.nan
    fpr = float(flagged[~positive].mean()) if (~positive).any() else math.nan
    return {"tpr": tpr, "fpr": fpr}


@dataclass
class Calibration:
    """Thresholds per probed layer for one target FPR, and how they were obtained."""

    fpr: float
    layers: list[int]
    thresholds: list[float]
    tpr: list[float]  # on the calibration set at each threshold
    achieved_fpr: list[float]
    rows: int
    negatives: int
    source: str

    def threshold(self, layer: int) -> float:
        if layer not in self.layers:
            raise ProbingError(f"no calibrated threshold for layer {layer} (layers {self.layers})")
        return self.thresholds[self.layers.index(layer)]


def calibrate_scores(
    scores: np.ndarray, positive: np.ndarray, layers: Sequence[int], fpr: float, source: str
) -> Calibration:
    """Thresholds for ``scores [N, L]`` (one column per layer in ``layers``) at ``fpr``."""
    fpr = check_fpr(fpr)
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_neg = int((~positive).sum())
    if n_neg and n_neg * fpr < 1:
        log.warning(
            "only %d negative rows in the calibration set: an FPR of %g cannot be resolved (needs "
            ">= %d); the threshold flags none of them",
            n_neg,
            fpr,
            math.ceil(1 / fpr),
        )
    thresholds, tprs, fprs = [], [], []
    for j in range(scores.shape[1]):
        t = threshold_at_fpr(scores[~positive, j], fpr)
        r = rates(scores[:, j], positive, t)
        thresholds.append(t)
        tprs.append(r["tpr"])
        fprs.append(r["fpr"])
    return Calibration(
        fpr=fpr,
        layers=[int(x) for x in layers],
        thresholds=thresholds,
        tpr=tprs,
        achieved_fpr=fprs,
        rows=len(positive),
        negatives=n_neg,
        source=source,
    )


def evaluate(
    scores: np.ndarray,
    labels: Sequence[str],
    scorer: Scorer,
    layers: Sequence[int],
    calibrations: Sequence[Calibration] = (),
    class_map: dict[str, str] | None = None,
    fprs: Sequence[float] = EVAL_FPRS,
    sources: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per layer: AUROC, TPR at each FPR (ROC of this set), results at calibrated thresholds, and
    per class (normal / malicious / jailbreak ...) and per prompt source (``sources``, one name per
    row): rows, mean score, flag rate, AUROC vs negatives."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = scorer.is_positive(labels, class_map)
    labels_arr = np.asarray(labels, dtype=object)
    classes = list(dict.fromkeys(labels))
    sources_arr = np.asarray(sources if sources is not None else [], dtype=object)
    neg = ~positive
    out = []
    for j, layer in enumerate(layers):
        s = scores[:, j]
        entry: dict[str, Any] = {
            "layer": int(layer),
            "rows": len(s),
            "auroc": auroc(s, positive),
            **{f"tpr@{f:g}": tpr_at_fpr(s, positive, f) for f in fprs},
            "calibrated": {},
            "per_class": {},
        }
        for cal in calibrations:
            t = cal.threshold(layer)
            entry["calibrated"][f"{cal.fpr:g}"] = {"threshold": t, **rates(s, positive, t)}
        groups = [("per_class", labels_arr, classes)]
        if len(sources_arr):
            groups.append(("per_source", sources_arr, list(dict.fromkeys(sources_arr.tolist()))))
        for key, values, names in groups:
            entry[key] = {}
            for name in names:
                rows = values == name
                info: dict[str, Any] = {
                    "rows": int(rows.sum()),
                    "positive": bool(positive[rows].all()),
                    "mean_score": float(s[rows].mean()),
                }
                for cal in calibrations:
                    info[f"flagged@{cal.fpr:g}"] = float((s[rows] >= cal.threshold(layer)).mean())
                if positive[rows].all() and neg.any():
                    both = rows | neg
                    info["auroc_vs_negative"] = auroc(s[both], positive[both])
                entry[key][name] = info
        out.append(entry)
    return out


# -- monitor.json beside the checkpoint -------------------------------------------------------------
def store_path(ckpt: str | os.PathLike) -> Path:
    return Path(ckpt).with_name(STORE_NAME)


def _key(entry: dict[str, Any]) -> tuple:
    return tuple(entry.get(k) for k in ("checkpoint_sha256", "probe", "rule", "fpr", "source"))


def _read_store(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"format": STORE_FORMAT, "version": 1, "entries": []}
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable %s (%s)", path, err)
        return {"format": STORE_FORMAT, "version": 1, "entries": []}
    if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
        log.warning("ignoring %s: not a %s file", path, STORE_FORMAT)
        return {"format": STORE_FORMAT, "version": 1, "entries": []}
    return data


def load_calibration(
    ckpt: str | os.PathLike, ckpt_sha256: str, probe: str, rule: str, fpr: float, source: str
) -> Calibration | None:
    """A stored calibration of exactly this checkpoint, probe, score rule, FPR and source."""
    want = (ckpt_sha256, probe, rule, float(fpr), source)
    for entry in _read_store(store_path(ckpt)).get("entries", []):
        if _key(entry) == want:
            c = entry["calibration"]
            return Calibration(**{k: c[k] for k in Calibration.__dataclass_fields__})
    return None


def save_calibration(
    ckpt: str | os.PathLike, ckpt_sha256: str, probe: str, rule: str, cal: Calibration
) -> Path | None:
    """Add (or replace) this calibration in ``monitor.json`` beside ``ckpt``; None if not writable."""
    path = store_path(ckpt)
    data = _read_store(path)
    entry = {
        "checkpoint": Path(ckpt).name,
        "checkpoint_sha256": ckpt_sha256,
        "probe": probe,
        "rule": rule,
        "fpr": float(cal.fpr),
        "source": cal.source,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "calibration": {
            k: (_clean(v) if not isinstance(v, list) else [_clean(x) for x in v])
            for k, v in cal.__dict__.items()
        },
    }
    data["entries"] = [e for e in data.get("entries", []) if _key(e) != _key(entry)] + [entry]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        log.warning("cannot write %s (%s); the threshold is used but not stored", path, err)
        tmp.unlink(missing_ok=True)
        return None
    return path


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
