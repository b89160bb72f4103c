"""Names of a feature file's stored positions and the one way readers pick a position by name or index.

A file records its names in the ``position_names`` attribute (JSON list, one per stored position);
older files have none and get the names their ``positions`` and ``num_positions`` imply (the same
names a new file of those settings records). See ``docs/positions.md``.
"""

from __future__ import annotations

from typing import Any, Literal

from probing.errors import ProbingError

INST = "inst"  # the last token of the user's instruction
# what `probing extract --positions` stores
Positions = Literal["last", "mean", "last_k", "template"]


def template_names(post: int) -> list[str]:
    """``inst`` then the ``post`` chat-template tokens after it (``post_1 … post_m``)."""
    return [INST] + [f"post_{j}" for j in range(1, post + 1)]


def names_for(positions: str, num_positions: int) -> list[str]:
    """The names of ``num_positions`` positions stored by ``--positions positions``.

    ``last`` → ``[last]``; ``mean`` → ``[mean]``; ``last_k`` → ``[last-(k-1), …, last-1, last]``
    (oldest first); ``template`` → ``[inst, post_1, …, post_m]`` with m = ``num_positions`` - 1.
    """
    if positions == "template":
        return template_names(num_positions - 1)
    if positions == "last_k":
        return [f"last-{num_positions - 1 - j}" if j < num_positions - 1 else "last"
                for j in range(num_positions)]  # fmt: skip
    if positions in ("last", "mean") and num_positions == 1:
        return [positions]
    return [str(j) for j in range(num_positions)]  # unknown settings: indices as names


def position_names(meta: dict[str, Any]) -> list[str]:
    """The names of a file's stored positions: recorded, else implied by its settings."""
    recorded = meta.get("position_names")
    if recorded:
        return [str(n) for n in recorded]
    return names_for(str(meta.get("positions", "")), int(meta.get("num_positions", 1)))


def resolve_position(
    meta: dict[str, Any], position: int | str, option: str, where: Any = "the feature file"
) -> int:
    """The stored index (``0 … P-1``) of ``position`` in a file with metadata ``meta``.

    ``position`` is an index (negative counts from the end) or a name of :func:`position_names`;
    ``last`` also names the last prompt token where it is stored under another name (``post_m`` of
    ``template``, ``inst`` of a ``raw`` template file). ``option`` and ``where`` go into the error.
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
    if name == "last" and meta.get("positions") == "template":
        return count - 1  # post_m (raw prompts: inst) is the last prompt token
    raise ProbingError(
        f"{option}={name!r} is not a position of {where}: it stores {names} "
        f"(extracted with --positions {meta.get('positions')}); choose one of those"
    )
