"""The one rule for "these activations come from the same model and prompt format".

Used wherever features meet a probe or other features: a probe applied to another feature file
(monitor --eval / --calibrate, transfer tests, grafting with --probe_ckpt) and a data module's
``--data.test_path``; and, for the model alone (:func:`model_mismatch`), wherever features or a
probe of them meet a loaded model (``probing monitor``, ``probing graft``). The rendered prompt
decides what the model saw, so the template, the system prompt and the stored positions belong to
the identity as much as the weights do.

The model a feature file (or a probe of it) came from, to load it again: :func:`recorded_model`,
overridden from the command line by one :class:`ModelOverride` (``--model.name``, ``--model.device``,
``--model.dtype``, ``--model.trust_remote_code``) in every command that loads it (graft, the
``GraftingCallback``, monitor, lens's tokenizer); :func:`require_same_model` checks what was loaded.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from probing.errors import ProbingError
from probing.models.config import DTYPE_NAMES, ModelConfig, ModelOverride

if TYPE_CHECKING:
    from probing.models.load import LoadedModel

log = logging.getLogger(__name__)

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


def model_mismatch(meta: dict[str, Any], model: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first ``MODEL_MATCH_KEYS`` difference between features' metadata and a loaded model's
    :attr:`~probing.models.load.LoadedModel.identity`."""
    return identity_mismatch(meta, model, MODEL_MATCH_KEYS)


def require_same_model(
    meta: dict[str, Any], lm: LoadedModel, what: str = "the features", option: str = "--model.name"
) -> None:
    """Refuse a loaded model other than the one ``meta`` (features' metadata, or a probe's
    ``feature_meta``) came from, in one line: ``what`` names the features or probe (``f.h5``,
    ``--ckpt p.ckpt``), ``option`` the setting that chose the model."""
    mine = lm.identity
    diff = model_mismatch(meta, mine)
    if diff is None:
        return
    key, want, found = diff
    raise ProbingError(
        f"{what} is from model {meta.get('model')!r} (num_layers {meta.get('num_layers')}, "
        f"hidden_size {meta.get('hidden_size')}) but the loaded model is {mine['model']!r} "
        f"(num_layers {mine['num_layers']}, hidden_size {mine['hidden_size']}; {key} "
        f"{shown(want)} there, {shown(found)} here); leave {option} unset to load the recorded "
        "model, or set it to the same weights"
    )


def _known_fields(recorded: dict[str, Any], known: set[str], dtypes: set[str]) -> dict[str, Any]:
    """The recorded model config's fields that load a model: text values of ``known`` keys, but
    never ``trust_remote_code``; others are ignored with a warning (a newer or edited file)."""
    out, ignored = {}, []
    for key, value in recorded.items():
        if key == "trust_remote_code":
            continue
        valid = value is None or (isinstance(value, str) and (key != "dtype" or value in dtypes))
        if key in known and valid:
            out[key] = value
        else:
            ignored.append(f"{key}={value!r}")
    if ignored:
        log.warning("ignoring %s of the recorded model config", ", ".join(ignored))
    return out


def recorded_model(
    meta: dict[str, Any], override: ModelOverride | None = None, option: str = "--model.name"
) -> ModelConfig:
    """The model ``meta`` (features' metadata, or a probe's ``feature_meta`` with its training file's
    ``config``) came from, as recorded at extraction, with ``override`` applied.

    ``trust_remote_code`` comes from ``override`` only; keys of the recorded config that
    :class:`~probing.models.config.ModelConfig` does not know are ignored (a newer or edited file);
    a ``name`` other than the recorded one drops the recorded GGUF file name and revision (they
    belong to the recorded location). ``option`` is named when the model cannot be known.
    """
    override = override or ModelOverride()
    config = meta.get("config")
    recorded = config.get("model") if isinstance(config, dict) else None
    recorded = dict(recorded) if isinstance(recorded, dict) else {}
    if override.name is None and meta.get("model_source") == "object":
        raise ProbingError(
            f"the features were extracted from an in-memory model {meta.get('model')!r} that cannot "
            f"be loaded by name; give its weights with {option} NAME_OR_FOLDER"
        )
    kwargs = _known_fields(recorded, {f.name for f in fields(ModelConfig)}, set(DTYPE_NAMES))
    recorded_name = kwargs.get("name") or meta.get("model")
    if not recorded_name and override.name is None:
        raise ProbingError(f"the features record no model; give it with {option} NAME_OR_FOLDER")
    kwargs["name"] = override.name or recorded_name
    if kwargs["name"] != recorded_name:
        kwargs["gguf_file"] = kwargs["revision"] = None
    else:
        kwargs["revision"] = kwargs.get("revision") or meta.get("model_revision") or None
    kwargs["dtype"] = override.dtype or kwargs.get("dtype") or meta.get("dtype") or "float32"
    kwargs["device"] = override.device or kwargs.get("device") or "cpu"
    if recorded.get("trust_remote_code") and not override.trust_remote_code:
        log.warning(
            "the features were extracted with trust_remote_code; it is not taken from a file: "
            "pass --model.trust_remote_code true if you trust %s",
            kwargs["name"],
        )
    return ModelConfig(**kwargs, trust_remote_code=override.trust_remote_code)


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
