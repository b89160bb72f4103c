"""Labelled sets for the monitor: probe probabilities on a feature file's stored activations (the fast path)
or on prompts screened live, the cross-source choice of the layer, and thresholds calibrated on them
(stored in ``monitor.json`` through :mod:`probing.monitor.calibrate`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from probing.errors import ProbingError
from probing.features.checks import check_finite
from probing.features.identity import require_same_identity
from probing.features.store import FeatureFile
from probing.layers import AUTO_TOLERANCE, check_tolerance, earliest_within
from probing.models.assemble import sha256_file
from probing.monitor.calibrate import (
    Calibration,
    Scorer,
    calibrate_scores,
    load_calibration,
    save_calibration,
    store_path,
)
from probing.probes.rates import check_fpr

if TYPE_CHECKING:
    from probing.monitor.probe import LoadedProbe
    from probing.monitor.screen import Screener

log = logging.getLogger(__name__)


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
        require_same_identity(
            probe.feature_meta, ff.meta,
            "{path} comes from another model or extraction than the probe's features: "
            "{key}={b!r} there, {a!r} for the probe",
            path=path,
        )  # fmt: skip
    ff.check_layout()
    n = ff.num_rows
    if is_training and split in ("train", "val", "test", "heldout"):
        rows, what = split_rows(probe, path, split, n)
    else:
        rows, what = np.arange(n), "all rows"
    label_names = ff.label_names
    labels = ff.labels
    out = np.empty((len(rows), len(probe.layers), len(probe.class_names)), dtype=np.float32)
    done = 0
    for take, x in ff.blocks(rows, probe.layers, probe.position, block):
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


def split_rows(probe: LoadedProbe, path: Path, split: str, n: int) -> tuple[np.ndarray, str]:
    """The file rows of the training run's ``split`` (``train``, ``val``, ``test``, ``heldout``), as
    its checkpoint saved them (rebuilt from its data options for an older checkpoint)."""
    saved = probe.split_rows if probe.split_rows is not None else rebuilt_split_rows(probe, path)
    for name, part in saved.items():
        if len(part) and (part.min() < 0 or part.max() >= n or len(np.unique(part)) != len(part)):
            raise ProbingError(
                f"{probe.path.name} records {name} rows that are not distinct rows of its training "
                f"file {path} ({n} rows): the checkpoint does not belong to that file; give a "
                "labelled set with --calibrate, or fit the probe again"
            )
    if split == "heldout":
        if not len(saved.get("heldout", ())):
            raise ProbingError(
                f"the training run of {probe.path.name} held out no prompt sources "
                "(--data.holdout_sources); give a labelled set with --calibrate"
            )
        names = ", ".join(probe.data_hparams.get("holdout_sources") or [])
        return np.sort(saved["heldout"]), f"held-out sources {names}"
    rows = saved[split]
    what = f"{split} split"
    if split == "test":
        seen = np.concatenate([saved[s] for s in ("train", "val", "test", "heldout") if s in saved])
        unseen = np.setdiff1d(np.arange(n), seen)  # held-out sources choose the layer, not here
        if len(unseen):
            rows = np.concatenate([rows, unseen])
            what += " + classes not trained on"
    if not len(rows):
        raise ProbingError(
            f"the training run of {probe.path.name} has an empty {split} split (--data.split "
            f"{list(probe.data_hparams.get('split') or [])}); give a labelled set with "
            "--calibrate / --prompts"
        )
    return np.sort(rows), what


def rebuilt_split_rows(probe: LoadedProbe, path: Path) -> dict[str, np.ndarray]:
    """The split of a checkpoint written before `probing fit` saved it: the data module rebuilt
    from the run's data options (same seed, same rows)."""
    from probing.data import ActivationDataModule

    dm = ActivationDataModule(**{**probe.data_hparams, "path": str(path), "test_path": None})
    return {k: torch.as_tensor(v).numpy() for k, v in dm.state_dict()["split_rows"].items()}


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
    probe: LoadedProbe, scorer: Scorer, fpr: float, tolerance: float = AUTO_TOLERANCE
) -> tuple[int, float]:
    """``--layer auto`` by cross-source validation: on the run's held-out sources (never trained on),
    the threshold of each layer flags at most ``fpr`` of their negatives; the earliest layer whose
    TPR there is within ``tolerance`` of the best is chosen. Returns it and its TPR there."""
    probs, labels, _, what = labelled_probs(probe, None, "heldout")
    positive = scorer.is_positive(labels, probe.class_map)
    if positive.all() or not positive.any():
        raise ProbingError(
            f"--layer auto: the held-out sources ({what}) hold one class only; hold out sources of "
            "both classes (--data.holdout_sources) or give --layer N"
        )
    cal = calibrate_scores(scorer(probs), positive, probe.layers, fpr, what)
    layer, value, best = earliest_within(probe.layers, cal.tpr, check_tolerance(tolerance))
    log.info(
        "--layer auto (cross-source, %s): layer %d (TPR %.3f at FPR %g; best %.3f; earliest within %.3f)",
        what,
        layer,
        value,
        fpr,
        best,
        tolerance,
    )
    return layer, value


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
            stamp = f" sha256:{sha256_file(path)[:16]}"
        return f"{source}{stamp}"
    return json.dumps([getattr(s, "__dict__", s) for s in source], sort_keys=True)
