"""``generalization.csv``, the heatmap and ``generalization.md``: where in-distribution and cross-source
part, and where the states beat the prompt's words (``above_words.csv``)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probing.generalize.matrix import IN_DISTRIBUTION
from probing.plotting import save_figure, subplots
from probing.probes.above_words import CROSS_MEAN, delta_rows, mean_deltas, ranges, sentence
from probing.probes.text import TEXT
from probing.tables import write_csv

COLUMNS = (
    "train", "test", "split", "layer", "probe", "accuracy", "auroc", "tpr_at_1fpr",
    "flagged_rate", "rows", "positives", "threshold", "seed",
)  # fmt: skip
METRICS = ("accuracy", "auroc", "tpr_at_1fpr", "flagged_rate", "threshold")
KEY = ("train", "test", "split", "layer", "probe")
CSV_NAME, PLOT_NAME, MD_NAME = "generalization.csv", "generalization.png", "generalization.md"
GAP = 0.05  # accuracy gap that counts as "parted"


def write_generalization(rows: Sequence[dict[str, Any]], directory: Path) -> Path:
    """``directory/generalization.csv``."""
    return write_csv(directory / CSV_NAME, rows, COLUMNS, digits=".4f")


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def _nanmean(values: Sequence[float]) -> float:
    vals = _finite(values)
    return float(np.mean(vals)) if vals else math.nan


def _nanstd(values: Sequence[float]) -> float:
    vals = _finite(values)
    return float(np.std(vals)) if vals else math.nan


def average_repeats(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per fold, test, split, layer and probe: metrics averaged over the repeats (seeds), with
    ``accuracy_sd`` and ``tpr_at_1fpr_sd`` (standard deviation between repeats; 0 for one) and
    ``repeats``."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in KEY)].append(r)
    out = []
    for group in groups.values():
        row = {k: v for k, v in group[0].items() if k != "seed"}
        for m in METRICS:
            row[m] = _nanmean([g.get(m, math.nan) for g in group])
        for m in ("accuracy", "tpr_at_1fpr"):
            row[f"{m}_sd"] = _nanstd([g.get(m, math.nan) for g in group])
        row["repeats"] = len(group)
        out.append(row)
    return out


def summarize(rows: Sequence[dict[str, Any]], probe: str) -> list[dict[str, Any]]:
    """Per layer: mean in-distribution and cross-source accuracy/AUROC over folds, the worst source."""
    by_layer: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["probe"] != probe:
            continue
        d = by_layer[r["layer"]]
        key = "in" if r["split"] == "in_distribution" else "cross"
        d[f"{key}_acc"].append(r["accuracy"])
        d[f"{key}_auroc"].append(r["auroc"])
        if key == "cross":
            d["cross_sources"].append((r["accuracy"], f"{r['test']} ({r['train']})"))
            d["cross_sd"].append(r.get("accuracy_sd", math.nan))
    out = []
    for layer in sorted(by_layer):
        d = by_layer[layer]
        worst = min(d["cross_sources"], default=(math.nan, "-"))
        out.append(
            {
                "layer": layer,
                "in_accuracy": _nanmean(d["in_acc"]),
                "in_auroc": _nanmean(d["in_auroc"]),
                "cross_accuracy": _nanmean(d["cross_acc"]),
                "cross_auroc": _nanmean(d["cross_auroc"]),
                "cross_accuracy_sd": _nanmean(d["cross_sd"]),
                "worst_accuracy": worst[0],
                "worst_source": worst[1],
            }
        )
    return out


def parted_layers(summary: Sequence[dict[str, Any]], gap: float = GAP) -> list[int]:
    return [
        s["layer"]
        for s in summary
        if not math.isnan(s["cross_accuracy"]) and s["in_accuracy"] - s["cross_accuracy"] > gap
    ]


def conclusion(summary: Sequence[dict[str, Any]], probe: str) -> str:
    """A plain sentence on where in-distribution and cross-source results part."""
    if not summary or all(math.isnan(s["cross_accuracy"]) for s in summary):
        return f"{probe}: no cross-source result (every fold was skipped)."
    if probe == TEXT:
        s = summary[0]
        return (
            f"text baseline (the prompt's words, no layer): in-distribution AUROC {s['in_auroc']:.3f}; "
            f"mean cross-source accuracy {s['cross_accuracy']:.3f}, AUROC {s['cross_auroc']:.3f} "
            f"(worst held-out source {s['worst_source']} {s['worst_accuracy']:.3f})."
        )
    high = [s["layer"] for s in summary if s["in_auroc"] >= 0.95]
    best = max(
        summary, key=lambda s: -1 if math.isnan(s["cross_accuracy"]) else s["cross_accuracy"]
    )
    parted = parted_layers(summary)
    first = f"from layer {high[0]}" if high else "at no layer"
    return (
        f"{probe}: in-distribution AUROC reaches 0.95 {first}; mean cross-source accuracy is best "
        f"at layer {best['layer']} ({best['cross_accuracy']:.3f}, worst held-out source "
        f"{best['worst_source']} {best['worst_accuracy']:.3f}); the two part (gap > {GAP}) at layers "
        f"{ranges(parted)}."
    )


IN_MEAN = "in-distribution (mean)"


def above_rows(
    deltas: dict[tuple[str, str, str], list[dict[str, Any]]],
    layers: Sequence[int],
    averaged: dict[str, set[str]] | None = None,
) -> list[dict[str, Any]]:
    """``above_words.csv`` rows: per fold, probe and test set the paired differences probe − text
    (means over repeats), then per probe the mean over the cross-source tests (``train = all
    folds``, ``test = cross-source (mean)``; of a fold only the tests in ``averaged[fold]`` when
    given: its pooled test sets, whose rows its single sources repeat) and over the in-distribution
    parts."""
    rows: list[dict[str, Any]] = []
    pooled: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (fold, probe, test), parts in deltas.items():
        d = mean_deltas(parts)
        rows += delta_rows(d, layers, {"train": fold, "test": test, "probe": probe})
        if test == IN_DISTRIBUTION:
            pooled[(probe, IN_MEAN)].append(d)
        elif averaged is None or fold not in averaged or test in averaged[fold]:
            pooled[(probe, CROSS_MEAN)].append(d)
    for (probe, test), parts in sorted(pooled.items()):
        rows += delta_rows(
            mean_deltas(parts), layers, {"train": "all folds", "test": test, "probe": probe}
        )
    return rows


def above_sentence(above: Sequence[dict[str, Any]], probe: str, metric: str = "auroc") -> str:
    """Where ``probe`` beats, matches or loses to the words on the mean over cross-source tests."""
    mean = [r for r in above if r["test"] == CROSS_MEAN]
    return sentence(mean, probe, metric, ", mean over held-out sources")


def plot(
    rows: Sequence[dict[str, Any]],
    probes: Sequence[str],
    path: Path,
    title: str,
    averaged: set[str] | None = None,
) -> Path:
    """Accuracy at the chosen threshold: one row per held-out test (and in-distribution), per layer;
    with the text baseline, a last panel of mean cross-source AUROC per layer (over the tests in
    ``averaged``, default all) against its level."""
    probes = [p for p in probes if p != TEXT]
    layers = sorted({r["layer"] for r in rows if r["layer"] is not None})
    text = [r for r in rows if r["probe"] == TEXT]
    fig, axes = subplots(
        len(probes) + bool(text), 1,
        figsize=(max(6, 0.28 * len(layers) + 4), 1.2 + 2.2 * (len(probes) + bool(text))),
        squeeze=False,
    )  # fmt: skip
    if text:
        kept = [r for r in rows if averaged is None or r["test"] in averaged]
        _reference_panel(axes[-1, 0], kept, probes, [r for r in kept if r["probe"] == TEXT], layers)
    for ax, probe in zip(axes[:, 0], probes, strict=False):
        # one row per held-out test (the in-distribution parts of all folds averaged), one column per layer
        cells: dict[tuple[str, str], dict[int, list[float]]] = {}
        for r in rows:
            if r["probe"] == probe:
                key = (
                    (IN_DISTRIBUTION, "")
                    if r["split"] == "in_distribution"
                    else (r["test"], r["train"])
                )
                cells.setdefault(key, {}).setdefault(r["layer"], []).append(r["accuracy"])
        keys = list(cells)
        grid = np.array([[np.mean(cells[k].get(x, [np.nan])) for x in layers] for k in keys])
        im = ax.imshow(grid, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1)
        labels = [
            "in-distribution (mean)"
            if t == IN_DISTRIBUTION
            else (t if tr.startswith("all but") else f"{tr} → {t}")
            for t, tr in keys
        ]
        ax.set_yticks(range(len(keys)), labels, fontsize=7)
        ax.set_xticks(range(len(layers)), [str(x) for x in layers], fontsize=6)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_title(
            f"{probe}: accuracy at the threshold chosen on the training sources", fontsize=9
        )
        fig.colorbar(im, ax=ax, fraction=0.02)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _reference_panel(
    ax: Any, rows: Sequence[dict], probes: Sequence[str], text: Sequence[dict], layers: list[int]
) -> None:
    """Mean cross-source AUROC per layer of each probe, the text baseline's as a dashed line."""
    for probe in probes:
        ys = [
            _nanmean([r["auroc"] for r in rows if r["probe"] == probe and r["layer"] == x
                      and r["split"] == "cross_source"])
            for x in layers
        ]  # fmt: skip
        ax.plot(layers, ys, marker="o", markersize=3, linewidth=1.3, label=probe)
    level = _nanmean([r["auroc"] for r in text if r["split"] == "cross_source"])
    if not math.isnan(level):
        ax.axhline(
            level, color="k", linestyle="--", linewidth=1.2, label=f"text baseline ({level:.3f})"
        )
    ax.set_xticks(layers[:: max(1, len(layers) // 16)])
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("cross-source AUROC")
    ax.set_title("mean cross-source AUROC: hidden states vs the prompt's words", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def markdown(
    rows: Sequence[dict[str, Any]],
    probes: Sequence[str],
    sources: dict[str, dict[str, Any]],
    skipped: Sequence[str],
    title: str,
    fpr: float,
    above: Sequence[dict[str, Any]] = (),
    meta: dict[str, Any] | None = None,
) -> str:
    lines = [f"# Does it generalise? {title}", ""]
    lines += [
        "Each fold trains on some prompt sources and tests on others it never saw. *In-distribution*: "
        "a held-back part of the training sources. *Cross-source*: the held-out sources. Thresholds "
        f"are chosen on the training sources (at most {fpr:g} of their negatives flagged); for a source "
        "with one class only, `accuracy` is its catch rate (harmful) or 1 − its flag rate (safe).",
        "",
        "| source | rows | class |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {s['rows']} | {s['class']} |" for n, s in sources.items()]
    if skipped:
        lines += [
            "",
            "Skipped folds (their training sources hold one class only): " + ", ".join(skipped),
        ]
    repeats = max((int(r.get("repeats", 1)) for r in rows), default=1)
    if repeats > 1:
        lines += [
            "",
            f"Every fold ran {repeats} times (new splits and initialisations); the numbers are means "
            "over the repeats, and *± repeats* is the typical standard deviation of one held-out "
            "source's accuracy between them: differences smaller than that are noise.",
        ]
    spread = " ± repeats |" if repeats > 1 else ""
    if above:
        lines += ["", *above_section(above, [p for p in probes if p != TEXT], meta or {})]
    if TEXT in probes:
        lines += ["", "## text baseline", "", conclusion(summarize(rows, TEXT), TEXT)]
    for probe in (p for p in probes if p != TEXT):
        summary = summarize(rows, probe)
        lines += ["", f"## {probe}", "", conclusion(summary, probe), ""]
        lines += [
            "| layer | in-dist acc | in-dist AUROC | cross-source acc (mean) |" + spread
            + " cross-source AUROC (mean) | worst held-out source (acc) |",
            "|---|---|---|---|" + ("---|" if spread else "") + "---|---|",
        ]  # fmt: skip
        for s in summary:
            sd = f" {s['cross_accuracy_sd']:.3f} |" if spread else ""
            lines.append(
                f"| {s['layer']} | {s['in_accuracy']:.3f} | {s['in_auroc']:.3f} | "
                f"{s['cross_accuracy']:.3f} |{sd} {s['cross_auroc']:.3f} | {s['worst_source']} "
                f"({s['worst_accuracy']:.3f}) |"
            )
    return "\n".join(lines).replace("nan", "–") + "\n"


def above_section(
    above: Sequence[dict[str, Any]], probes: Sequence[str], meta: dict[str, Any]
) -> list[str]:
    """ "Above the words?": a sentence per probe and metric, and the per-layer table of the mean
    cross-source differences with their intervals."""
    lines = [
        "## Above the words?",
        "",
        "Each layer's probe against the text baseline (logistic regression on the prompt's word and "
        "character n-grams, fitted on the same rows): the difference probe − text on the same test "
        "rows, with a paired bootstrap 95 % interval. *Beat*: the interval lies above 0; *match*: it "
        "contains 0; *lose*: it lies below 0. Means over every held-out source of every fold.",
    ]
    if meta.get("positions") == "mean":
        lines += [
            "",
            "Layer 0 of this file is the mean of the prompt's token embeddings: a bag of embeddings, "
            "the lexical control among the layers.",
        ]
    mean = [r for r in above if r["test"] == CROSS_MEAN]
    for probe in probes:
        lines += ["", *(f"- {sentence(mean, probe, m, ', cross-source mean')}" for m in
                        ("auroc", "tpr_at_1fpr"))]  # fmt: skip
        lines += [
            "",
            f"| layer | {probe} − text: Δ AUROC [95 %] | Δ TPR [95 %] | Δ accuracy [95 %] |",
            "|---|---|---|---|",
        ]
        cell = {(r["layer"], r["metric"]): r for r in mean if r["probe"] == probe}
        for layer in sorted({r["layer"] for r in mean if r["probe"] == probe}):
            lines.append(
                f"| {layer} | "
                + " | ".join(
                    _interval(cell.get((layer, m))) for m in ("auroc", "tpr_at_1fpr", "accuracy")
                )
                + " |"
            )
    return lines


def _interval(row: dict[str, Any] | None) -> str:
    if row is None or math.isnan(row["delta"]):
        return "–"
    return f"{row['delta']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"
