"""What a probe is given from the data at instantiation, and the check that a checkpoint shares it.

``probing fit|validate|test|predict`` links the data module's ``num_layers``, ``hidden_size``,
``layers``, ``num_classes`` and ``class_names`` into the probe (:mod:`probing.training.lightning`); a
checkpoint evaluated on data must have been trained with the same values. ``LINKED_UNCHECKED`` are
linked too but not compared: the train statistics and feature identity (a checkpoint's own are
restored from it) and whether the training split comes as one batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from probing.errors import ProbingError

# checked in this order; the first difference is reported
LINKED = ("num_layers", "hidden_size", "layers", "num_classes", "class_names")
LINKED_UNCHECKED = ("input_stats", "feature_meta", "full_batch")
_OPTION = {"class_names": "--data.classes", "num_classes": "--data.classes"}  # else --data.layers


def check_linked(saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Refuse a checkpoint whose hyperparameters ``saved`` differ from the data's ``current``."""
    for key in LINKED:
        if key in saved and _norm(saved[key], key, saved) != _norm(current.get(key), key, current):
            raise ProbingError(
                f"the checkpoint was trained with {key}={saved[key]!r} but the data gives "
                f"{current.get(key)!r}; use a checkpoint of this feature file/model or set "
                f"{_OPTION.get(key, '--data.layers')} (and --data.path) as in training"
            )


def _norm(value: Any, key: str, hp: Mapping[str, Any]) -> Any:
    if key == "layers" and value is None:
        return list(range(int(hp.get("num_layers", 0))))
    return list(value) if isinstance(value, (list, tuple)) else value
