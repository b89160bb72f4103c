"""CSV tables: the one writer and the one number format of every CSV the commands write.

A cell holds a float formatted with the table's format spec (``.6g`` by default; ``""`` keeps the
full precision), an empty string for a missing value (``None``) or a non-finite float (NaN, ±inf),
and any other value as it is. ``digits=None`` writes floats as they are (``nan`` included), for the
tables where an empty cell means something else (no probe) than NaN (no layer to count). A table is written to a hidden temporary name in its folder and
renamed into place when complete, so a reader never sees half a table.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

DIGITS = ".6g"


def cell(value: Any, digits: str | None = DIGITS) -> Any:
    """``value`` as a CSV cell: a float formatted with ``digits``; ``None``/NaN/inf empty."""
    if value is None:
        return ""
    if isinstance(value, float) and digits is not None:
        return format(value, digits) if math.isfinite(value) else ""
    return value


def write_csv(
    path: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    digits: str | None = DIGITS,
) -> Path:
    """Write ``rows`` as the CSV ``path`` with ``columns`` in order (keys outside them are left out,
    missing ones empty); returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([cell(row.get(k), digits) for k in columns] for row in rows)
    os.replace(tmp, path)
    return path
