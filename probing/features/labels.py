"""A feature file's label sets: the ``label`` dataset (the prompts' classes) and per-row extra sets.

An extra label set is a dataset ``label_<name>`` of one integer per row: 1, 0 or -1 (no verdict,
left out), with a ``names`` attribute (JSON list: the names of 0 and 1, e.g. ``["complied",
"refused"]`` for ``label_refused``, written by ``probing refusal --features``). Readers name a set
by ``<name>`` or ``label_<name>``; ``label`` is the classes. Adding a set never half-writes the
file: a copy beside it gets the dataset and replaces it in one rename.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from probing.errors import ProbingError
from probing.features.atomic import WriteLock, failure_reason
from probing.features.store import FeatureFile

log = logging.getLogger(__name__)

HARM = "label"  # the classes: the file's ``label`` dataset
EXTRA_PREFIX = "label_"
DEFAULT_NAMES = ["0", "1"]


def extra_names(ff: FeatureFile) -> list[str]:
    """Names of the file's ``label_<name>`` datasets, in file order."""
    return [n for n in ff.names() if n.startswith(EXTRA_PREFIX)]


def dataset_name(name: str) -> str:
    """``refused`` → ``label_refused``; ``label`` and ``label_<name>`` as given."""
    name = name.strip()
    return name if name == HARM or name.startswith(EXTRA_PREFIX) else EXTRA_PREFIX + name


def read_extra(ff: FeatureFile, name: str, option: str) -> tuple[np.ndarray, list[str]]:
    """A ``label_<name>`` dataset's values (int64: 1, 0, -1) and the names of 0 and 1; ``option``
    is what to change if the dataset is damaged."""
    ds = np.asarray(ff.column(name))
    if ds.shape != (ff.num_rows,) or ds.dtype.kind not in "iub":
        raise ProbingError(
            f"{ff.path}: label set {name!r} has shape {ds.shape} and dtype {ds.dtype}, expected "
            f"({ff.num_rows},) integers 1/0/-1; fix the dataset or leave it out with {option}"
        )
    values = ds.astype(np.int64)
    bad = np.setdiff1d(np.unique(values), [-1, 0, 1])
    if len(bad):
        raise ProbingError(
            f"{ff.path}: label set {name!r} holds values {bad[:5].tolist()}, expected 1 (positive), "
            f"0 (negative) or -1 (no verdict); fix the dataset or leave it out with {option}"
        )
    attrs = ff.attrs_of(name)
    names = attrs.get("names")
    try:
        names = json.loads(names) if names is not None else DEFAULT_NAMES
    except (TypeError, ValueError):
        names = None
    if not (isinstance(names, list) and len(names) == 2 and len(set(map(str, names))) == 2):
        raise ProbingError(
            f"{ff.path}: label set {name!r} has a names attribute {attrs.get('names')!r}, "
            f"expected a JSON list of two names (of 0 and 1); fix it or choose another {option}"
        )
    return values, [str(n) for n in names]


def read_label_set(ff: FeatureFile, name: str, option: str) -> tuple[np.ndarray, list[str]]:
    """Per row an index into the returned names (-1: not in the set): ``label`` is the classes
    (``label_names``), another name an extra set (``refused`` or ``label_refused``)."""
    key = dataset_name(name)
    if key == HARM:
        return ff.labels.astype(np.int64), ff.label_names
    available = [HARM, *(n[len(EXTRA_PREFIX) :] for n in extra_names(ff))]
    if key not in ff.names():
        raise ProbingError(
            f"{option}={name!r} is not a label set of {ff.path}: it has {available} (`probing "
            "refusal --features` adds 'refused'); choose one of those"
        )
    return read_extra(ff, key, option)


def add_label_set(
    path: str | os.PathLike,
    name: str,
    values: np.ndarray,
    names: Sequence[str],
    attrs: dict[str, Any],
    fingerprint: str | None = None,
) -> Path:
    """Store ``values`` (one of 1, 0, -1 per row) as ``label_<name>`` in the feature file at
    ``path``, replacing a set of that name. The file is copied beside itself, the copy gets the
    dataset, then replaces the file in one rename: readers see the old file or the new one, and a
    failure leaves the old one. ``fingerprint``: the file's, as the caller checked it (refused if
    the file changed since)."""
    path, key = Path(path), dataset_name(name)
    values = np.asarray(values, dtype=np.int64)
    with WriteLock(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            shutil.copymode(path, tmp)
            with h5py.File(tmp, "r+") as f:
                found = f.attrs.get("fingerprint")
                if fingerprint is not None and found != fingerprint:
                    raise ProbingError(
                        f"{path} changed while its {key} was prepared (another extraction "
                        "replaced it); run the command again"
                    )
                if f["hidden"].shape[0] != len(values):
                    raise ProbingError(
                        f"{key} has {len(values)} rows but {path} has {f['hidden'].shape[0]}"
                    )
                if key in f:
                    log.info("replacing the label set %s of %s", key, path)
                    del f[key]
                ds = f.create_dataset(key, data=values)
                ds.attrs["names"] = json.dumps(list(names))
                for k, v in attrs.items():
                    ds.attrs[k] = v if isinstance(v, (str, int, float)) else json.dumps(v)
            os.replace(tmp, path)
        except OSError as err:
            raise ProbingError(
                f"cannot add {key} to {path}: {failure_reason(err)}; the file is unchanged (free "
                "space beside it, or make it writable)"
            ) from None
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path
