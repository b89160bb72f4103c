"""Render prompts as the model sees them: its chat template with the generation prompt, or raw."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from probing.errors import ProbingError

log = logging.getLogger(__name__)

Template = Literal["auto", "chat", "raw"]


@dataclass
class Rendered:
    text: list[str]
    ids: list[list[int]]
    template: str
    doubled_bos: int = 0


def resolve_template(tokenizer: Any, template: Template) -> str:
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "auto":
        return "chat" if has_chat else "raw"
    if template == "chat" and not has_chat:
        raise ProbingError("the tokenizer has no chat template (a base model?); use --template raw")
    return template


def render_text(
    tokenizer: Any, prompt: str, template: str, system_prompt: str | None = None
) -> str:
    if template == "raw":
        return prompt
    messages = [{"role": "user", "content": prompt}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # jinja raises TemplateError for e.g. an unsupported system role
        raise ProbingError(
            f"the chat template rejected the prompt ({err}); check --system_prompt"
        ) from None


def render(
    tokenizer: Any,
    prompts: list[str],
    template: Template = "auto",
    system_prompt: str | None = None,
) -> Rendered:
    """Render and tokenize ``prompts``; a doubled BOS (template text + tokenizer's own) is removed."""
    kind = resolve_template(tokenizer, template)
    texts = [render_text(tokenizer, p, kind, system_prompt) for p in prompts]
    ids, doubled = tokenize_rendered(tokenizer, texts)
    if doubled:
        log.warning(
            "doubled BOS token in %d of %d rendered prompts (the template writes one and the tokenizer "
            "adds one); kept one",
            doubled,
            len(prompts),
        )
    return Rendered(text=texts, ids=ids, template=kind, doubled_bos=doubled)


def tokenize_rendered(tokenizer: Any, texts: list[str]) -> tuple[list[list[int]], int]:
    """Token ids of rendered texts as extraction saw them, and how many had a doubled BOS removed."""
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
    bos = getattr(tokenizer, "bos_token_id", None)
    doubled = 0
    ids = []
    for seq in encoded:
        seq = list(seq)
        if bos is not None and len(seq) >= 2 and seq[0] == bos and seq[1] == bos:
            seq = seq[1:]
            doubled += 1
        ids.append(seq)
    return ids, doubled
