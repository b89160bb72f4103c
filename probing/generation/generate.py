"""Batched greedy continuations of rendered prompts, left-padded with matching position ids.

A plain loop over the model's forward with its KV cache, not ``model.generate``: ``generate`` fills
unset options from the checkpoint's ``generation_config`` (a hub model's ``repetition_penalty``,
sampling, …), and the refusal evaluation must be plain greedy decoding whatever the checkpoint says.
Batches are length-sorted (less padding); results come back in input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from probing.models.batching import (
    MIN_SHARED,
    cache_arg_name,
    cache_of,
    common_prefix,
    copy_cache,
    inputs_after_head,
    last_logits,
    left_pad,
    pad_token_id,
    plain_cache,
    position_ids_from_mask,
)
from probing.models.load import LoadedModel
from probing.progress import progress_bar


@dataclass
class Generation:
    """Continuations in input order: text (special tokens dropped), new token ids, EOS reached."""

    text: list[str]
    token_ids: list[list[int]]
    stopped: list[bool]


def stop_token_ids(lm: LoadedModel) -> set[int]:
    """The tokenizer's EOS plus the model's ``generation_config.eos_token_id`` (e.g. ``<|im_end|>``)."""
    ids: set[int] = set()
    for value in (
        getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None),
        getattr(lm.tokenizer, "eos_token_id", None),
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, Iterable):
            ids.update(int(v) for v in value)
    return ids


@dataclass
class Prefilled:
    """A batch after its prompt pass: what greedy decoding continues from. Rows are left-padded
    (padding may also sit after a shared head, see :func:`prefill_batches`).

    ``cache`` is the KV cache (``None`` when nothing was run); ``mask`` ``[R, T]`` covers it;
    ``positions`` ``[R, 1]`` are the position ids of each row's last token; ``logits`` ``[R, V]``
    the next-token logits (``None`` when the caller runs the next token itself).
    """

    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor
    logits: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])


@torch.inference_mode()
def prefill(lm: LoadedModel, seqs: Sequence[Sequence[int]]) -> Prefilled:
    """One left-padded forward pass over ``seqs`` (an empty sequence is a row of padding only)."""
    ids, mask = left_pad(seqs, pad_token_id(lm.tokenizer)) if seqs else (None, None)
    if ids is None or ids.shape[1] == 0:
        empty = torch.zeros((len(seqs), 0), dtype=torch.long, device=lm.input_device)
        return Prefilled(None, empty, torch.full((len(seqs), 1), -1, device=lm.input_device))
    device = lm.input_device
    ids, mask = ids.to(device), mask.to(device)
    positions = position_ids_from_mask(mask)
    out = lm.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=last_logits(),
    )
    return Prefilled(cache_of(out), mask, positions[:, -1:], out.logits[:, -1])


@torch.inference_mode()
def _prefill_after(lm: LoadedModel, head: Prefilled, tails: Sequence[Sequence[int]]) -> Prefilled:
    """Rows ``head + tail``: the shared head's cache repeated, the tails left-padded after it."""
    inputs = inputs_after_head(lm.model, head.cache, head.mask, tails, pad_token_id(lm.tokenizer))
    out = lm.model(**inputs, logits_to_keep=last_logits())
    positions = inputs["position_ids"]
    return Prefilled(cache_of(out), inputs["attention_mask"], positions[:, -1:], out.logits[:, -1])


def prefill_batches(
    lm: LoadedModel,
    seqs: Sequence[Sequence[int]],
    batch_size: int,
    min_shared: int | None = MIN_SHARED,
) -> list[Prefilled]:
    """Prompt passes over ``seqs`` (give them length-sorted), ``batch_size`` rows at a time, joined
    into one batch where the caches allow (:func:`join`). A head of at least ``min_shared`` tokens
    common to all of them (``None``: never) runs once first, its cache shared by every row — so the
    first forward pass is then that head, not the prompts (mind hooks that act on the first pass,
    such as a graft)."""
    shared = common_prefix(seqs)
    head = None
    if min_shared is not None and shared >= min_shared:
        head = prefill(lm, [seqs[0][:shared]])
    if head is not None and not plain_cache(head.cache):
        head = None
    parts = []
    for lo in range(0, len(seqs), batch_size):
        batch = seqs[lo : lo + batch_size]
        if head is None:
            parts.append(prefill(lm, batch))
        else:
            parts.append(_prefill_after(lm, head, [s[shared:] for s in batch]))
    return join(parts)


def _joinable(parts: Sequence[Prefilled]) -> bool:
    return len(parts) > 1 and all(plain_cache(p.cache) for p in parts)


