"""Where a held-out class sits on each label set's direction: the jailbreak question, located.

For ``probing directions --locate [jailbreak]``: the located classes' rows are left out of every label
set (no direction is fitted on them), then, per label set, position and layer, their projections on
the direction are placed between the label set's held-out negatives and positives:

``placement = (mean proj(located) − mean proj(test negatives)) / (mean proj(test positives) − mean proj(test negatives))``

0 means "like the negatives" (normal prompts, replies that complied), 1 "like the positives" (harmful
prompts, refusals); values outside [0, 1] lie beyond either class mean. ``auroc_vs_negative`` and
``auroc_vs_positive`` say how well the projection tells the located rows from each class (0.5: not at
all). ``placement_lo``/``placement_hi``: a 95 % percentile bootstrap interval of the placement
(located rows, held-out negatives and positives each resampled; ``--bootstrap``). Zhao et al. (2025)
predict that jailbreaks keep the harmfulness placement near 1 at ``inst`` while the refusal placement
drops at the template tokens; Zhou et al. (2024) that the early harmfulness classification itself
moves.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from probing.directions.compute import Directions, Split
from probing.directions.labels import LabelSet
from probing.errors import ProbingError
from probing.features.store import FeatureFile
from probing.plotting import save_figure, subplots
from probing.probes.auroc import auroc_columns
from probing.tables import write_csv as write_table

LOCATED_CSV = "located.csv"
WEAK_AUROC = 0.75  # below it the sentence says that the placements are loose
LOCATED_PLOT = "located.png"
COLUMNS = ("class", "label_set", "position", "layer", "n", "placement", "placement_lo",
           "placement_hi", "auroc_vs_negative", "auroc_vs_positive")  # fmt: skip


@dataclass
class Located:
    """``placement`` (with its bootstrap interval ``placement_lo``/``_hi``, NaN without resamples),
    ``auroc_vs_negative``, ``auroc_vs_positive``: ``[C, S, P, L]`` for located classes C, label sets
    S, positions P, layers L (those of the :class:`Directions`)."""

    classes: list[str]
    counts: list[int]
    placement: np.ndarray
    auroc_vs_negative: np.ndarray
    auroc_vs_positive: np.ndarray
    placement_lo: np.ndarray
    placement_hi: np.ndarray


def located_rows(ff: FeatureFile, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """File rows of each located class (by the file's own class names)."""
    names = ff.label_names
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise ProbingError(
            f"--locate {unknown}: not a class of {ff.path} (its classes: {', '.join(names)}); "
            "choose among those"
        )
    rows = {c: np.flatnonzero(ff.labels == names.index(c)) for c in dict.fromkeys(classes)}
    empty = [c for c, r in rows.items() if len(r) == 0]
    if empty:
        raise ProbingError(f"--locate {empty}: {ff.path} has no rows of that class")
    return rows


def leave_out(sets: Sequence[LabelSet], rows: dict[str, np.ndarray]) -> list[LabelSet]:
    """The label sets without the located rows (they are scored, never fitted on)."""
    if not rows:
        return list(sets)
    out = np.concatenate(list(rows.values()))
    result = []
    for s in sets:
        values = s.values.copy()
        values[out] = -1
        result.append(replace(s, values=values))
    return result


class Locator:
    """Places the located rows on each direction, position by position, as :func:`compute` visits
    each position's block (one read of the file for the directions and the placements)."""

    def __init__(
        self, rows: dict[str, np.ndarray], sets: Sequence[LabelSet], splits: Sequence[Split],
        positions: int, layers: int, bootstrap: int = 0, seed: int = 0,
    ):  # fmt: skip
        self.rows, self.sets, self.splits = rows, list(sets), list(splits)
        self.bootstrap, self.seed = bootstrap, seed
        shape = (len(rows), len(self.sets), positions, layers)
        self.placement = np.full(shape, math.nan)
        self.vs_neg, self.vs_pos = np.full(shape, math.nan), np.full(shape, math.nan)
        self.lo, self.hi = np.full(shape, math.nan), np.full(shape, math.nan)

    def visit(self, p: int, block: np.ndarray, directions: np.ndarray) -> None:
        """Position ``p``: its block ``[N, L, D]`` and the label sets' directions there ``[S, L, D]``."""
        x = block.astype(np.float64)
        for s, (label_set, split) in enumerate(zip(self.sets, self.splits, strict=True)):
            proj = np.einsum("nld,ld->nl", x, directions[s].astype(np.float64))
            test_y = label_set.values[split.test]
            neg, pos = proj[split.test[test_y == 0]], proj[split.test[test_y == 1]]
            span = pos.mean(0) - neg.mean(0)
            for c, mine in enumerate(self.rows.values()):
                with np.errstate(invalid="ignore", divide="ignore"):
                    self.placement[c, s, p] = (proj[mine].mean(0) - neg.mean(0)) / span
                self.vs_neg[c, s, p] = _auroc(proj[mine], neg)
                self.vs_pos[c, s, p] = _auroc(proj[mine], pos)
                if self.bootstrap:
                    rng = np.random.default_rng([self.seed, c, s, p])  # the same draws every run
                    lo, hi = placement_interval(proj[mine], neg, pos, self.bootstrap, rng)
                    self.lo[c, s, p], self.hi[c, s, p] = lo, hi

    def located(self) -> Located:
        counts = [len(r) for r in self.rows.values()]
        return Located(
            list(self.rows), counts, self.placement, self.vs_neg, self.vs_pos, self.lo, self.hi
        )


def placement_interval(
    mine: np.ndarray, neg: np.ndarray, pos: np.ndarray, resamples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """95 % percentile bootstrap interval ``[L]`` of the placement of projections ``mine [n, L]``
    between ``neg`` and ``pos``: each group resampled with replacement (multinomial counts, so the
    memory is ``resamples × n``), the same draws for every layer."""

    def means(x: np.ndarray) -> np.ndarray:
        counts = rng.multinomial(len(x), np.full(len(x), 1 / len(x)), size=resamples)
        return counts @ x / len(x)  # [resamples, L]

    with np.errstate(invalid="ignore", divide="ignore"):
        b_neg = means(neg)
        b = (means(mine) - b_neg) / (means(pos) - b_neg)
    b = np.where(np.isfinite(b), b, np.nan)
    with warnings.catch_warnings():  # a layer where the classes do not differ: NaN, said as such
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(b, 2.5, axis=0), np.nanpercentile(b, 97.5, axis=0)


def _ci(found: Located, index: tuple[int, ...]) -> str:
    lo, hi = found.placement_lo[index], found.placement_hi[index]
    return f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else ""


def _crosses_half(found: Located, *indices: tuple[int, ...]) -> bool:
    return any(found.placement_lo[i] < 0.5 < found.placement_hi[i] for i in indices)


def _auroc(located: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per layer, the AUROC of telling located rows (scored positive) from reference rows."""
    scores = np.concatenate([located, reference])
    return auroc_columns(scores, np.r_[np.ones(len(located)), np.zeros(len(reference))] == 1)


def rows_of(found: Located, result: Directions) -> list[dict[str, Any]]:
    out = []
    for c, name in enumerate(found.classes):
        for s, label_set in enumerate(result.label_sets):
            for p, position in enumerate(result.positions):
                for j, layer in enumerate(result.layers):
                    out.append(
                        {
                            "class": name,
                            "label_set": label_set,
                            "position": position,
                            "layer": layer,
                            "n": found.counts[c],
                            "placement": float(found.placement[c, s, p, j]),
                            "placement_lo": float(found.placement_lo[c, s, p, j]),
                            "placement_hi": float(found.placement_hi[c, s, p, j]),
                            "auroc_vs_negative": float(found.auroc_vs_negative[c, s, p, j]),
                            "auroc_vs_positive": float(found.auroc_vs_positive[c, s, p, j]),
                        }
                    )
    return out


def plot(found: Located, result: Directions, path: Path, title: str) -> Path:
    """Placement per layer, one panel per label set, one line per position (and located class)."""
    n = len(result.label_sets)
    fig, axes = subplots(1, n, figsize=(5.2 * n, 3.6), squeeze=False)
    for s, ax in enumerate(axes[0]):
        for c, name in enumerate(found.classes):
            for p, position in enumerate(result.positions):
                label = position if len(found.classes) == 1 else f"{name} @ {position}"
                ax.plot(result.layers, found.placement[c, s, p], marker="o", ms=2, label=label)
        ax.axhline(0, color="grey", ls="--", lw=0.8)
        ax.axhline(1, color="black", ls="--", lw=0.8)
        ax.set_ylim(-0.5, 1.5)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("placement (0 = negatives, 1 = positives)")
        ax.set_title(
            f"{', '.join(found.classes)} on the {result.label_sets[s]} direction", fontsize=9
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = save_figure(fig, path.with_name(f".{path.stem}.tmp{path.suffix}"))
    os.replace(tmp, path)
    return path


def sentences(found: Located, result: Directions, harm: str = "label") -> list[str]:
    """Per located class, one plain sentence: its placement where each label set separates best."""
    out = []
    for c, name in enumerate(found.classes):
        parts = []
        for s, label_set in enumerate(result.label_sets):
            grid = np.where(np.isnan(result.auroc[s]), -np.inf, result.auroc[s])
            p, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
            what = "harmfulness" if label_set == harm else label_set
            parts.append(
                f"{found.placement[c, s, p, j]:.2f}{_ci(found, (c, s, p, j))} of the way from "
                f"negatives to positives on the {what} direction at layer {result.layers[j]}, "
                f"position {result.positions[p]}"
            )
        out.append(f"{name} ({found.counts[c]} rows, never fitted on) sits " + "; ".join(parts))
        located = zhao_or_zhou(found, result, name)
        if located:
            out.append(located)
    return out


def write_csv(found: Located, result: Directions, directory: Path) -> Path:
    """``located.csv``."""
    return write_table(directory / LOCATED_CSV, rows_of(found, result), COLUMNS, digits=".4f")


def _best_at(result: Directions, s: int, positions: list[int]) -> tuple[int, int]:
    """``(position, layer)`` indices among ``positions`` where label set ``s`` separates best."""
    grid = np.full(result.auroc[s].shape, -np.inf)
    grid[positions] = np.nan_to_num(result.auroc[s][positions], nan=-np.inf)
    p, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return int(p), int(j)


def zhao_or_zhou(
    found: Located, result: Directions, name: str = "jailbreak", harm: str = "label",
    refusal: str = "label_refused", inst: str = "inst",
) -> str | None:  # fmt: skip
    """One plain sentence on where a located class (jailbreaks) acts: its placement on the
    harmfulness direction at ``inst`` and on the refusal direction at the template tokens after it,
    each where that direction separates best; None without both label sets or an ``inst`` position."""
    if name not in found.classes or inst not in result.positions:
        return None
    if harm not in result.label_sets or refusal not in result.label_sets:
        return None
    c, h, r = (
        found.classes.index(name),
        result.label_sets.index(harm),
        result.label_sets.index(refusal),
    )
    at_inst = [result.positions.index(inst)]
    after = [i for i, p in enumerate(result.positions) if p != inst and p != "mean"]
    if not after:
        return None
    hp, hj = _best_at(result, h, at_inst)
    rp, rj = _best_at(result, r, after)
    belief, signal = found.placement[c, h, hp, hj], found.placement[c, r, rp, rj]
    later = found.placement[c, h, rp, rj]  # the harm reading where refusal is read
    post = result.positions[rp]
    at_belief, at_signal, at_later = (c, h, hp, hj), (c, r, rp, rj), (c, h, rp, rj)
    where = (
        f"On the harmfulness direction at {inst} (layer {result.layers[hj]}, AUROC "
        f"{result.auroc[h, hp, hj]:.2f}) {name} prompts sit {belief:.2f}{_ci(found, at_belief)} of "
        f"the way from normal to harmful, at {post} (layer {result.layers[rj]}) "
        f"{later:.2f}{_ci(found, at_later)}; on the refusal direction there (AUROC "
        f"{result.auroc[r, rp, rj]:.2f}) {signal:.2f}{_ci(found, at_signal)} of the way from "
        "complied to refused"
    )
    weak = min(result.auroc[h, hp, hj], result.auroc[r, rp, rj])
    if weak < WEAK_AUROC:
        where = (
            f"{where} (a direction separating at AUROC {weak:.2f} places rows loosely: few rows?)"
        )
    if _crosses_half(found, at_belief, at_signal):
        where = f"{where} (an interval spans 0.5: these rows do not settle the reading below)"
    if belief >= 0.5 and signal < 0.5:
        return f"{where}: the harm belief persists while the refusal signal drops (as Zhao et al. find)."
    if belief < 0.5 and belief - later >= 0.25:
        return (
            f"{where}: the harm belief is partly kept at the instruction and lost at the template "
            "tokens, where the refusal is read — between Zhao et al.'s pattern and Zhou et al.'s."
        )
    if belief < 0.5:
        return f"{where}: the harmfulness reading itself moves towards normal (as Zhou et al. read it)."
    return f"{where}: the refusal signal stays (the jailbreak does not act through it here)."
