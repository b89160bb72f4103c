"""Names of a feature file's stored positions and the one way readers pick a position by name or index.

A file records its names in the ``position_names`` attribute (JSON list, one per stored position);
older files have none and get the names their ``positions`` and ``num_positions`` imply (the same
names a new file of those settings records). See ``docs/positions.md``.
"""

from __future__ import annotations

from typing import Any

from probing.errors import ProbingError
from probing.features.layout import Layout, layout


def _implied(positions: str, num_positions: int) -> Layout | None:
    """The layout a single ``--positions`` setting with ``num_positions`` stored positions has."""
    if positions == "template":
        return layout(("template",), post=num_positions - 1)
    if positions == "last_k":
        return layout(("last_k",), k=num_positions)
    if positions in ("last", "mean") and num_positions == 1:
        return layout((positions,))
    return None


def names_for(positions: str, num_positions: int) -> list[str]:
    """The names of ``num_positions`` positions stored by ``--positions positions``.

    ``last`` → ``[last]``; ``mean`` → ``[mean]``; ``last_k`` → ``[last-(k-1), …, last-1, last]``
    (oldest first); ``template`` → ``[inst, post_1, …, post_m]`` with m = ``num_positions`` - 1.
    """
    implied = _implied(positions, num_positions)
    if implied is not None:
        return implied.names
    return [str(j) for j in range(num_positions)]  # unknown settings: indices as names


def position_names(meta: dict[str, Any]) -> list[str]:
    """The names of a file's stored positions: recorded, else implied by its settings."""
    recorded = meta.get("position_names")
    if recorded:
        return [str(n) for n in recorded]
    return names_for(str(meta.get("positions", "")), int(meta.get("num_positions", 1)))


def position_offsets(meta: dict[str, Any]) -> list[int | None]:
    """Per stored position its distance in tokens from the prompt's last token (None: the mean):
    recorded in ``position_offsets``, else implied by ``positions`` (files written before it)."""
    recorded = meta.get("position_offsets")
    if recorded:
        return [None if o is None else int(o) for o in recorded]
    count = int(meta.get("num_positions", 1))
    implied = _implied(str(meta.get("positions", "")), count)
    return implied.offsets if implied is not None else list(range(count - 1, -1, -1))


def resolve_position(
    meta: dict[str, Any], position: int | str, option: str, where: Any = "the feature file"
) -> int:
    """The stored index (``0 … P-1``) of ``position`` in a file with metadata ``meta``.

    ``position`` is an index (negative counts from the end) or a name of :func:`position_names`;
    ``last`` also names the last prompt token where it is stored under another name (``post_m`` of
    ``template``, ``inst`` of raw prompts). ``option`` and ``where`` go into the error.
    """
    names = position_names(meta)
    count = len(names)
    if isinstance(position, str) and position.strip().lstrip("-").isdigit():
        position = int(position)
    if isinstance(position, int) and not isinstance(position, bool):
        if not -count <= position < count:
            raise ProbingError(
                f"{option}={position} is out of range: {where} stores {count} position(s) "
                f"{names}; give an index in {-count}..{count - 1} or one of those names"
            )
        return position % count
    name = str(position).strip()
    if name in names:
        return names.index(name)
    offsets = position_offsets(meta)
    if name == "last" and 0 in offsets:
        return offsets.index(0)  # post_m (raw prompts: inst) is the last prompt token
    raise ProbingError(
        f"{option}={name!r} is not a position of {where}: it stores {names} "
        f"(extracted with --positions {meta.get('positions')}); choose one of those"
    )