def _pad_left(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    extra = width - x.shape[dim]
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def join(parts: Sequence[Prefilled]) -> list[Prefilled]:
    """The parts' rows as one batch, in order: caches and masks left-padded to a common length (the
    padding masked out), so that batches prefilled separately (little padding each) decode together.

    Only plain full-attention caches (every layer a ``DynamicLayer``) are joined; otherwise the parts
    come back unchanged, to be decoded one by one.
    """
    if not _joinable(parts):
        return list(parts)
    width = max(p.mask.shape[1] for p in parts)
    cache = copy_cache(parts[0].cache)
    for i, joined in enumerate(cache.layers):
        joined.keys = torch.cat([_pad_left(p.cache.layers[i].keys, width, 2) for p in parts])
        joined.values = torch.cat([_pad_left(p.cache.layers[i].values, width, 2) for p in parts])
    logits = None
    if all(p.logits is not None for p in parts):
        logits = torch.cat([p.logits for p in parts])  # type: ignore[misc]
    return [
        Prefilled(
            cache,
            torch.cat([_pad_left(p.mask, width, 1) for p in parts]),
            torch.cat([p.positions for p in parts]),
            logits,
        )
    ]


@torch.inference_mode()
def greedy_continue(
    lm: LoadedModel, start: Prefilled, max_new_tokens: int, stop_ids: set[int]
) -> tuple[list[list[int]], list[bool]]:
    """Greedy new tokens after a prompt pass (each row up to, not including, its stop token).

    A row that reaches a stop token leaves the batch (its cache rows are dropped), so finished rows
    cost nothing.
    """
    if start.logits is None:
        raise ValueError("greedy_continue needs the prompt pass's next-token logits")
    mask, positions, logits, cache = start.mask, start.positions, start.logits, start.cache
    device = mask.device
    pad = pad_token_id(lm.tokenizer)
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    rows = torch.arange(start.rows, device=device)  # batch rows still generating
    table = torch.full((start.rows, max_new_tokens), pad, dtype=torch.long, device=device)
    cache_arg = cache_arg_name(lm.model)
    for step in range(max_new_tokens):
        token = logits.argmax(-1)
        table[rows, step] = token
        if step == max_new_tokens - 1:
            break
        alive = ~torch.isin(token, stops)
        if not bool(alive.all()):
            if not bool(alive.any()):
                break
            keep = alive.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, token, mask, positions = rows[keep], token[keep], mask[keep], positions[keep]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions + 1
        out = lm.model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{cache_arg: cache},
        )
        logits = out.logits[:, -1]
        cache = cache_of(out)
    new, stopped = [], []
    for row in table.tolist():
        cut = next((i for i, t in enumerate(row) if t in stop_ids), None)
        new.append(row if cut is None else row[:cut])
        stopped.append(cut is not None)
    return new, stopped


def generate(
    lm: LoadedModel,
    seqs: Sequence[Sequence[int]],
    max_new_tokens: int = 20,
    batch_size: int = 8,
    stop_ids: set[int] | None = None,
    progress: bool = False,
    decode_rows: int | None = None,
    share_head: bool = False,
) -> Generation:
    """Greedy continuations of token sequences ``seqs`` (rendered prompts), in input order.

    Prompts are length-sorted and prefilled ``batch_size`` at a time (little padding); up to
    ``decode_rows`` of them (default ``batch_size``) then decode together, their caches joined.
    ``share_head``: a head that all prompts of a decode group start with (a chat template's system
    turn) runs once for them; leave it off under hooks that act on the first forward pass (a graft).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if any(len(s) == 0 for s in seqs):
        raise ValueError("every prompt needs at least one token")
    decode_rows = max(batch_size, decode_rows or batch_size)
    stop_ids = stop_token_ids(lm) if stop_ids is None else set(stop_ids)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    tokens: list[list[int]] = [[] for _ in seqs]
    stopped = [False] * len(seqs)
    with progress_bar(len(seqs), "generate", "prompt", progress) as bar:
        for lo in range(0, len(order), decode_rows):
            group = order[lo : lo + decode_rows]
            at = 0
            rows = [seqs[i] for i in group]
            for part in prefill_batches(lm, rows, batch_size, MIN_SHARED if share_head else None):
                new, ended = greedy_continue(lm, part, max_new_tokens, stop_ids)
                for i, t, e in zip(group[at : at + part.rows], new, ended, strict=True):
                    tokens[i], stopped[i] = t, e
                at += part.rows
            bar.update(len(group))
    text = [lm.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    return Generation(text=text, token_ids=tokens, stopped=stopped)
