"""``generalization.csv``, the heatmap and ``generalization.md``: where in-distribution and cross-source part."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probing.generalize.matrix import IN_DISTRIBUTION
from probing.plotting import save_figure, subplots

COLUMNS = (
    "train", "test", "split", "layer", "probe", "accuracy", "auroc", "tpr_at_1fpr",
    "flagged_rate", "rows", "positives", "threshold", "seed",
)  # fmt: skip
METRICS = ("accuracy", "auroc", "tpr_at_1fpr", "flagged_rate", "threshold")
KEY = ("train", "test", "split", "layer", "probe")
CSV_NAME, PLOT_NAME, MD_NAME = "generalization.csv", "generalization.png", "generalization.md"
GAP = 0.05  # accuracy gap that counts as "parted"


def write_csv(rows: Sequence[dict[str, Any]], directory: Path) -> Path:
    path = directory / CSV_NAME
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
    tmp.replace(path)
    return path


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return value


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


def _ranges(layers: Sequence[int]) -> str:
    if not layers:
        return "none"
    parts, start, prev = [], layers[0], layers[0]
    for x in [*layers[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if x is not None:
            start = prev = x
    return ", ".join(parts)


def conclusion(summary: Sequence[dict[str, Any]], probe: str) -> str:
    """A plain sentence on where in-distribution and cross-source results part."""
    if not summary or all(math.isnan(s["cross_accuracy"]) for s in summary):
        return f"{probe}: no cross-source result (every fold was skipped)."
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
        f"{_ranges(parted)}."
    )


def plot(rows: Sequence[dict[str, Any]], probes: Sequence[str], path: Path, title: str) -> Path:
    """Accuracy at the chosen threshold: one row per held-out test (and in-distribution), per layer."""
    layers = sorted({r["layer"] for r in rows})
    fig, axes = subplots(
        len(probes), 1, figsize=(max(6, 0.28 * len(layers) + 4), 1.2 + 2.2 * len(probes)),
        squeeze=False,
    )  # fmt: skip
    for ax, probe in zip(axes[:, 0], probes, strict=True):
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


def markdown(
    rows: Sequence[dict[str, Any]],
    probes: Sequence[str],
    sources: dict[str, dict[str, Any]],
    skipped: Sequence[str],
    title: str,
    fpr: float,
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
    for probe in probes:
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
