"""Stage 1b: causal LMs, their parts (layers, final norm, unembedding) and built-in models.

The names below are imported on first use, so that a light submodule (``probing.models.config``, read
by ``--help``) does not import torch.
"""

from typing import Any

__all__ = [
    "ARCHITECTURES",
    "BUILTIN_MODELS",
    "LoadedModel",
    "ModelConfig",
    "ModelParts",
    "ModelSource",
    "from_pretrained_objects",
    "load_model",
    "load_tokenizer",
    "model_identity",
    "model_parts",
    "resolve_model",
]


def __getattr__(name: str) -> Any:
    if name == "BUILTIN_MODELS":
        from probing.models import builtin

        return builtin.BUILTIN_MODELS
    if name == "ModelConfig":
        from probing.models import config

        return config.ModelConfig
    if name in {"ARCHITECTURES", "ModelParts", "model_parts"}:
        from probing.models import lookup

        return getattr(lookup, name)
    if name in __all__:
        from probing.models import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
