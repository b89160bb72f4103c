"""The one rule for "these activations come from the same model and prompt format".

Used wherever features meet a probe or other features: a probe applied to another feature file
(monitor --eval / --calibrate, transfer tests, grafting with --probe_ckpt) and a data module's
``--data.test_path``. The rendered prompt decides what the model saw, so the template, the system
prompt and the stored positions belong to the identity as much as the weights do.
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
    "hidden_size", "num_layers",
)  # fmt: skip
# "" is a value for these ("no system prompt"); for the others it means "not recorded"
_EMPTY_IS_A_VALUE = ("system_prompt",)


def feature_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What feature metadata say about the model and prompt format they come from (``IDENTITY_KEYS``)."""
    return {k: meta.get(k) for k in IDENTITY_KEYS}


def identity_mismatch(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first identity key on which two feature metadata differ, as ``(key, a's, b's)``, or None.

    A key either side does not record (older files and checkpoints) is not compared; the model name
    is not compared when both sides carry the GGUF's sha256 (the weights' hash decides).
    """
    for key in IDENTITY_MATCH_KEYS:
        if key == "model" and a.get("gguf_sha256") and b.get("gguf_sha256"):
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
