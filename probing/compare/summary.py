"""The comparison's summary (first layer over the threshold, best layer), its CSVs and Markdown."""

from __future__ import annotations

import math
from typing import Any

from probing.compare.plots import classifier_names
from probing.compare.spec import (
    GRID_PNG,
    GRID_RELATIVE_PNG,
    CompareConfig,
    CompareResult,
    RunResult,
)


def first_crossing(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any] | None:
    """The lowest layer whose accuracy reaches ``threshold`` (``None`` if none does)."""
    hits = [r for r in rows if r["accuracy"] >= threshold]
    return min(hits, key=lambda r: r["layer"]) if hits else None


def summarize(results: list[RunResult], cfg: CompareConfig) -> list[dict[str, Any]]:
    """One row per run and classifier (one per failed run): first layer ≥ threshold, best accuracy."""
    out = []
    for res in results:
        base = {
            "run": res.name,
            "model": res.spec.model,
            "template": res.spec.template,
            "status": res.status,
            "threshold": cfg.threshold,
            "reason": res.reason,
        }
        if res.status != "ok":
            out.append({**base, "classifier": ""})
            continue
        for clf in classifier_names(results, cfg):
            rows = [r for r in res.rows if r["classifier"] == clf]
            if not rows:
                continue
            finite = [r for r in rows if not math.isnan(r["accuracy"])]
            best = max(finite, key=lambda r: (r["accuracy"], -r["layer"]), default=None)
            first = first_crossing(finite, cfg.threshold)
            out.append(
                {
                    **base,
                    "classifier": clf,
                    "num_layers": res.num_layers,
                    "first_layer": first["layer"] if first else None,
                    "first_relative_depth": first["relative_depth"] if first else None,
                    "best_accuracy": best["accuracy"] if best else None,
                    "best_layer": best["layer"] if best else None,
                }
            )
    return out


def markdown(result: CompareResult, cfg: CompareConfig) -> str:
    """A short Markdown summary for the demo report."""
    t = cfg.threshold
    lines = [
        "## Models and prompt formats",
        "",
        f"Classifiers ({', '.join(classifier_names(result.runs, cfg))}) on every layer's "
        f"last-token state, "
        f"{int(round((1 - cfg.test_fraction) * 100))}/{int(round(cfg.test_fraction * 100))} split "
        f"(seed {cfg.seed}); layer 0 = embeddings, relative depth = layer / decoder blocks.",
        "",
        f"| run | model | template | classifier | first layer ≥ {t:g} | relative depth | "
        "best accuracy (layer) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in result.summary:
        if s["status"] != "ok":
            continue
        first = (
            "never" if s["first_layer"] is None else f"{s['first_layer']} / {s['num_layers'] - 1}"
        )
        depth = "" if s["first_relative_depth"] is None else f"{s['first_relative_depth']:.2f}"
        best = "" if s["best_accuracy"] is None else f"{s['best_accuracy']:.3f} ({s['best_layer']})"
        lines.append(
            f"| {s['run']} | {s['model']} | {s['template']} | {s['classifier']} | {first} | "
            f"{depth} | {best} |"
        )
    lines += [
        "",
        f"![accuracy per layer]({GRID_PNG})",
        "",
        f"![by relative depth]({GRID_RELATIVE_PNG})",
    ]
    if result.failed:
        lines += ["", "Failed runs:", ""]
        lines += [
            f"- **{r.name}** ({r.spec.model}, {r.spec.template}): {r.reason}" for r in result.failed
        ]
    return "\n".join(lines) + "\n"
