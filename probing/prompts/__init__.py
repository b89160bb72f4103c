"""Stage 1a: prompt sources (built-in sets, user files) and their rendering."""

from probing.prompts.render import Rendered, render, render_text, resolve_template
from probing.prompts.sources import BUILTIN_SETS, PromptSource, load_prompts, load_source

__all__ = [
    "BUILTIN_SETS",
    "PromptSource",
    "Rendered",
    "load_prompts",
    "load_source",
    "render",
    "render_text",
    "resolve_template",
]
