"""Scores, thresholds at a target false positive rate, TPR@FPR and AUROC, and ``monitor.json``.

A probe gives class probabilities; the monitor turns them into one *harm score* per prompt (the
:class:`Scorer` rule) and flags a prompt when ``score >= threshold``. The threshold is chosen on the
*negative* (normal) prompts of a labelled calibration set so that at most a fraction ``fpr`` of them
would be flagged. Chosen thresholds are kept in ``monitor.json`` beside the checkpoint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from probing.errors import ProbingError
from probing.features.checks import check_finite, check_shape
from probing.features.identity import identity_mismatch
from probing.features.store import FeatureFile
from probing.probes.rates import auroc, check_fpr, threshold_at_fpr, tpr_at_fpr

if TYPE_CHECKING:
    from probing.monitor.screen import LoadedProbe, Screener

log = logging.getLogger(__name__)

STORE_NAME = "monitor.json"
STORE_FORMAT = "probing-monitor"
EVAL_FPRS = (0.01, 0.05)


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


# -- scores straight from a feature file (the fast path) ----------------------------------------------


def feature_probs(
    probe: LoadedProbe,
    path: str | os.PathLike | None = None,
    split: str = "all",
    block: int = 512,
    with_sources: bool = False,
) -> tuple[np.ndarray, list[str], str] | tuple[np.ndarray, list[str], list[str], str]:
    """Probabilities ``[N, L_sel, C]`` of the probe on a feature file's stored activations, the rows'
    label names, and a description of the rows.

    ``path`` None is the training file. On the training file ``split`` ``val``/``test`` selects the
    training run's split (``test`` adds every row of a class the probe was not trained on;
    ``heldout`` is the run's ``--data.holdout_sources``); another file's rows are all used.
    ``with_sources`` also returns each row's prompt-source name (before the description).
    """
    training = probe.data_path
    if path is None:
        if training is None:
            raise ProbingError(
                f"the training feature file of {probe.path.name} ({probe.data_hparams.get('path')!r}) "
                "is not found; give a labelled set (--calibrate / --prompts)"
            )
        path = training
    path = Path(path)
    ff = FeatureFile(path)
    is_training = training is not None and path.resolve() == training.resolve()
    if not is_training:
        diff = identity_mismatch(probe.feature_meta, ff.meta)
        if diff is not None:
            key, a, b = diff
            raise ProbingError(
                f"{path} comes from another model or extraction than the probe's features: "
                f"{key}={b!r} there, {a!r} for the probe"
            )
    check_shape(ff)
    n = ff.num_rows
    if is_training and split in ("val", "test", "heldout"):
        rows, what = _split_rows(probe, path, split, n)
    else:
        rows, what = np.arange(n), "all rows"
    label_names = ff.label_names
    labels = ff.labels
    ds = ff.file["hidden"]
    out = np.empty((len(rows), len(probe.layers), len(probe.class_names)), dtype=np.float32)
    done = 0
    for lo in range(0, n, block):
        take = rows[(rows >= lo) & (rows < lo + block)]
        if not len(take):
            continue
        x = ds[lo : min(lo + block, n), :, probe.position][take - lo][:, probe.layers]
        check_finite(x, take, path)
        p = probe.probs(torch.from_numpy(np.asarray(x, dtype=np.float32)))
        out[done : done + len(take)] = p.numpy()
        done += len(take)
    names = [label_names[int(labels[r])] for r in rows]
    if with_sources:
        src_names, src = ff.source_names, ff.sources
        ff.close()
        row_sources = [src_names[int(src[r])] for r in rows]
        return out, names, row_sources, f"{path} ({what}, {len(rows)} rows)"
    ff.close()
    return out, names, f"{path} ({what}, {len(rows)} rows)"


def _split_rows(probe: LoadedProbe, path: Path, split: str, n: int) -> tuple[np.ndarray, str]:
    from probing.data import ActivationDataModule

    dm = ActivationDataModule(**{**probe.data_hparams, "path": str(path), "test_path": None})
    main = dm.sources["main"].rows
    if split == "heldout":
        if "heldout" not in dm.sources:
            raise ProbingError(
                f"the training run of {probe.path.name} held out no prompt sources "
                "(--data.holdout_sources); give a labelled set with --calibrate"
            )
        names = ", ".join(dm.holdout_sources)
        return np.sort(dm.sources["heldout"].rows), f"held-out sources {names}"
    rows = np.asarray(main)[dm.split_pos[split]]
    what = f"{split} split"
    if split == "test":
        unseen = np.setdiff1d(np.arange(n), main)
        if "heldout" in dm.sources:  # held-out sources are for choosing the layer and threshold
            unseen = np.setdiff1d(unseen, dm.sources["heldout"].rows)
        if len(unseen):
            rows = np.concatenate([rows, unseen])
            what += " + classes not trained on"
    if not len(rows):
        raise ProbingError(
            f"the training run of {probe.path.name} has an empty {split} split (--data.split "
            f"{list(dm.split_fractions)}); give a labelled set with --calibrate / --prompts"
        )
    return np.sort(rows), what


def labelled_probs(
    probe: LoadedProbe,
    source: str | Sequence[Any] | None,
    split: str,
    screener: Screener | None = None,
) -> tuple[np.ndarray, list[str], list[str], str]:
    """Probabilities ``[N, L_sel, C]``, label names and prompt-source names of a labelled set: a
    feature file (``.h5``, fast: stored activations; None = the training file's ``split``) or prompt
    sources (screened live at every probed layer by ``screener``)."""
    if source is None or (isinstance(source, (str, os.PathLike)) and is_feature_file(source)):
        return feature_probs(probe, source, split, with_sources=True)  # type: ignore[return-value]
    from probing.prompts.sources import PromptSource, load_prompts, source_names

    sources = [PromptSource(path=str(source))] if isinstance(source, (str, os.PathLike)) else source
    prompts, labels, src_ids, names = load_prompts(list(sources))
    if screener is None:
        raise ProbingError("labelled prompts need the model: give a screener")
    probs = screener.probabilities(prompts, probe.layers).numpy()
    where = ", ".join(s.path for s in sources)
    src_names = source_names(list(sources))
    return (
        probs,
        [names[i] for i in labels],
        [src_names[i] for i in src_ids],
        f"{where} ({len(prompts)} prompts, screened live)",
    )


def default_split(probe: LoadedProbe) -> str:
    """Where the monitor calibrates by default: the held-out sources of the probe's training run when
    it has them (cross-source), else its validation split."""
    return "heldout" if probe.data_hparams.get("holdout_sources") else "val"


def choose_layer_cross_source(
    probe: LoadedProbe, scorer: Scorer, fpr: float, tolerance: float = 0.02
) -> int:
    """``--layer auto`` by cross-source validation: on the run's held-out sources (never trained on),
    the threshold of each layer flags at most ``fpr`` of their negatives; the earliest layer whose
    TPR there is within ``tolerance`` of the best is chosen."""
    probs, labels, _, what = labelled_probs(probe, None, "heldout")
    positive = scorer.is_positive(labels, probe.class_map)
    if positive.all() or not positive.any():
        raise ProbingError(
            f"--layer auto: the held-out sources ({what}) hold one class only; hold out sources of "
            "both classes (--data.holdout_sources) or give --layer N"
        )
    cal = calibrate_scores(scorer(probs), positive, probe.layers, fpr, what)
    tpr = [t if not math.isnan(t) else -1.0 for t in cal.tpr]
    best = max(tpr)
    layer = min(layer for layer, t in zip(probe.layers, tpr, strict=True) if t >= best - tolerance)
    log.info(
        "--layer auto (cross-source, %s): layer %d (TPR %.3f at FPR %g; best %.3f; earliest within %.3f)",
        what,
        layer,
        tpr[probe.layers.index(layer)],
        fpr,
        best,
        tolerance,
    )
    return layer


def is_feature_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in (".h5", ".hdf5")


def calibrate_probe(
    probe: LoadedProbe,
    scorer: Scorer,
    fpr: float,
    source: str | Sequence[Any] | None = None,
    screener: Screener | None = None,
    store: bool = True,
) -> Calibration:
    """Thresholds of every probed layer at ``fpr``: reused from ``monitor.json`` when this checkpoint,
    probe, score rule, FPR and calibration set were calibrated before, else computed (and stored)."""
    fpr = check_fpr(fpr)
    key = _source_key(probe, source)
    cached = load_calibration(probe.path, probe.sha256, probe.probe, scorer.rule, fpr, key)
    if cached is not None and cached.layers == list(probe.layers):
        log.info("threshold at FPR %g from %s (%s)", fpr, store_path(probe.path), key)
        return cached
    probs, labels, _, what = labelled_probs(probe, source, default_split(probe), screener)
    scores = scorer(probs)
    positive = scorer.is_positive(labels, probe.class_map)
    cal = calibrate_scores(scores, positive, probe.layers, fpr, key)
    log.info(
        "calibrated thresholds at FPR %g on %s: %d negatives, %d positives",
        fpr,
        what,
        cal.negatives,
        cal.rows - cal.negatives,
    )
    if store:
        path = save_calibration(probe.path, probe.sha256, probe.probe, scorer.rule, cal)
        if path is not None:
            log.info("stored the thresholds in %s", path)
    return cal


def _source_key(probe: LoadedProbe, source: str | Sequence[Any] | None) -> str:
    if source is None:
        return f"{default_split(probe)} split of {probe.data_hparams.get('path')}"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        stamp = ""
        if path.is_file():
            stamp = f" sha256:{file_sha256(path)[:16]}"
        return f"{source}{stamp}"
    return json.dumps([getattr(s, "__dict__", s) for s in source], sort_keys=True)


# -- monitor.json beside the checkpoint -------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
