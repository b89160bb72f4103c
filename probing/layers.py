"""Layer options: one way to write them (:data:`LayerSpec`), one way to resolve them
(:func:`resolve_layers`), one rule for ``auto`` (:func:`earliest_within`).

Layer indices follow the feature format (docs/feature-format.md): 0 = the embeddings, i = the output
of decoder block i; a negative index counts from the last layer. A layer option takes

* ``all``: every layer;
* an index: ``5``, ``-1``;
* a list: ``[1, 5, 9]`` or ``"1,5,9"``;
* a range ``"start:stop[:step]"`` (Python slicing, stop excluded: ``"1::4"`` is every 4th layer
  from 1);
* ``auto``, where the command documents it (the monitor's ``--layer``): the earliest layer within
  a tolerance of the best (:func:`earliest_within`, :data:`AUTO_TOLERANCE`).

Every error names the option to change.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from probing.errors import ProbingError

LayerSpec = str | int | list[int]
"""What a layer option takes: ``all``, an index, a list, ``"a,b,c"`` or ``"start:stop[:step]"``."""

AUTO = "auto"
AUTO_TOLERANCE = 0.005
"""``auto`` picks the earliest layer within this much of the best (0.005: half an accuracy point)."""


def is_auto(spec: LayerSpec | None) -> bool:
    return isinstance(spec, str) and spec.strip().lower() == AUTO


def resolve_layers(
    spec: LayerSpec | None, num_layers: int, option: str, where: str = "the feature file"
) -> list[int]:
    """Absolute layer indices (in the order given) of ``spec`` (``None``: all) among ``num_layers``;
    a spec that cannot be read, is out of range, empty or lists a layer twice names ``option``."""
    hint = f"{option} takes 'all', an index, a list [i, j, ...] or a range 'start:stop[:step]'"
    if spec is None:
        return list(range(num_layers))
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() == "all":
            return list(range(num_layers))
        if text.lower() == AUTO:
            raise ProbingError(f"{option} does not take 'auto' here; {hint}")
        try:
            if ":" in text:
                parts = [int(p) if p.strip() else None for p in text.split(":")]
                if len(parts) > 3:
                    raise ValueError
                chosen = list(range(num_layers))[slice(*parts)]
                if not chosen:
                    raise ProbingError(
                        f"{option}={spec!r} selects no layer; {where} has layers "
                        f"0..{num_layers - 1}"
                    )
                return chosen
            spec = [int(p) for p in text.replace("[", "").replace("]", "").split(",") if p.strip()]
        except ValueError:
            raise ProbingError(f"cannot read {option}={spec!r}; {hint}") from None
    if isinstance(spec, numbers.Integral):  # numpy integers too
        spec = [int(spec)]
    out = []
    for item in spec:
        try:
            layer = int(item)
        except (TypeError, ValueError):
            raise ProbingError(f"cannot read {option}={spec!r}; {hint}") from None
        if not -num_layers <= layer < num_layers:
            raise ProbingError(
                f"{option}: layer {layer} is out of range; {where} has layers "
                f"0..{num_layers - 1} (0 = embeddings, -1 = the last)"
            )
        out.append(layer % num_layers)
    if not out:
        raise ProbingError(f"{option} is empty; {hint}")
    if len(set(out)) != len(out):
        raise ProbingError(f"{option} lists a layer twice: {out}")
    return out


def resolve_layer(
    spec: LayerSpec, num_layers: int, option: str, where: str = "the feature file"
) -> int:
    """The one absolute layer index of ``spec`` (an index, or a list or range of one layer)."""
    layers = resolve_layers(spec, num_layers, option, where)
    if len(layers) != 1:
        raise ProbingError(f"{option} takes one layer, got {len(layers)}: {layers_text(layers)}")
    return layers[0]


def layers_text(layers: Sequence[int]) -> str:
    """``3..9`` for consecutive layers, else ``1,5,9``."""
    layers = list(layers)
    if layers and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ",".join(map(str, layers))


def check_tolerance(tolerance: float, option: str = "--auto_tolerance") -> float:
    if not 0 <= tolerance < 1:
        raise ProbingError(f"{option} must be in [0, 1), got {tolerance}")
    return float(tolerance)


def earliest_within(
    layers: Sequence[int], values: Sequence[float | None], tolerance: float = AUTO_TOLERANCE
) -> tuple[int, float, float]:
    """``auto``: the earliest of ``layers`` whose value (accuracy, TPR; higher is better; None or NaN
    is the worst) is within ``tolerance`` of the best one; returns it, its value and the best."""
    clean = [-math.inf if v is None or math.isnan(v) else float(v) for v in values]
    best = max(clean)
    chosen = min(j for j, v in enumerate(clean) if v >= best - tolerance)
    return layers[chosen], clean[chosen], best
