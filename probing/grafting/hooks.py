"""Logit grafting with forward hooks: replace the hidden state at one layer and position, in prefill.

No copy of any transformers model file: :meth:`ModelParts.replace` hooks the module of the layer
(removed on exit). Layer indices follow the project convention — layer 0 is the embedding output (the
input of the first decoder block), layer i the output of the i-th decoder block, and the last layer is
after the final norm — so the state replaced at layer ``l`` is exactly the state a feature file stores
at layer ``l``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from probing.errors import ProbingError
from probing.models.lookup import ModelParts


def check_graft(
    parts: ModelParts, layer: int, vectors: torch.Tensor, batch: int | None = None
) -> torch.Tensor:
    """Validate ``layer`` and ``vectors`` (``[D]`` or ``[B, D]``); returns ``[B or 1, D]``."""
    if not 0 <= layer < parts.num_layers:
        raise ProbingError(
            f"graft layer {layer} is out of range: the model has layers 0..{parts.num_layers - 1} "
            "(0 = embeddings); change --layers"
        )
    hidden = parts.unembed.weight.shape[-1]
    if vectors.ndim == 1:
        vectors = vectors.unsqueeze(0)
    if vectors.ndim != 2 or vectors.shape[-1] != hidden:
        raise ProbingError(
            f"graft vector has shape {tuple(vectors.shape)}, expected [{hidden}] or [batch, {hidden}] "
            "(the model's hidden size); check the graft source"
        )
    if batch is not None and vectors.shape[0] not in (1, batch):
        raise ProbingError(f"{vectors.shape[0]} graft vectors for a batch of {batch} prompts")
    return vectors


def _replace(
    h: torch.Tensor, vectors: torch.Tensor, position: int, rows: torch.Tensor | None
) -> torch.Tensor:
    h = h.clone()
    vectors = vectors.to(device=h.device, dtype=h.dtype)
    if rows is None:
        h[:, position, :] = vectors.expand(h.shape[0], -1)
    else:
        h[rows.to(h.device), position, :] = vectors.expand(len(rows), -1)
    return h


@contextmanager
def graft(
    parts: ModelParts,
    layer: int,
    vectors: torch.Tensor,
    position: int = -1,
    rows: torch.Tensor | None = None,
) -> Iterator[None]:
    """Within the block, forward passes have the state at ``layer`` and ``position`` replaced.

    ``rows`` (batch indices) limits the graft to those rows of the batch, so that several grafts
    (e.g. one per layer of a sweep) share one forward pass; ``vectors`` then has one row per
    grafted row, or one for all. Only the first forward pass (the prefill of a prompt batch) is grafted; later passes of the
    same generation (one new token each) run unmodified, so the grafted state lives on in the KV cache
    only, as in the paper. Hooks are registered with ``prepend=True`` so that anything else hooked on
    the same module (extraction, ``output_hidden_states``) sees the grafted state.
    """
    vectors = check_graft(parts, layer, vectors, None if rows is None else len(rows))
    state = {"done": False}

    def apply(h: torch.Tensor) -> torch.Tensor:
        if state["done"]:
            return h
        if rows is None and vectors.shape[0] not in (1, h.shape[0]):
            raise ProbingError(
                f"{vectors.shape[0]} graft vectors for a batch of {h.shape[0]} prompts"
            )
        state["done"] = True
        return _replace(h, vectors, position, rows)

    with parts.replace(layer, apply):
        yield
