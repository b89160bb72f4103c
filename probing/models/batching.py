"""Left-padded batches and a head shared by all of them, run once and its KV cache repeated.

A chat template puts the same head before every prompt (the system turn); generation
(:func:`probing.generation.generate.prefill_batches`), the grafting sweep and extraction
(:class:`probing.features.prefix.SharedHead`) run it once and continue each batch from its cache:
rows are then ``head | padding | tail``, with the padding masked out and position ids counted over
real tokens only.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import torch

MIN_SHARED = 4  # a shorter common head is not worth a forward pass of its own


def last_logits() -> torch.Tensor:
    """``logits_to_keep`` for the last position only, as an index (transformers' documented tensor
    form): the last hidden states are then gathered into a contiguous ``[B, 1, D]`` before the
    unembedding. The int form (``logits_to_keep=1``) slices a strided view, which the CPU's bfloat16
    matmul multiplies about 300× slower for a batch of 8 (3.6 s against 0.012 s for a 151,936-token
    vocabulary; torch 2.13, ``bench/last_logits.py``); the values are the same. The index stays on the
    CPU, which indexes a tensor on any device (a model spread over several GPUs included)."""
    return torch.tensor([-1])


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask ``[B, T]``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s) :] = torch.as_tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counting from each row's first real token (0 on padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def pad_token_id(tokenizer: object) -> int:
    for value in (
        getattr(tokenizer, "pad_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if value is not None:
            return int(value)
    return 0


def cache_arg_name(model: torch.nn.Module) -> str:
    """transformers 5 renamed ``past_key_values`` to ``cache`` (the old name warns)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(out: Any) -> Any:
    """The KV cache of a forward pass's output (transformers 5 calls it ``cache``)."""
    return out["cache"] if "cache" in out else out["past_key_values"]


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Tokens every sequence starts with (a chat template's system turn), leaving each at least one."""
    if not seqs:
        return 0
    limit = min(len(s) for s in seqs) - 1
    first = seqs[0]
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n


def plain_cache(cache: Any, width: int | None = None) -> bool:
    """A cache whose every layer is a plain full-attention ``DynamicLayer``: rows can be padded
    anywhere, repeated and joined. With ``width``, a sliding-window layer whose window holds
    ``width`` tokens (so that nothing slides out of a sequence that long) counts as plain too."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    def plain(layer: Any) -> bool:
        if type(layer) is DynamicLayer:
            return True
        return (
            width is not None
            and type(layer) is DynamicSlidingWindowLayer
            and width <= layer.sliding_window
        )

    return (
        cache is not None
        and hasattr(cache, "layers")
        and all(plain(layer) and layer.is_initialized for layer in cache.layers)
    )


def copy_cache(cache: Any) -> Any:
    """A cache object of its own over the same tensors (updates assign new tensors, so the
    original is left as it was)."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    return out


def inputs_after_head(
    model: torch.nn.Module,
    cache: Any,
    head_mask: torch.Tensor,
    tails: Sequence[Sequence[int]],
    pad_id: int,
) -> dict[str, Any]:
    """Forward arguments of ``model`` for rows ``head + tail``: a copy of the head's ``cache``
    (one row, ``head_mask`` ``[1, H]``) repeated for every tail, the tails left-padded after it.
    ``attention_mask`` ``[R, H + T]`` covers head and tails; ``position_ids`` ``[R, T]`` continue
    the head's over real tokens (the padding between head and tail is skipped)."""
    device = head_mask.device
    shared = head_mask.shape[1]
    cache = copy_cache(cache)
    cache.batch_repeat_interleave(len(tails))
    ids, tail_mask = left_pad(tails, pad_id)
    mask = torch.cat([head_mask.expand(len(tails), -1), tail_mask.to(device)], dim=1)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask,
        "position_ids": position_ids_from_mask(mask)[:, shared:],
        "use_cache": True,
        cache_arg_name(model): cache,
    }
