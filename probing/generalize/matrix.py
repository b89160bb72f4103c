"""Train on some prompt sources, test on others: leave-one-source-out folds and explicit train→test pairs.

For each fold the training sources' rows are split (stratified by source and class) into fit / val /
test parts; heads are fitted on *fit* (standardised with its statistics), the threshold of every layer is
chosen on *val* (at most ``fpr`` of its negatives flagged), the *test* part gives the in-distribution
result, and every held-out source is scored with the same heads and thresholds (cross-source result).
The text baseline (``text``, :mod:`probing.probes.text`) is fitted on the same *fit* rows' prompts and
thresholded on the same *val* rows; every hidden-state probe's difference to it on each test set is a
paired bootstrap (:mod:`probing.probes.above_words`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from probing.errors import ProbingError
from probing.generalize.data import SourceBlock, split_rows
from probing.generalize.fit import fit_heads, score_heads
from probing.probes.above_words import Paired, paired_deltas
from probing.probes.rates import per_source_rows, thresholds_at_fpr
from probing.probes.text import TEXT, crossfit_log_probs, fit_text, harm_score, text_probs

POE = "poe"  # a linear probe fitted as a product of experts with the text baseline

log = logging.getLogger(__name__)
IN_DISTRIBUTION = "in-distribution"


@dataclass
class Fold:
    """Train on ``train`` sources, test on ``test`` sources; ``name`` labels the ``train`` column.
    ``groups`` are further test sets pooled from several sources (name → sources), e.g. one
    language's safe and harmful prompts, so that AUROC ranks them against each other."""

    name: str
    train: list[str]
    test: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)

    def test_sets(self) -> dict[str, list[str]]:
        """Every test set's name and its sources: each ``test`` source alone, then the groups."""
        return {**{n: [n] for n in self.test}, **self.groups}


def loso_folds(names: Sequence[str]) -> list[Fold]:
    """One fold per source: train on all the others, test on it."""
    return [Fold(f"all but {n}", [m for m in names if m != n], [n]) for n in names]


def _test_items(entry: dict[str, Any], i: int) -> tuple[list[str], dict[str, list[str]]]:
    """A matrix entry's ``test``: source names, and ``{name: N, sources: [...]}`` pooled groups."""
    plain, groups = [], {}
    for item in entry.get("test") or []:
        if isinstance(item, str):
            plain.append(item)
        elif isinstance(item, dict) and set(item) == {"name", "sources"} and item["sources"]:
            groups[str(item["name"])] = [str(s) for s in item["sources"]]
        else:
            raise ProbingError(
                f"--matrix entry {i}: a test item is a source name or {{name: NAME, sources: "
                f"[sources]}} (a pooled test set), got {item!r}"
            )
    return plain, groups


def matrix_folds(entries: Sequence[dict[str, Any]], names: Sequence[str]) -> list[Fold]:
    """Folds from ``[{train: [...], test: [...], name?}]``, every source name checked; a ``test`` item
    may be ``{name, sources}``, a test set pooled from several sources."""
    folds = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "train" not in entry:
            raise ProbingError(
                f"--matrix entry {i} must be {{train: [sources], test: [sources]}}, got {entry!r}"
            )
        train = list(entry["train"])
        plain, groups = _test_items(entry, i)
        test = plain + [s for members in groups.values() for s in members]
        for name in (*train, *test):
            if name not in names:
                raise ProbingError(
                    f"--matrix entry {i} names source {name!r}, which is not in the feature files "
                    f"(their sources: {list(names)})"
                )
        overlap = sorted(set(train) & set(test))
        if overlap:
            raise ProbingError(
                f"--matrix entry {i} tests on {overlap}, which it also trains on; a source is either "
                "trained on or held out"
            )
        folds.append(Fold(str(entry.get("name") or "+".join(train)), train, plain, groups))
    return folds


def _standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))


