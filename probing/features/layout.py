"""What ``--positions`` stores: one setting or a list of them, as named positions at token offsets.

A request is one of ``last``, ``mean``, ``last_k``, ``template``, or a list of those and ``inst``
(``[inst, last, mean]``); every listed position comes from the same forward pass. The stored
positions are the tokens asked for, in prompt order (``inst`` first when asked for), each once, then
``mean``. Each has a name (the file's ``position_names``) and an offset: its distance in tokens from
the rendered prompt's last token (``0`` = the last token, ``None`` = the mean over every token; the
file's ``position_offsets``). See ``docs/positions.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from probing.errors import ProbingError

Positions = Literal["last", "mean", "last_k", "template"]
PositionName = Literal["inst", "last", "mean", "last_k", "template"]
ORDER = ("inst", "template", "last_k", "last", "mean")  # the canonical order of a request
INST = "inst"  # the last token of the user's instruction


@dataclass(frozen=True)
class Layout:
    """The stored positions: ``names[i]`` at ``offsets[i]`` tokens before the last (None: mean)."""

    names: list[str]
    offsets: list[int | None]

    @property
    def tokens_needed(self) -> int:
        """The fewest tokens a prompt must have for every stored token position to exist."""
        return max((o for o in self.offsets if o is not None), default=0) + 1


def normalize(positions: str | Sequence[str]) -> tuple[str, ...]:
    """The request as a tuple in canonical order, each setting once, those another covers dropped
    (``template`` covers ``inst`` and ``last``; ``last_k`` covers ``last``)."""
    given = [positions] if isinstance(positions, str) else list(positions)
    unknown = [p for p in given if p not in ORDER]
    if not given or unknown:
        raise ProbingError(
            f"--positions takes one of {list(ORDER[1:])} or a list of {list(ORDER)}, got "
            f"{positions!r}"
        )
    chosen = set(given)
    if "last_k" in chosen and chosen & {INST, "template"}:
        raise ProbingError(
            f"--positions {list(given)}: last_k cannot be listed with inst or template (their "
            "tokens overlap under two names); extract them into separate files"
        )
    if "template" in chosen:
        chosen -= {INST, "last"}
    if "last_k" in chosen:
        chosen.discard("last")
    return tuple(p for p in ORDER if p in chosen)


def positions_text(request: tuple[str, ...]) -> str:
    """The file's ``positions`` attribute: the one setting, or the settings joined by ``,``."""
    return ",".join(request)


def needs_instruction(request: tuple[str, ...]) -> bool:
    """Whether the request reads the instruction's last token (found from character offsets)."""
    return INST in request or "template" in request


def template_names(post: int) -> list[str]:
    """``inst`` then the ``post`` chat-template tokens after it (``post_1 … post_m``)."""
    return [INST] + [f"post_{j}" for j in range(1, post + 1)]


def last_k_names(k: int) -> list[str]:
    """``[last-(k-1), …, last-1, last]``, oldest first."""
    return [f"last-{k - 1 - j}" if j < k - 1 else "last" for j in range(k)]


def layout(request: tuple[str, ...], k: int = 1, post: int = 0) -> Layout:
    """The stored positions of a :func:`normalize`-d request; ``k`` for ``last_k``, ``post`` (m) the
    template tokens after the instruction (0 for raw prompts, where ``inst`` is the last token and
    ``last`` is stored once, named ``inst``)."""
    tokens: dict[int, str] = {}  # offset -> name; the first name given to a token keeps it
    if "template" in request:
        for j, name in enumerate(template_names(post)):
            tokens.setdefault(post - j, name)
    if INST in request:
        tokens.setdefault(post, INST)
    if "last_k" in request:
        for j, name in enumerate(last_k_names(k)):
            tokens.setdefault(k - 1 - j, name)
    if "last" in request:
        tokens.setdefault(0, "last")
    offsets: list[int | None] = sorted(tokens, reverse=True)
    names = [tokens[o] for o in offsets if o is not None]
    if "mean" in request:
        offsets.append(None)
        names.append("mean")
    return Layout(names, offsets)
