"""The head every prompt of an extraction starts with (a chat template's system turn), run once.

Its per-layer states are kept and its KV cache is repeated for each batch, which then runs only
its tails (:func:`probing.models.batching.inputs_after_head`). :meth:`SharedHead.states` puts the
head's states back in front of each layer's tail states in the left-padded layout of a batch run
without the head, so that selecting positions (last, last k, the mean over every prompt token) is
the same code either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from probing.models.batching import (
    MIN_SHARED,
    cache_of,
    common_prefix,
    inputs_after_head,
    plain_cache,
)
from probing.models.lookup import ModelParts
from probing.progress import progress_bar


class SharedHead:
    """The first ``len(ids)`` tokens of every sequence: their states at every layer and their cache."""

    def __init__(
        self,
        parts: ModelParts,
        ids: Sequence[int],
        device: torch.device,
        pad_id: int,
        progress: bool = False,
    ):
        """``progress``: a bar over the layers of this one forward pass (a long prompt's head takes
        as long as a whole extraction of short ones)."""
        self.parts, self.ids, self.pad_id = parts, list(ids), pad_id
        self.mask = torch.ones((1, len(self.ids)), dtype=torch.long, device=device)
        self._states: list[torch.Tensor | None] = [None] * parts.num_layers
        self._order: torch.Tensor | None = None
        desc = f"shared prefix ({len(self.ids)} tokens)"
        bar = progress_bar(parts.num_layers, desc, "layer", progress)

        def keep(index: int, h: torch.Tensor) -> None:
            self._states[index] = h.detach()
            bar.update(1)

        with bar, parts.capture(range(parts.num_layers), keep):
            out = parts.backbone(
                input_ids=torch.tensor([self.ids], device=device),
                attention_mask=self.mask,
                position_ids=torch.arange(len(self.ids), device=device)[None],
                use_cache=True,
            )
        self.cache = cache_of(out)

    @classmethod
    def of(
        cls,
        parts: ModelParts,
        seqs: Sequence[Sequence[int]],
        device: torch.device,
        pad_id: int,
        min_shared: int = MIN_SHARED,
        progress: bool = False,
    ) -> SharedHead | None:
        """The head all of ``seqs`` share, run once; ``None`` when it is shorter than ``min_shared``
        tokens or the model's cache cannot be repeated after it (:func:`plain_cache`)."""
        shared = common_prefix(seqs)
        if shared < min_shared:
            return None
        head = cls(parts, seqs[0][:shared], device, pad_id, progress)
        return head if plain_cache(head.cache, width=shared + 1) else None

    def fits(self, seqs: Sequence[Sequence[int]]) -> bool:
        """Every sequence starts with the head and goes on after it, and the cache holds the batch."""
        n = len(self.ids)
        return all(len(s) > n and list(s[:n]) == self.ids for s in seqs) and plain_cache(
            self.cache, width=max(len(s) for s in seqs)
        )

    def inputs(self, backbone: torch.nn.Module, seqs: Sequence[Sequence[int]]) -> dict[str, Any]:
        """Forward arguments for the tails of ``seqs`` after the head (check :meth:`fits` first);
        remembers where each row's tokens sit for :meth:`states`."""
        n = len(self.ids)
        tails = [s[n:] for s in seqs]
        inputs = inputs_after_head(backbone, self.cache, self.mask, tails, self.pad_id)
        # head | padding | tail  ->  padding | head | tail (a stable sort puts the zeros first)
        self._order = inputs["attention_mask"].sort(dim=1, stable=True).indices
        return inputs

    def states(self, index: int, tail: torch.Tensor) -> torch.Tensor:
        """Layer ``index`` of the batch of the last :meth:`inputs`: head and tail states
        ``[B, H + T, D]`` in the layout of that batch left-padded and run whole."""
        head = self._states[index].to(tail).expand(tail.shape[0], -1, -1)
        full = torch.cat([head, tail], dim=1)
        order = self._order.to(full.device)
        return full.gather(1, order[..., None].expand(-1, -1, full.shape[-1]))
