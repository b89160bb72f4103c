"""The comparison grid: one panel per model (columns) and classifier (rows), one line per prompt format."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from matplotlib.ticker import MaxNLocator

from probing.plotting import save_figure, subplots

if TYPE_CHECKING:
    from probing.compare.spec import CompareConfig, RunResult

AXIS_LABELS = {
    "layer": "layer (0 = embeddings, i = output of block i)",
    "relative_depth": "relative depth (layer / decoder blocks)",
}
CLASSIFIER_NAMES = {
    "svm": "linear SVM",
    "mlp": "MLP(100)",
    "probe-linear": "linear probe",
    "probe-mlp": "MLP probe",
}


def _models(results: list[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.spec.model for r in results))


def _label(res: RunResult) -> str:
    text = res.spec.template
    if res.spec.system_prompt:
        text += " + system prompt"
    return text if res.spec.name is None else f"{res.name} ({text})"


def classifier_names(results: list[RunResult], cfg: CompareConfig) -> list[str]:
    """The weak classifiers, then any probe names, in order of appearance."""
    names = dict.fromkeys(cfg.classifiers)
    for res in results:
        names.update(dict.fromkeys(r["classifier"] for r in res.rows))
    return list(names)


def grid(
    results: list[RunResult],
    cfg: CompareConfig,
    path: str | Path,
    x: Literal["layer", "relative_depth"] = "layer",
    title: str = "",
) -> Path:
    """Accuracy per layer (or relative depth) of every run; failed runs are named in their panel."""

    models = _models(results) or ["(no runs)"]
    rows = classifier_names(results, cfg)
    fig, axes = subplots(
        len(rows),
        len(models),
        figsize=(3.6 * len(models) + 0.6, 2.8 * len(rows) + 0.7),
        squeeze=False,
        sharey=True,
        sharex=(x == "relative_depth"),
    )
    markers = "osD^v<>ph*"
    accs = [
        row["accuracy"] for r in results for row in r.rows if row["accuracy"] == row["accuracy"]
    ]
    bottom = max(0.0, min([0.45, *accs]) - 0.05)
    for i, clf in enumerate(rows):
        for j, model in enumerate(models):
            ax = axes[i][j]
            runs = [r for r in results if r.spec.model == model]
            failed = []
            for k, res in enumerate(runs):
                if res.status != "ok":
                    failed.append(f"{res.name}: failed")
                    continue
                pts = sorted(
                    (r for r in res.rows if r["classifier"] == clf), key=lambda r: r["layer"]
                )
                ax.plot(
                    [p[x] for p in pts],
                    [p["accuracy"] for p in pts],
                    marker=markers[k % len(markers)],
                    markersize=3,
                    linewidth=1.3,
                    label=_label(res),
                )
            ax.axhline(cfg.threshold, color="grey", linestyle="--", linewidth=0.8)
            if failed:
                ax.text(
                    0.03, 0.05, "\n".join(failed), transform=ax.transAxes, fontsize=7, color="red"
                )
            ax.set_ylim(bottom, 1.02)
            if x == "layer":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            if i == 0:
                ax.set_title(model, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{CLASSIFIER_NAMES.get(clf, clf)}\naccuracy", fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel(AXIS_LABELS[x], fontsize=8)
            if ax.lines[1:]:  # more than the threshold line
                ax.legend(loc="lower right", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
