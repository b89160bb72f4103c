"""The text baseline beside the monitor's evaluation: ``probing monitor --eval`` reports, next to the probe,
a logistic regression on the prompt's words (:mod:`probing.probes.text`) fitted on the probe's own training
rows (its run's train split, ``C`` chosen on its validation split), calibrated by the same FPR rule on the
same calibration set, and evaluated per class and per source on the same rows — and, per layer, whether
the probe's states beat it (paired bootstrap, :mod:`probing.probes.above_words`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from probing.errors import ProbingError
from probing.features.store import FeatureFile
from probing.monitor.calibrate import Calibration, Scorer, calibrate_scores, evaluate
from probing.monitor.labelled import default_split, is_feature_file, split_rows
from probing.probes.above_words import Paired, delta_rows, paired_deltas, sentence
from probing.probes.text import fit_text, text_probs
from probing.prompts.sources import PromptSource, load_prompts

if TYPE_CHECKING:
    from probing.monitor.probe import LoadedProbe

log = logging.getLogger(__name__)
NO_LAYER = -1  # the text baseline's column in the calibration and evaluation helpers


def labelled_prompts(
    probe: LoadedProbe, source: str | Sequence[Any] | None, split: str
) -> tuple[list[str], list[str]]:
    """The prompts and label names of a labelled set, row for row as
    :func:`probing.monitor.labelled.labelled_probs` reads it."""
    if source is None or (isinstance(source, (str, os.PathLike)) and is_feature_file(source)):
        path = Path(source) if source is not None else probe.data_path
        if path is None:
            raise ProbingError(
                f"the training feature file of {probe.path.name} is not found; give a labelled set"
            )
        training = probe.data_path is not None and path.resolve() == probe.data_path.resolve()
        with FeatureFile(path) as ff:
            n = ff.num_rows
            rows = (
                split_rows(probe, path, split, n)[0]
                if training and split in ("train", "val", "test", "heldout")
                else np.arange(n)
            )
            prompts, labels, names = ff.column("prompt"), ff.labels, ff.label_names
        return [prompts[int(r)] for r in rows], [names[int(labels[r])] for r in rows]
    sources = [PromptSource(path=str(source))] if isinstance(source, (str, os.PathLike)) else source
    prompts, labels, _, names = load_prompts(list(sources))
    return prompts, [names[i] for i in labels]


def fit_probe_text(probe: LoadedProbe) -> Any:
    """The text baseline on the probe's training rows (train split; ``C`` chosen on validation)."""
    if probe.data_path is None:
        raise ProbingError(
            f"the text baseline needs the training feature file of {probe.path.name}; it is not found"
        )
    classes = probe.class_names
    parts = {}
    for name in ("train", "val"):
        try:
            prompts, labels = labelled_prompts(probe, None, name)
        except ProbingError:
            prompts, labels = [], []
        mapped = [probe.class_map.get(x, x) for x in labels]
        keep = [i for i, x in enumerate(mapped) if x in classes]
        y = np.asarray([classes.index(mapped[i]) for i in keep], dtype=np.int64)
        parts[name] = ([prompts[i] for i in keep], y)
    return fit_text(*parts["train"], val=parts["val"] if len(parts["val"][1]) else None)


def text_report(
    probe: LoadedProbe,
    scorer: Scorer,
    report: dict[str, Any],
    eval_set: tuple[list[str], list[str], list[str]],
    states: tuple[np.ndarray, list[Calibration]],
    calibrate: str | Sequence[Any] | None,
    fprs: Sequence[float],
    bootstrap: int = 1000,
) -> None:
    """Add ``text_baseline`` (shaped like ``chosen``) and ``above_words`` (rows and one sentence) to
    the evaluation ``report``. ``eval_set`` is (prompts, labels, sources) of the evaluated rows,
    ``states`` the probe's scores ``[N, L]`` there and its calibrations."""
    clf = fit_probe_text(probe)
    n_classes = len(probe.class_names)

    def scores_of(prompts: list[str]) -> np.ndarray:
        return np.asarray(scorer(text_probs(clf, prompts, n_classes)[:, None, :]))

    prompts, labels, sources = eval_set
    text = scores_of(prompts)
    cal_prompts, cal_labels = labelled_prompts(probe, calibrate, default_split(probe))
    cal_pos = scorer.is_positive(cal_labels, probe.class_map)
    cals = [
        calibrate_scores(scores_of(cal_prompts), cal_pos, [NO_LAYER], f, "text baseline")
        for f in fprs
    ] if states[1] else []  # fmt: skip
    (entry,) = evaluate(text, labels, scorer, [NO_LAYER], cals, probe.class_map, fprs, sources)
    entry["layer"] = None
    report["text_baseline"] = entry
    if not states[1] or bootstrap <= 0:
        return
    scores, calibrations = states
    cal = calibrations[0]
    positive = scorer.is_positive(labels, probe.class_map)
    paired = Paired(scores, text[:, 0], positive, np.asarray(cal.thresholds), cals[0].thresholds[0])
    rows = delta_rows(
        paired_deltas(paired, cal.fpr, bootstrap), probe.layers,
        {"train": "probe's training rows", "test": "eval set", "probe": probe.probe},
    )  # fmt: skip
    report["above_words"] = {
        "rows": rows,
        "sentence": sentence(rows, probe.probe, "auroc", ", eval set"),
        "sentence_tpr": sentence(rows, probe.probe, "tpr_at_1fpr", f", eval set, FPR {cal.fpr:g}"),
    }
