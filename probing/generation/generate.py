"""Batched greedy continuations of rendered prompts, left-padded with matching position ids.

A plain loop over the model's forward with its KV cache, not ``model.generate``: ``generate`` fills
unset options from the checkpoint's ``generation_config`` (a hub model's ``repetition_penalty``,
sampling, …), and the refusal evaluation must be plain greedy decoding whatever the checkpoint says.
Batches are length-sorted (less padding); results come back in input order.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from probing.features.activations import left_pad, position_ids_from_mask
from probing.models.load import LoadedModel


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


def pad_token_id(tokenizer: object) -> int:
    for value in (
        getattr(tokenizer, "pad_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if value is not None:
            return int(value)
    return 0


def _cache_arg(model: torch.nn.Module) -> str:
    """transformers 5 renamed ``past_key_values`` to ``cache`` (the old name warns)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def greedy_batch(
    lm: LoadedModel, seqs: Sequence[Sequence[int]], max_new_tokens: int, stop_ids: set[int]
) -> tuple[list[list[int]], list[bool]]:
    """Greedy new tokens of one left-padded batch (each row up to, not including, its stop token)."""
    if any(len(s) == 0 for s in seqs):
        raise ValueError("every prompt needs at least one token")
    pad = pad_token_id(lm.tokenizer)
    ids, mask = left_pad(seqs, pad)
    device = lm.input_device
    ids, mask = ids.to(device), mask.to(device)
    positions = position_ids_from_mask(mask)
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    done = torch.zeros(len(seqs), dtype=torch.bool, device=device)
    steps: list[torch.Tensor] = []
    out = lm.model(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
    )
    next_pos = positions[:, -1:]
    cache_arg = _cache_arg(lm.model)
    for step in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1)
        token = torch.where(done, torch.full_like(token, pad), token)
        steps.append(token)
        done |= torch.isin(token, stops)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        next_pos = next_pos + 1
        out = lm.model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=next_pos,
            use_cache=True,
            **{cache_arg: out["cache"] if "cache" in out else out["past_key_values"]},
        )
    table = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in seqs]
    new, stopped = [], []
    for row in table:
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
) -> Generation:
    """Greedy continuations of token sequences ``seqs`` (rendered prompts), in input order."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stop_ids = stop_token_ids(lm) if stop_ids is None else set(stop_ids)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    tokens: list[list[int]] = [[] for _ in seqs]
    stopped = [False] * len(seqs)
    with tqdm(total=len(seqs), unit="prompt", desc="generate", disable=not progress) as bar:
        for lo in range(0, len(order), batch_size):
            rows = order[lo : lo + batch_size]
            new, ended = greedy_batch(lm, [seqs[i] for i in rows], max_new_tokens, stop_ids)
            for i, t, e in zip(rows, new, ended, strict=True):
                tokens[i], stopped[i] = t, e
            bar.update(len(rows))
    text = [lm.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    return Generation(text=text, token_ids=tokens, stopped=stopped)
