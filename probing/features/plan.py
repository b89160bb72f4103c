"""The extraction plan: prompts rendered, tokenized, length-sorted and checked against the context, and
the fingerprint of everything that determines a feature file's content."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from probing.errors import ProbingError
from probing.features.layout import Layout, layout, needs_instruction, normalize, positions_text
from probing.features.store import RowTable
from probing.prompts.instruction import instruction_tokens
from probing.prompts.render import Rendered, render
from probing.prompts.sources import PromptSource, load_prompts

log = logging.getLogger(__name__)


class PlanSettings(Protocol):
    """The settings that decide an extraction's rows and content (``ExtractConfig`` has them)."""

    prompts: list[PromptSource]
    template: str
    system_prompt: str | None
    positions: str | list[str]
    k: int
    lens_top_k: int
    max_tokens: int | None
    too_long: str
    storage_dtype: str


@dataclass
class Plan:
    """Prompts in processing order with everything the file records about them."""

    rows: RowTable
    ids: list[list[int]]
    label_names: list[str]
    template: str
    prompt_hash: str
    skipped: dict[str, int]
    position_names: list[str] = field(default_factory=lambda: ["last"])
    position_offsets: list[int | None] = field(default_factory=lambda: [0])


def context_length(tokenizer: Any, model_length: int | None) -> int:
    """The model's context length, else the tokenizer's ``model_max_length``, else 4096."""
    for value in (model_length, getattr(tokenizer, "model_max_length", None)):
        if isinstance(value, int) and 0 < value < 10**7:
            return value
    return 4096


def plan_rows(
    cfg: PlanSettings,
    tokenizer: Any,
    context_length: int,
    loaded: tuple[list[str], list[int], list[int], list[str]] | None = None,
) -> Plan:
    """Load (unless ``loaded``: :func:`load_prompts` of ``cfg.prompts``), render and tokenize the
    prompts, drop or truncate the unusable ones, sort by length."""
    prompts, labels, sources, label_names = loaded or load_prompts(cfg.prompts)
    rendered = render(tokenizer, prompts, cfg.template, cfg.system_prompt)
    limit = min(cfg.max_tokens or context_length, context_length)
    post, stored = _positions(cfg, tokenizer, rendered)
    names, need = stored.names, stored.tokens_needed
    m = stored.offsets[0] if post is not None else None  # the instruction's offset
    skipped = {"too_long": 0, "too_short": 0, "template_boundary": 0}
    keep: list[int] = []
    truncated: set[int] = set()
    ids = rendered.ids
    for i, seq in enumerate(ids):
        if post is not None and post[i] != m:
            skipped["template_boundary"] += 1
            continue
        if len(seq) > limit:
            if cfg.too_long == "skip":
                skipped["too_long"] += 1
                continue
            ids[i] = seq[-limit:]
            truncated.add(i)
        if len(ids[i]) < need:
            skipped["too_short"] += 1
            continue
        keep.append(i)
    if skipped["too_long"]:
        log.warning(
            "skipped %d prompts longer than %d tokens (--too_long truncate keeps them)",
            skipped["too_long"],
            limit,
        )
    if truncated:
        log.warning("truncated %d prompts from the left to %d tokens", len(truncated), limit)
    if skipped["too_short"]:
        log.warning(
            "skipped %d prompts shorter than the %d tokens the stored positions need",
            skipped["too_short"],
            need,
        )
    if skipped["template_boundary"]:
        log.warning(
            "skipped %d prompts whose last token also holds chat-template text (their end merges "
            "with the template's): the other prompts have %d template tokens after the instruction",
            skipped["template_boundary"],
            m,
        )
    if not keep:
        raise ProbingError(
            f"no prompt is usable (all longer than {limit} tokens or shorter than k); check --max_tokens"
        )
    digest = hashlib.sha256()
    for i in range(len(prompts)):
        digest.update(json.dumps([rendered.text[i], label_names[labels[i]]]).encode())
        digest.update(b"\n")
    order = sorted(keep, key=lambda i: -len(ids[i]))  # stable: ties keep prompt order
    # a truncated row records the text of the tokens it kept (what the model actually saw)
    used = {i: tokenizer.decode(ids[i]) for i in order if i in truncated}
    rows = RowTable(
        prompt=[prompts[i] for i in order],
        rendered=[used.get(i, rendered.text[i]) for i in order],
        label=np.array([labels[i] for i in order], dtype=np.int64),
        prompt_index=np.array(order, dtype=np.int64),
        source=np.array([sources[i] for i in order], dtype=np.int64),
        n_tokens=np.array([len(ids[i]) for i in order], dtype=np.int64),
        truncated=np.array([i in truncated for i in order], dtype=bool),
    )
    return Plan(
        rows=rows,
        ids=[ids[i] for i in order],
        label_names=label_names,
        template=rendered.template,
        prompt_hash=digest.hexdigest(),
        skipped={k: v for k, v in skipped.items() if v},
        position_names=names,
        position_offsets=stored.offsets,
    )


def _positions(
    cfg: PlanSettings, tokenizer: Any, rendered: Rendered
) -> tuple[list[int] | None, Layout]:
    """Per row the number of tokens after the instruction's last (None unless ``inst`` or
    ``template`` is asked for), and the stored positions. The template's count m is the one most
    rows have (a prompt whose last characters share a token with the template's has fewer and is
    skipped)."""
    request = normalize(cfg.positions)
    if not needs_instruction(request):
        return None, layout(request, k=cfg.k)
    inst = instruction_tokens(tokenizer, rendered, cfg.system_prompt)
    post = [len(s) - 1 - j if j >= 0 else -1 for s, j in zip(rendered.ids, inst, strict=True)]
    counts = Counter(m for m in post if m >= 0)
    if not counts:
        raise ProbingError(
            "--positions template: no prompt has a token of the user's message; check --prompts"
        )
    m = max(counts, key=lambda m: (counts[m], -m))
    return post, layout(request, k=cfg.k, post=m)


def slice_plan(plan: Plan, start: int, stop: int) -> Plan:
    r = plan.rows
    rows = RowTable(
        prompt=r.prompt[start:stop],
        rendered=r.rendered[start:stop],
        label=r.label[start:stop],
        prompt_index=r.prompt_index[start:stop],
        source=r.source[start:stop],
        n_tokens=r.n_tokens[start:stop],
        truncated=None if r.truncated is None else r.truncated[start:stop],
    )
    return dataclasses.replace(plan, rows=rows, ids=plan.ids[start:stop])


def fingerprint(cfg: PlanSettings, identity: dict[str, Any], plan: Plan) -> str:
    """Hash of everything that determines the file's content (not batch size or progress)."""
    request = normalize(cfg.positions)
    content = {
        "identity": identity,
        "template": plan.template,
        "system_prompt": cfg.system_prompt or "",
        "positions": positions_text(request),
        "k": cfg.k if "last_k" in request else None,
        "lens_top_k": cfg.lens_top_k,
        "storage_dtype": cfg.storage_dtype,
        "max_tokens": cfg.max_tokens,
        "too_long": cfg.too_long,
        "prompt_hash": plan.prompt_hash,
        "format_version": 1,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
