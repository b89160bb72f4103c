"""Label sets: named mappings of a feature file's rows to 1 (positive), 0 (negative) or -1 (left out).

The harmfulness label set is the file's ``label`` dataset read through ``--classes [negative, positive]``
and ``--class_map`` (as in ``probing generalize``). Every other per-row integer dataset named
``label_<name>`` (e.g. ``label_refused``: 1 = refused, 0 = complied, -1 = not judged, written by
``probing refusal --features``; :mod:`probing.features.labels`) is a label set of its own, used as
stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from probing.data.selection import class_indices
from probing.errors import ProbingError
from probing.features.labels import HARM, extra_names, read_extra
from probing.features.store import FeatureFile


@dataclass(frozen=True)
class LabelSet:
    """``values [N]``: 1 positive, 0 negative, -1 row not in this label set; ``classes``: the names
    of 0 and 1 (for messages)."""

    name: str
    values: np.ndarray
    classes: tuple[str, str] = ("0", "1")

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.values >= 0)

    @property
    def positives(self) -> int:
        return int((self.values == 1).sum())

    @property
    def negatives(self) -> int:
        return int((self.values == 0).sum())


def harm_label_set(ff: FeatureFile, classes: Sequence[str], class_map: dict[str, str]) -> LabelSet:
    """The ``label`` dataset as a label set: ``classes[0]`` → 0, ``classes[1]`` → 1, others → -1."""
    if len(classes) != 2 or len(set(classes)) != 2:
        raise ProbingError(
            f"--classes must name two classes [negative, positive], got {list(classes)}"
        )
    known = {class_map.get(n, n) for n in ff.label_names}
    missing = [c for c in classes if c not in known]
    if missing:
        raise ProbingError(
            f"--classes {list(classes)}: {missing} is not a class of {ff.path} (it has "
            f"{sorted(known)} after --class_map); change --classes or --class_map"
        )
    values = class_indices(ff.labels, ff.label_names, list(classes), dict(class_map))
    return LabelSet(HARM, values.astype(np.int64), (str(classes[0]), str(classes[1])))


def extra_label_set(ff: FeatureFile, name: str) -> LabelSet:
    """A ``label_<name>`` dataset: one integer per row, each 1, 0 or -1."""
    values, names = read_extra(ff, name, "--label_sets")
    return LabelSet(name, values, (names[0], names[1]))


def label_sets(
    ff: FeatureFile,
    classes: Sequence[str],
    class_map: dict[str, str],
    chosen: Sequence[str] | None = None,
) -> list[LabelSet]:
    """The harmfulness label set and every ``label_<name>`` set of the file (or those ``chosen``),
    each with both classes present."""
    available = [HARM, *extra_names(ff)]
    names = list(dict.fromkeys(chosen)) if chosen is not None else available
    if not names:
        raise ProbingError(f"--label_sets is empty; {ff.path} has the label sets {available}")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ProbingError(
            f"--label_sets names {unknown}, which {ff.path} does not have: it has the label sets "
            f"{available}; choose among those"
        )
    sets = [
        harm_label_set(ff, classes, class_map) if n == HARM else extra_label_set(ff, n)
        for n in names
    ]
    for s in sets:
        for value, count in ((0, s.negatives), (1, s.positives)):
            if count == 0:
                what = s.classes[value]
                option = "--classes/--class_map" if s.name == HARM else "--label_sets"
                raise ProbingError(
                    f"label set {s.name!r} has no rows of class {what!r} in {ff.path} "
                    f"({s.negatives} negative, {s.positives} positive rows); change {option}"
                )
    return sets
