"""Stage 1b: causal LMs, their parts (layers, final norm, unembedding) and built-in models."""

from probing.models.builtin import BUILTIN_MODELS
from probing.models.load import (
    LoadedModel,
    ModelConfig,
    ModelSource,
    from_pretrained_objects,
    load_model,
    load_tokenizer,
    model_identity,
    resolve_model,
)
from probing.models.lookup import ARCHITECTURES, ModelParts, model_parts

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