@dataclass
class FoldResult:
    """A fold's metric rows and, per ``(probe, test)``, the paired differences to the text baseline
    (``test`` is :data:`IN_DISTRIBUTION` or a held-out source)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    deltas: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _text_scores(
    block: SourceBlock, fit_r: np.ndarray, val_r: np.ndarray, parts: Sequence[np.ndarray], seed: int
) -> list[np.ndarray]:
    """The text baseline fitted on ``fit_r``'s prompts (C chosen on ``val_r``): harm scores of
    ``val_r`` and of every array of rows in ``parts``."""
    clf = fit_text(
        block.prompts[fit_r], block.y[fit_r], (block.prompts[val_r], block.y[val_r]), seed
    )
    return [harm_score(text_probs(clf, block.prompts[r], 2)) for r in (val_r, *parts)]


def run_fold(
    block: SourceBlock,
    fold: Fold,
    probes: Sequence[str],
    fpr: float = 0.01,
    l2: float = 1e-2,
    seed: int = 0,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    bootstrap: int = 0,
) -> FoldResult:
    """Rows ``train, test, split, layer, probe, ...metrics`` of one fold (none when it cannot train) and,
    with ``text`` among ``probes`` and ``bootstrap > 0``, every probe's paired difference to it."""
    train_rows = block.rows_of(fold.train)
    present = set(block.y[train_rows].tolist())
    if present != {0, 1}:
        log.warning(
            "fold %r skipped: its training sources hold only one class (%s)", fold.name, present
        )
        return FoldResult()
    fit_r, val_r, test_r = split_rows(block.y, block.source, train_rows, split, seed)
    mean, std = _standardiser(block.x[fit_r])

    def x_of(rows: np.ndarray) -> torch.Tensor:
        return (block.x[torch.as_tensor(rows)] - mean) / std

    pos = block.y.astype(bool)
    sets = fold.test_sets()
    held = block.rows_of([s for members in sets.values() for s in members])
    members = [(n, np.isin(block.source[held], m)) for n, m in sets.items()]  # test set -> its rows
    result = FoldResult()
    text = None
    for kind in sorted(probes, key=lambda k: k != TEXT):  # the text baseline first
        if kind == TEXT:
            s_val, s_test, s_held = (
                s[:, None] for s in _text_scores(block, fit_r, val_r, (test_r, held), seed)
            )
            layers: Sequence[int | None] = [None]
        else:
            s_val, s_test, s_held = _head_scores(
                block, kind, (fit_r, val_r, test_r, held), x_of, l2, seed
            )
            layers = block.layers
        threshold = thresholds_at_fpr(s_val[~pos[val_r]], fpr)
        extra = {"train": fold.name, "probe": kind}
        result.rows += per_source_rows(
            s_test, pos[test_r], [IN_DISTRIBUTION] * len(test_r), threshold, layers,
            fpr=fpr, extra={**extra, "split": "in_distribution"},
        )  # fmt: skip
        for name, sel in members:
            result.rows += per_source_rows(
                s_held[sel], pos[held][sel], [name] * int(sel.sum()), threshold, layers,
                reference=(s_test, pos[test_r]), fpr=fpr, extra={**extra, "split": "cross_source"},
            )  # fmt: skip
        if kind == TEXT:
            text = (s_test[:, 0], s_held[:, 0] if len(held) else None, float(threshold[0]))
        elif text is not None and bootstrap > 0:
            result.deltas.update(
                _deltas(kind, (s_test, s_held, threshold), text, pos, test_r, held, members,
                        fpr, bootstrap, seed)
            )  # fmt: skip
    for row in result.rows:
        row["test"] = row.pop("source")
    log.info("fold %r: trained on %d rows, tested on %s", fold.name, len(fit_r), list(sets) or "-")
    return result


def _head_scores(
    block: SourceBlock, kind: str, rows: tuple[np.ndarray, ...], x_of: Any, l2: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All-layer heads of ``kind`` (``poe``: linear heads fitted beside the text baseline's
    out-of-fold log-probabilities) on the fit rows: scores ``[n, L]`` of the val, test and held rows."""
    fit_r, val_r, test_r, held = rows
    offset = None
    if kind == POE:
        logp = crossfit_log_probs(block.prompts[fit_r], block.y[fit_r], 2, seed=seed)
        offset = torch.as_tensor(logp, dtype=torch.float32)
    head = fit_heads(
        x_of(fit_r), torch.as_tensor(block.y[fit_r]), "linear" if kind == POE else kind, l2=l2,
        val=(x_of(val_r), torch.as_tensor(block.y[val_r])), seed=seed, offset=offset,
    )  # fmt: skip
    scores = [score_heads(head, x_of(r)).numpy() for r in (val_r, test_r, held)]
    return scores[0], scores[1], scores[2]


def _deltas(
    kind: str, states: tuple, text: tuple, pos: np.ndarray, test_r: np.ndarray, held: np.ndarray,
    members: Sequence[tuple[str, np.ndarray]], fpr: float, bootstrap: int, seed: int,
) -> dict[tuple[str, str], dict[str, Any]]:  # fmt: skip
    """Paired bootstrap differences probe − text on the in-distribution part and each held-out source."""
    s_test, s_held, threshold = states
    t_test, t_held, t_threshold = text
    out = {
        (kind, IN_DISTRIBUTION): paired_deltas(
            Paired(s_test, t_test, pos[test_r], threshold, t_threshold), fpr, bootstrap, seed
        )
    }
    reference = (s_test, t_test, pos[test_r])
    for name, sel in members:
        out[(kind, name)] = paired_deltas(
            Paired(s_held[sel], t_held[sel], pos[held][sel], threshold, t_threshold, reference),
            fpr, bootstrap, seed,
        )  # fmt: skip
    return out
