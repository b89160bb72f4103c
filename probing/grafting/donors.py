"""What a graft puts where: the donor states and target prompts of a feature file, at a named position.

The graft position is a stored position that is a *token* of the prompt (``position_offsets``: its
distance from the last token): ``last``, ``inst`` or ``post_j`` of a ``--positions template`` file
(or a list holding them), ``last-j`` of a ``last_k`` file. Grafting there replaces that token's
state; the ``tail`` (that token and every one after it) runs per condition, the tokens before it
are shared.

Donors: the paper's way, ``paired`` (each target prompt gets the state of its own donor prompt of the
source class, a seeded one-to-one draw, so a grafted rate is not the effect of one average vector),
the mean state of a class (``class_mean``), one row (``row``) or a vector file (``vector``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probing.errors import ProbingError
from probing.features.positions import position_names, position_offsets, resolve_position
from probing.features.store import FeatureFile
from probing.prompts.render import tokenize_rendered


def graft_position(ff: FeatureFile, position: str) -> tuple[int, int]:
    """The stored index of ``position`` and its ``tail``: how many prompt tokens, counted from the
    end, the grafted token is (1 = the last token)."""
    index = resolve_position(ff.meta, position, "--position", ff.path)
    offset = position_offsets(ff.meta)[index]  # tokens before the last; None: a mean
    if offset is None:
        names = position_names(ff.meta)
        raise ProbingError(
            f"--position {position}: {ff.path} stores {names[index]!r}, which is not one token of "
            f"the prompt (it stores {names}); graft at a token position: last, or inst / post_j "
            "of a file extracted with --positions template (or a list holding inst)"
        )
    return index, offset + 1


def class_rows(ff: FeatureFile, name: str, option: str = "--source_class") -> np.ndarray:
    names = ff.label_names
    if name not in names:
        raise ProbingError(
            f"{option} {name!r} is not a class of {ff.path} (its classes: {', '.join(names)})"
        )
    return np.flatnonzero(ff.labels == names.index(name))


def class_mean(ff: FeatureFile, name: str, position: int = -1) -> torch.Tensor:
    """Mean state ``[L, D]`` of a class at a stored position, every layer."""
    rows = class_rows(ff, name)
    return torch.from_numpy(
        np.stack([ff.layer(i, position)[rows].mean(0) for i in range(ff.num_layers)])
    )


def row_states(ff: FeatureFile, rows: np.ndarray, position: int = -1) -> torch.Tensor:
    """States ``[len(rows), L, D]`` of some rows at a stored position, every layer."""
    unique, inverse = np.unique(rows, return_inverse=True)  # HDF5 reads sorted, distinct rows
    return torch.from_numpy(np.asarray(ff.layers(position=position, rows=unique))[inverse])


def sample(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of ``rows``, a seeded draw kept in file order."""
    if len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))


def paired_rows(pool: np.ndarray, targets: np.ndarray, seed: int) -> np.ndarray:
    """One donor row of ``pool`` per target row (a seeded draw, without repeats while the pool lasts).
    A donor is never its own target while another pairing exists (a control whose donors come from
    the targets' class would otherwise graft some prompts onto themselves): such pairs swap donors."""
    if len(pool) == 0:
        raise ProbingError("--source paired: the source class has no rows to draw donors from")
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed + 1)
    draws = [rng.permutation(pool) for _ in range(-(-len(targets) // len(pool)))]
    donors = np.concatenate(draws)[: len(targets)]
    for i in np.flatnonzero(donors == targets):
        for j in rng.permutation(len(donors)):
            if donors[j] != targets[i] and targets[j] != donors[i]:
                donors[i], donors[j] = donors[j], donors[i]
                break
    return donors


def target_sequences(
    ff: FeatureFile, rows: np.ndarray, tokenizer: Any, tail: int = 1
) -> tuple[list[list[int]], list[str]]:
    """Token ids (as extraction tokenized them) and prompts of feature-file rows; every prompt must
    be longer than the graft's ``tail``."""
    rendered = ff.column("rendered")
    prompts = ff.column("prompt")
    ids, _ = tokenize_rendered(tokenizer, [rendered[i] for i in rows])
    short = [int(r) for r, s in zip(rows, ids, strict=True) if len(s) < tail]
    if short:
        raise ProbingError(
            f"rows {short[:5]} of {ff.path} have fewer than {tail} tokens, the graft position's "
            "distance from the end; check that the file was extracted with this tokenizer"
        )
    return ids, [prompts[i] for i in rows]
