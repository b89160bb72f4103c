"""The generalization run (``probing generalize``): leave-one-source-out and explicit train→test
matrices over prompt sources, every fold and repeat.

Writes ``OUTPUT/generalization.csv`` (``train, test, split, layer, probe, accuracy, auroc, tpr_at_1fpr,
flagged_rate, rows, positives, threshold``), ``generalization.png`` and ``generalization.md``, and with the
text baseline ``above_words.csv`` (``train, test, layer, probe, metric, delta, low, high``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from probing.errors import ProbingError
from probing.generalize import report
from probing.generalize.config import GeneralizeConfig
from probing.generalize.data import load_block
from probing.generalize.matrix import Fold, loso_folds, matrix_folds, run_fold
from probing.probes import above_words
from probing.probes.rates import check_fpr
from probing.probes.text import TEXT

log = logging.getLogger(__name__)


def _validate(cfg: GeneralizeConfig) -> None:
    check_fpr(cfg.fpr)
    if not cfg.loso and not cfg.matrix:
        raise ProbingError("nothing to do: set --loso true or give --matrix folds")
    if not cfg.probes:
        raise ProbingError("--probes is empty; give linear, mlp, text and/or poe")
    if cfg.repeats < 1:
        raise ProbingError(f"--repeats must be at least 1, got {cfg.repeats}")
    if cfg.bootstrap < 0:
        raise ProbingError(
            f"--bootstrap must be 0 (none) or a number of resamples, got {cfg.bootstrap}"
        )
    if len(cfg.split) != 3 or any(s <= 0 for s in cfg.split) or abs(sum(cfg.split) - 1) > 1e-6:
        raise ProbingError(
            f"--split must be three positive fractions summing to 1, got {list(cfg.split)}"
        )
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise ProbingError(f"--output {out} is a file; give a folder")


def generalize(cfg: GeneralizeConfig) -> dict[str, Any]:
    """Run every fold; write the CSV, heatmap and markdown; return rows, summaries and paths."""
    _validate(cfg)
    block = load_block(
        cfg.features, cfg.classes, cfg.class_map, cfg.layers, cfg.position, cfg.memory_limit_gb,
        cfg.label,
    )  # fmt: skip
    names = block.source_names
    folds: list[Fold] = (loso_folds(names) if cfg.loso else []) + matrix_folds(cfg.matrix, names)
    rows, skipped, deltas = [], [], {}
    for fold in folds:
        for seed in range(cfg.seed, cfg.seed + cfg.repeats):
            got = run_fold(block, fold, cfg.probes, cfg.fpr, cfg.l2, seed, cfg.split, cfg.bootstrap)
            if not got.rows:
                skipped.append(fold.name)
                break
            rows += [{**r, "seed": seed} for r in got.rows]
            for (probe, test), d in got.deltas.items():
                deltas.setdefault((fold.name, probe, test), []).append(d)
    if not rows:
        raise ProbingError(
            f"every fold was skipped: no fold's training sources hold both classes {cfg.classes}"
        )
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    model = block.meta.get("model", "")
    sources = {
        n: {
            "rows": int((block.source == n).sum()),
            "class": "/".join(sorted({cfg.classes[int(v)] for v in block.y[block.source == n]})),
        }
        for n in names
    }
    title = f"{model}, {len(names)} sources, {len(folds) - len(skipped)} folds"
    if cfg.repeats > 1:
        title += f", {cfg.repeats} repeats (seeds {cfg.seed}–{cfg.seed + cfg.repeats - 1})"
    csv_path = report.write_generalization(rows, out)
    above = report.above_rows(
        deltas, block.layers, {f.name: set(f.groups) for f in folds if f.groups}
    )
    above_csv = above_words.write_above_words(above, out) if above else None
    mean_rows = report.average_repeats(rows)
    averaged = {
        t for f in folds for t in (f.groups or f.test)
    }  # a fold's pooled sets, else its tests
    png = report.plot(mean_rows, cfg.probes, out / report.PLOT_NAME, title, averaged)
    md = out / report.MD_NAME
    md.write_text(
        report.markdown(mean_rows, cfg.probes, sources, skipped, title, cfg.fpr, above, block.meta),
        encoding="utf-8",
    )
    summaries = {p: report.summarize(mean_rows, p) for p in cfg.probes}
    for p in cfg.probes:
        log.info("%s", report.conclusion(summaries[p], p))
    for p in (p for p in cfg.probes if p != TEXT and above):
        log.info("%s", report.above_sentence(above, p))
    if cfg.wandb_project:
        _log_wandb(cfg, rows, png, above)
    log.info("wrote %s, %s, %s", csv_path, png, md)
    return {
        "rows": rows,
        "summaries": summaries,
        "csv": csv_path,
        "png": png,
        "md": md,
        "above_words": above,
        "above_csv": above_csv,
        "skipped": skipped,
    }


def _log_wandb(
    cfg: GeneralizeConfig, rows: list[dict[str, Any]], png: Path, above: list[dict[str, Any]]
) -> None:
    from probing.probes.wandb_utils import log_standalone

    tables = {
        "generalization": (report.COLUMNS, rows),
        "above_words": (above_words.COLUMNS, above),
    }
    log_standalone(cfg.wandb_project, cfg.output, "generalize", vars(cfg), tables,
                   {"generalization_heatmap": png})  # fmt: skip
