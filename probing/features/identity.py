"""The one rule for "these activations come from the same model and prompt format".

Used wherever features meet a probe or other features: a probe applied to another feature file
(monitor --eval / --calibrate, transfer tests, grafting with --probe_ckpt) and a data module's
``--data.test_path``; and, for the model alone (:func:`model_mismatch`), wherever features or a
probe of them meet a loaded model (``probing monitor``, ``probing graft``). The rendered prompt
decides what the model saw, so the template, the system prompt and the stored positions belong to
the identity as much as the weights do.
"""

from __future__ import annotations

from typing import Any

from probing.errors import ProbingError

# checked in this order; the first difference is reported
IDENTITY_MATCH_KEYS = (
    "gguf_sha256",
    "model",
    "hidden_size",
    "num_layers",
    "template",
    "system_prompt",
    "positions",
)
# What a probe checkpoint records of its training features (its ``feature_meta`` hyperparameter).
IDENTITY_KEYS = (
    "model", "gguf_sha256", "model_revision", "template", "system_prompt", "positions",
    "hidden_size", "num_layers", "num_positions", "position_names", "position_offsets",
)  # fmt: skip
# Refusal verdicts meeting features (``probing refusal --features``): the model and what it was shown.
VERDICT_MATCH_KEYS = ("gguf_sha256", "model", "model_revision", "template", "system_prompt")
# "" is a value for these ("no system prompt"); for the others it means "not recorded"
_EMPTY_IS_A_VALUE = ("system_prompt",)


def feature_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What feature metadata say about the model and prompt format they come from (``IDENTITY_KEYS``),
    with the stored positions' count and names (the monitor picks ``--data.position`` by them)."""
    return {k: meta.get(k) for k in IDENTITY_KEYS}


# The model alone (a loaded model meeting features or a probe of them): weights, then shape.
MODEL_MATCH_KEYS = ("gguf_sha256", "model", "model_revision", "hidden_size", "num_layers")


def loaded_model_identity(lm: Any) -> dict[str, Any]:
    """The ``MODEL_MATCH_KEYS`` of a :class:`~probing.models.load.LoadedModel`."""
    return {
        "model": lm.meta.get("model"),
        "gguf_sha256": lm.meta.get("gguf_sha256"),
        "model_revision": lm.meta.get("model_revision"),
        "hidden_size": int(lm.model.config.hidden_size),
        "num_layers": lm.parts.num_layers,
    }


def model_mismatch(meta: dict[str, Any], model: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first ``MODEL_MATCH_KEYS`` difference between features' metadata and a loaded model's
    :func:`loaded_model_identity`."""
    return identity_mismatch(meta, model, MODEL_MATCH_KEYS)


def shown(value: Any) -> Any:
    """A value for a mismatch message: a sha256 shortened to 12 hex digits, others as they are."""
    return value[:12] if isinstance(value, str) and len(value) == 64 else value


def identity_mismatch(
    a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...] = IDENTITY_MATCH_KEYS
) -> tuple[str, Any, Any] | None:
    """The first of ``keys`` on which two feature metadata differ, as ``(key, a's, b's)``, or None.

    A key either side does not record (older files and checkpoints) is not compared; the model name
    and revision are not compared when both sides carry the GGUF's sha256 (the weights' hash decides).
    """
    for key in keys:
        if key in ("model", "model_revision") and a.get("gguf_sha256") and b.get("gguf_sha256"):
            continue
        unknown = (None,) if key in _EMPTY_IS_A_VALUE else (None, "")
        x, y = a.get(key), b.get(key)
        if x in unknown or y in unknown:
            continue
        if x != y:
            return key, x, y
    return None


def require_same_identity(a: dict[str, Any], b: dict[str, Any], message: str, **names: Any) -> None:
    """Raise :class:`ProbingError` when ``a`` and ``b`` differ (:func:`identity_mismatch`).

    ``message`` is formatted with ``key`` and its two values ``a`` and ``b``, plus ``names`` (paths,
    options); it says which file differs from which and what to change.
    """
    diff = identity_mismatch(a, b)
    if diff is not None:
        key, x, y = diff
        raise ProbingError(message.format(key=key, a=x, b=y, **names))
