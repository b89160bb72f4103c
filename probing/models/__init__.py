"""Stage 1b: causal LMs, their parts (layers, final norm, unembedding) and built-in models.

The names below are imported on first use, so that a light submodule (``probing.models.config``, read
by ``--help``) does not import torch.
"""

from probing.lazy import lazy_names

__all__, __getattr__ = lazy_names(
    __name__,
    {
        "builtin": ["BUILTIN_MODELS"],
        "config": ["ModelConfig"],
        "lookup": ["ARCHITECTURES", "ModelParts", "model_parts"],
        "load": [
            "LoadedModel",
            "ModelSource",
            "from_pretrained_objects",
            "load_model",
            "load_tokenizer",
            "model_identity",
            "resolve_model",
        ],
    },
)
