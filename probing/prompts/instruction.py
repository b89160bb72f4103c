"""Where the user's instruction ends in a rendered prompt: the token holding its last character.

The chat template is rendered once around a marker standing for the user's message; the text after
the marker is the template's tail (``<|im_end|>\\n<|im_start|>assistant\\n``), the same for every
prompt. A rendered prompt's instruction ends where that tail begins, and the tokenizer's character
offsets say which token holds its last character. Truncation on the left or a system turn in front
change nothing. ``raw`` prompts have no tail: the instruction ends at the last token.
"""

from __future__ import annotations

from typing import Any

from probing.errors import ProbingError
from probing.prompts.render import Rendered, render_text

MARKER = "PROBING-INSTRUCTION-MARKER"


def template_tail(tokenizer: Any, template: str, system_prompt: str | None = None) -> str:
    """The text a chat template writes after the user's message (``""`` for ``raw``)."""
    if template == "raw":
        return ""
    text = render_text(tokenizer, MARKER, "chat", system_prompt)
    at = text.rfind(MARKER)
    if at < 0:
        raise ProbingError(
            "--positions template: the chat template does not write the user's message as given, "
            "so the instruction's end cannot be found; use --positions last"
        )
    return text[at + len(MARKER) :]


def instruction_tokens(
    tokenizer: Any, rendered: Rendered, system_prompt: str | None = None
) -> list[int]:
    """Per row, the index in ``rendered.ids`` of the token holding the user's last character
    (``raw``: the last token); ``-1`` when no token does (an empty message after a template that
    writes nothing before it)."""
    if rendered.template == "raw":
        return [len(s) - 1 for s in rendered.ids]
    if not getattr(tokenizer, "is_fast", False):
        raise ProbingError(
            "--positions template needs the tokenizer's character offsets, which a slow "
            f"(Python) tokenizer has not ({type(tokenizer).__name__}); use --positions last"
        )
    tail = template_tail(tokenizer, rendered.template, system_prompt)
    encoded = tokenizer(rendered.text, add_special_tokens=True, return_offsets_mapping=True)
    out = []
    for text, ids, full, offsets in zip(
        rendered.text, rendered.ids, encoded["input_ids"], encoded["offset_mapping"], strict=True
    ):
        if not text.endswith(tail):
            raise ProbingError(
                "--positions template: the chat template's text after the user's message differs "
                f"between prompts (expected {tail!r} at the end of {text[-80:]!r}); use --positions last"
            )
        end = len(text) - len(tail)  # the instruction's characters end here
        offsets = [tuple(o) for o in offsets][len(full) - len(ids) :]  # a doubled BOS was dropped
        if list(full[len(full) - len(ids) :]) != list(ids):
            raise RuntimeError("re-tokenizing a rendered prompt gave other tokens")
        inst = -1
        for j, (start, stop) in enumerate(offsets):
            if start < end and stop > start:  # spans no text: special tokens the tokenizer adds
                inst = j
        out.append(inst)
    return out
