"""The paper's weak classifiers, per layer: a linear SVM and an MLP(100) from scikit-learn.

``probing weak --data.path FILE`` reads the same data options as the probes (``--data.*``), with the
paper's 70/30 split (seed 42) as default, trains one SVM (``SVC(kernel="linear")``) and one MLP
(``MLPClassifier(hidden_layer_sizes=(100,))``) per selected layer on standardised activations (train
statistics; ``--data.standardize false`` turns it off), and writes ``per_layer_metrics.csv``/``.json`` and
``accuracy_per_layer.png`` like the probes. ``--seeds N`` repeats split and training over N seeds and
reports the mean with a 95 % percentile interval; ``--bootstrap B`` resamples the test rows instead.
Beside them, the text baseline (``text``: logistic regression on the prompt's word and character
n-grams, :mod:`probing.probes.text`) on the same split: one row with an empty ``layer`` cell, drawn as
a reference line.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from probing.data import ActivationDataModule
from probing.data.datamodule import stratified_split
from probing.errors import ProbingError
from probing.probes import report
from probing.probes.metrics import bootstrap_accuracy, layer_metrics
from probing.probes.text import TEXT, fit_text, text_probs
from probing.probes.weak_config import WeakConfig

log = logging.getLogger(__name__)


def make_classifier(name: str, seed: int, mlp_max_iter: int = 200, svm_c: float = 1.0) -> Any:
    """A fresh scikit-learn estimator with the paper's settings."""
    if name == "svm":
        from sklearn.svm import SVC

        return SVC(kernel="linear", C=svm_c, random_state=seed)
    if name == "mlp":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=(100,), max_iter=mlp_max_iter, random_state=seed)
    raise ProbingError(f"--classifiers: unknown classifier {name!r}; expected svm, mlp or text")


