"""``probing generalize``: leave-one-source-out and explicit train→test matrices over prompt sources.

Writes ``OUTPUT/generalization.csv`` (``train, test, split, layer, probe, accuracy, auroc, tpr_at_1fpr,
flagged_rate, rows, positives, threshold``), ``generalization.png`` and ``generalization.md``, and with the
text baseline ``above_words.csv`` (``train, test, layer, probe, metric, delta, low, high``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from probing.config import parse_config
from probing.errors import ProbingError
from probing.generalize import report
from probing.generalize.data import load_block
from probing.generalize.matrix import Fold, loso_folds, matrix_folds, run_fold
from probing.layers import LayerSpec
from probing.probes import above_words
from probing.probes.rates import check_fpr
from probing.probes.text import TEXT

log = logging.getLogger(__name__)
DESCRIPTION = (
    "Does a probe generalise to prompt sources it never saw? Leave-one-source-out and explicit "
    "train→test matrices, every layer, linear and MLP heads, beside a text baseline on the prompt's words."
)


@dataclass
class GeneralizeConfig:
    """Cross-source generalisation of all-layer probes.

    Args:
        features: feature files (``.h5``) of one model and extraction; their prompt sources are the units
            held out (names as ``probing info`` lists them; ``stem:name`` when two files share a name).
        output: folder for ``generalization.csv``, ``generalization.png`` and ``generalization.md``.
        classes: ``[negative, harmful]`` class names after ``class_map``; rows of other classes are dropped.
        class_map: renames/merges classes first, e.g. ``{contrast: normal, jailbreak: malicious}``.
        label: label set: ``label``, the prompts' classes (default), or one the files add, e.g.
            ``refused`` (``probing refusal --features``) with ``--classes [complied, refused]``.
        loso: leave-one-source-out: for every source, train on all the others and test on it.
        matrix: explicit folds ``[{train: [sources], test: [sources], name: optional}]``; a ``test``
            item may be ``{name: NAME, sources: [sources]}``, one test set pooled from several sources
            (e.g. one language's safe and harmful prompts, so AUROC ranks them against each other;
            a fold's cross-source mean in ``above_words.csv`` is then over its pooled sets).
        probes: head kinds: ``linear`` (L2 logistic regression, L-BFGS), ``mlp`` (one hidden layer) and
            ``text``: the text baseline, logistic regression on TF-IDF word 1–2-grams and character
            2–5-grams of the prompts (no layer; the control every layer is read against); ``poe``: a
            linear probe fitted as a product of experts with the text baseline (its out-of-fold
            log-probabilities added to the logits while fitting, dropped when scoring), so that it
            learns what the words do not explain.
        layers: layers to probe: ``all``, an index, a list or ``"start:stop[:step]"``.
        position: stored token position: an index (``-1`` = the last stored) or a name the files
            record (``inst``, ``post_1``, … of ``--positions template``; docs/positions.md).
        fpr: thresholds flag at most this share of the training sources' negatives (validation part).
        split: fit/val/test fractions of the training sources' rows (stratified by source and class).
        l2: L2 penalty on the mean loss (linear: on the weights; MLP: AdamW weight decay).
        seed: seed of the split and the MLP initialisation.
        repeats: run every fold this many times with seeds ``seed, seed + 1, …`` (new fit/val/test
            splits and MLP initialisations); the CSV keeps every repeat (``seed`` column), the heatmap
            and ``generalization.md`` show means and the spread between repeats. A catch rate at 1 %
            FPR rests on the few highest-scoring negatives, so one fit can move it by several points.
        bootstrap: paired bootstrap resamples for ``above_words.csv`` (every probe − text, per layer and
            test set, with a 95 % interval); 0 skips it.
        memory_limit_gb: refuse to load more than this (rows × layers × hidden × 4 bytes).
        wandb_project: also log the table and heatmap to this W&B project (offline without a key).
    """

    features: list[str]
    output: str = "runs/generalize"
    classes: list[str] = field(default_factory=lambda: ["normal", "malicious"])
    class_map: dict[str, str] = field(default_factory=dict)
    label: str = "label"
    loso: bool = True
    matrix: list[dict[str, Any]] = field(default_factory=list)
    probes: list[Literal["linear", "mlp", "text", "poe"]] = field(
        default_factory=lambda: ["linear", "mlp", "text"]
    )
    layers: LayerSpec = "all"
    position: int | str = -1
    fpr: float = 0.01
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    l2: float = 1e-2
    seed: int = 0
    repeats: int = 1
    bootstrap: int = 1000
    memory_limit_gb: float = 8.0
    wandb_project: str | None = None


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


def _feature_list(argv: list[str]) -> list[str]:
    """``--features A B C`` (shell style) → ``--features '["A", "B", "C"]'``; a YAML list stays as is."""
    out, i = [], 0
    while i < len(argv):
        if (
            argv[i] == "--features"
            and i + 1 < len(argv)
            and not argv[i + 1].lstrip().startswith("[")
        ):
            j = i + 1
            while j < len(argv) and not argv[j].startswith("-"):
                j += 1
            out += ["--features", json.dumps(argv[i + 1 : j])]
            i = j
        else:
            out.append(argv[i])
            i += 1
    return out


def parse(argv: list[str]) -> GeneralizeConfig:
    return parse_config(
        GeneralizeConfig, _feature_list(list(argv)), "probing generalize", DESCRIPTION
    )


def run(argv: list[str]) -> int:
    generalize(parse(argv))
    return 0