def _scores(clf: Any, x: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class scores ``[N, C]`` (rank-equivalent to each class's probability) for AUROC."""
    if hasattr(clf, "predict_proba") and not hasattr(clf, "decision_function"):
        return clf.predict_proba(x)
    s = np.asarray(clf.decision_function(x))
    if s.ndim == 1:  # binary: positive class score
        return np.stack([-s, s], axis=1)
    return s


def fit_layers(
    dm: ActivationDataModule,
    classifiers: Sequence[str] = ("svm", "mlp"),
    seed: int = 42,
    split_pos: dict[str, np.ndarray] | None = None,
    layers: Sequence[int] | None = None,
    mlp_max_iter: int = 200,
    svm_c: float = 1.0,
) -> dict[str, Any]:
    """Train each classifier on each layer; returns per-probe metric lists, correctness and timings.

    ``split_pos`` defaults to the data module's split; the test rows are the ``test_path`` file when
    the data module has one. ``layers`` (absolute) defaults to the data module's selection.
    """
    split_pos = split_pos or dm.split_pos
    classifiers = [c for c in classifiers if c != TEXT]
    layers = list(dm.layers if layers is None else layers)
    train = split_pos["train"]
    transfer = dm.test_path is not None
    y_all = dm.sources["main"].y
    y_test = dm.sources["transfer"].y if transfer else y_all[split_pos["test"]]
    if len(y_test) == 0:
        raise ProbingError("--data.split has a test fraction of 0 and no --data.test_path is given")
    c = dm.num_classes
    scores = {n: np.zeros((len(y_test), len(layers), c), np.float64) for n in classifiers}
    preds = {n: np.zeros((len(y_test), len(layers)), np.int64) for n in classifiers}
    seconds = {n: [] for n in classifiers}
    for j, layer in enumerate(layers):
        x = dm.read_layer(layer)
        x_train = x[train]
        x_test = dm.read_layer(layer, "transfer") if transfer else x[split_pos["test"]]
        if dm.standardize:
            mean = x_train.mean(0, dtype=np.float64)
            std = x_train.std(0, dtype=np.float64)
            std[std < 1e-6] = 1.0
            x_train = ((x_train - mean) / std).astype(np.float32)
            x_test = ((x_test - mean) / std).astype(np.float32)
        for name in classifiers:
            clf = make_classifier(name, seed, mlp_max_iter, svm_c)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MLP ConvergenceWarning at the paper's max_iter
                clf.fit(x_train, y_all[train])
            seconds[name].append(time.perf_counter() - start)
            preds[name][:, j] = clf.predict(x_test)
            scores[name][:, j] = _scores(clf, x_test, c)
        log.info(
            "layer %d: %s",
            layer,
            ", ".join(f"{n} acc {np.mean(preds[n][:, j] == y_test):.3f}" for n in classifiers),
        )
    target = torch.as_tensor(y_test)
    out: dict[str, Any] = {"layers": layers, "metrics": {}, "correct": {}, "seconds": seconds}
    for name in classifiers:
        m = layer_metrics(torch.as_tensor(scores[name]), target, torch.as_tensor(preds[name]))
        out["metrics"][name] = {k: v.tolist() for k, v in m.items()}
        out["correct"][name] = torch.as_tensor(preds[name] == y_test[:, None])
    return out


def weak_rows(
    dm: ActivationDataModule,
    classifiers: Sequence[str] = ("svm", "mlp"),
    seeds: int = 1,
    bootstrap: int = 0,
    mlp_max_iter: int = 200,
    svm_c: float = 1.0,
) -> list[dict[str, Any]]:
    """CSV rows (``layer,probe,split,accuracy,f1,auroc`` [+ interval]) over one or several seeds."""
    split = dm.test_split_name
    runs = []
    for s in range(seeds):
        seed = dm.seed + s
        pos = (
            dm.split_pos
            if s == 0
            else dict(
                zip(
                    ("train", "val", "test"),
                    stratified_split(dm.sources["main"].y, dm.split_fractions, seed),
                    strict=False,
                )
            )
        )
        runs.append(fit_layers(dm, classifiers, seed, pos, mlp_max_iter=mlp_max_iter, svm_c=svm_c))
        if TEXT in classifiers:
            fit_text_run(dm, runs[-1], seed, pos)
    rows = []
    for name in classifiers:
        layers = [None] if name == TEXT else dm.layers
        per_seed = {
            k: np.array([r["metrics"][name][k] for r in runs]) for k in ("accuracy", "f1", "auroc")
        }
        lo = hi = None
        if seeds > 1:
            lo, hi = np.percentile(per_seed["accuracy"], [2.5, 97.5], axis=0)
        elif bootstrap:
            lo, hi = (
                t.numpy() for t in bootstrap_accuracy(runs[0]["correct"][name], bootstrap, seed=0)
            )
        for j, layer in enumerate(layers):
            row = {"layer": layer, "probe": name, "split": split}
            row.update(
                {
                    k: float(np.nanmean(v[:, j])) if not np.isnan(v[:, j]).all() else float("nan")
                    for k, v in per_seed.items()
                }
            )
            if lo is not None:
                row["accuracy_lo"], row["accuracy_hi"] = float(lo[j]), float(hi[j])
            rows.append(row)
    return rows


def fit_text_run(
    dm: ActivationDataModule, run: dict[str, Any], seed: int, split_pos: dict[str, np.ndarray]
) -> None:
    """The text baseline on the run's split (the train rows' prompts, the test rows or the transfer
    file): its metrics and correctness join ``run`` as one layer-free column."""
    prompts = dm.prompts("main")
    y_all = dm.sources["main"].y
    train = split_pos["train"]
    transfer = dm.test_path is not None
    test_prompts = dm.prompts("transfer") if transfer else prompts[split_pos["test"]]
    y_test = dm.sources["transfer"].y if transfer else y_all[split_pos["test"]]
    clf = fit_text(prompts[train], y_all[train], seed=seed)
    probs = text_probs(clf, test_prompts, dm.num_classes)
    preds = probs.argmax(1)
    m = layer_metrics(torch.as_tensor(probs[:, None, :]), torch.as_tensor(y_test),
                      torch.as_tensor(preds[:, None]))  # fmt: skip
    run["metrics"][TEXT] = {k: v.tolist() for k, v in m.items()}
    run["correct"][TEXT] = torch.as_tensor(preds[:, None] == y_test[:, None])
    log.info("text baseline: acc %.3f", float(m["accuracy"][0]))


def _config_yaml(cfg: WeakConfig, dm: ActivationDataModule) -> str:
    values = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    values["data"] = dict(dm.hparams)
    return yaml.safe_dump(json.loads(json.dumps(values)), sort_keys=False)


def run_weak(cfg: WeakConfig) -> Path:
    """Train the weak classifiers, write metrics, config and plot; returns the output folder."""
    if cfg.seeds < 1:
        raise ProbingError(f"--seeds must be at least 1, got {cfg.seeds}")
    dm = ActivationDataModule(**cfg.data.kwargs())
    out = Path(cfg.output_dir or Path("runs") / "weak" / Path(dm.path).stem)
    start = time.perf_counter()
    rows = weak_rows(dm, cfg.classifiers, cfg.seeds, cfg.bootstrap, cfg.mlp_max_iter, cfg.svm_c)
    info = {
        "classes": dm.class_names,
        "layers": dm.layers,
        "features": dm.path,
        "test_features": dm.test_path,
        "seeds": cfg.seeds,
        "seconds": time.perf_counter() - start,
        "feature_meta": report.provenance(dm.meta),
    }
    csv_path, json_path = report.write_metrics(out, rows, info)
    (out / "config.yaml").write_text(_config_yaml(cfg, dm))
    plot_rows = rows + report.comparison_rows(cfg.compare_with)
    title = (
        f"{dm.meta.get('model', '')} - {' vs '.join(dm.class_names)} (weak, {dm.test_split_name})"
    )
    png = report.plot_accuracy(
        [r for r in plot_rows if r["split"] != "val"], out / report.PLOT_NAME, title
    )
    log.info("weak classifiers: %s, %s, %s", csv_path, json_path, png)
    return out
