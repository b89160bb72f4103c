"""Load a causal LM by built-in name, hub id, local folder or GGUF file."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from probing.errors import ProbingError
from probing.models import cache
from probing.models.assemble import known_sha256, sha256_file
from probing.models.builtin import BUILTIN_MODELS
from probing.models.config import ModelConfig
from probing.models.hub import offline_folder
from probing.models.lookup import ModelParts, model_parts
from probing.models.precision import auto_dtype

log = logging.getLogger(__name__)

SourceKind = Literal["builtin", "gguf", "local", "hub"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    parts: ModelParts
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.parts.layers[0].parameters().__next__().device

    @property
    def input_device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies the weights and shape, to compare with features' metadata
        (``probing.features.identity.MODEL_MATCH_KEYS``)."""
        return {
            "model": self.meta.get("model"),
            "gguf_sha256": self.meta.get("gguf_sha256"),
            "model_revision": self.meta.get("model_revision"),
            "hidden_size": int(self.model.config.hidden_size),
            "num_layers": self.parts.num_layers,
        }


@dataclass(frozen=True)
class ModelSource:
    """A :class:`ModelConfig` resolved once (per command): where the model is and what identifies it.

    Made by :func:`resolve_model` and passed down to :func:`load_tokenizer`, :func:`load_model`,
    :func:`model_identity` and :func:`probing.models.context.model_context_length`.

    Args:
        config: a copy of the options it was resolved from.
        where: the model folder, or the hub id (its cached snapshot folder when the hub is out of
            reach).
        gguf: the GGUF file name inside ``where``, None for none.
        kind: ``builtin``, ``gguf`` (a file path), ``local`` (a folder) or ``hub``.
        sha256: SHA-256 of a local GGUF file ("" otherwise), hashed once here unless an assembled
            built-in's sidecar vouches for it.
    """

    config: ModelConfig
    where: str
    gguf: str | None
    kind: SourceKind
    sha256: str = ""

    @property
    def gguf_path(self) -> str | None:
        """The local GGUF file, None for a hub model or a folder of weights."""
        return os.path.join(self.where, self.gguf) if self.gguf and self.kind != "hub" else None

    @property
    def cached_commit(self) -> str | None:
        """The commit of a hub model loaded from its cached snapshot (``where`` is that folder)."""
        return (
            Path(self.where).name if self.kind == "hub" and self.where != self.config.name else None
        )

    def load_error(self, err: Exception) -> ProbingError:
        """The one-line error for a model that cannot be loaded (``err`` from transformers or IO)."""
        known = ", ".join(BUILTIN_MODELS)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return ProbingError(
            f"cannot load model {self.config.name!r} ({self.kind}): {first}. Use a built-in name "
            f"({known}), a local folder, a .gguf file or a reachable hub id in --model.name"
        )


def _locate(cfg: ModelConfig) -> tuple[str, str | None, SourceKind]:
    """(folder or hub id, gguf file name, source kind)."""
    if cfg.name in BUILTIN_MODELS:
        path = BUILTIN_MODELS[cfg.name].locate()
        return str(path.parent), path.name, "builtin"
    path = Path(cfg.name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ProbingError(f"GGUF file {path} does not exist; fix --model.name")
        return str(path.parent), path.name, "gguf"
    if path.exists():
        if not path.is_dir():
            raise ProbingError(
                f"--model.name {path} is a file but not a .gguf file; give a model folder"
            )
        return str(path), cfg.gguf_file, "local"
    if cfg.name.startswith((".", "/", "~")) or cfg.name.count("/") > 1:
        raise ProbingError(f"model path {cfg.name} does not exist; fix --model.name")
    return cfg.name, cfg.gguf_file, "hub"


def resolve_model(cfg: ModelConfig | ModelSource) -> ModelSource:
    """Resolve ``cfg`` (a built-in name, GGUF file, folder or hub id) once; a source is returned as is.

    A local GGUF is hashed here (an assembled file's sidecar spares that), so call this once per
    command and pass the result down. A hub id out of reach (or with ``HF_HUB_OFFLINE``) resolves to
    its cached snapshot folder, or fails here at once (:func:`probing.models.hub.offline_folder`).
    """
    if isinstance(cfg, ModelSource):
        return cfg
    if cfg.dtype == "auto":
        dtype, why = auto_dtype(cfg.device, cfg.device_map)
        log.info("--model.dtype auto: %s (%s)", dtype, why)
        cfg = dataclasses.replace(cfg, dtype=dtype)
    where, gguf, kind = _locate(cfg)
    if kind == "hub":
        where = offline_folder(where, gguf, cfg.revision) or where
    source = ModelSource(dataclasses.replace(cfg), where, gguf, kind)
    path = source.gguf_path
    if path is None:
        return source
    try:
        sha256 = known_sha256(path) or sha256_file(path)
    except OSError as err:
        raise source.load_error(err) from None
    return dataclasses.replace(source, sha256=sha256)


def model_identity(model: ModelConfig | ModelSource) -> dict[str, Any]:
    """What identifies the model's weights, known without loading them (for fingerprints)."""
    source = resolve_model(model)
    return {
        "model": source.config.name,
        "model_source": source.kind,
        "model_revision": source.config.revision or "",
        "gguf_sha256": source.sha256,
        "dtype": source.config.dtype,
    }


def _where(source: ModelSource) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name) to load from: a local GGUF becomes its converted folder.

    The first load converts the file (parsed once) into :func:`probing.models.cache.converted`;
    later loads read config, tokenizer and safetensors from there. Without a writable cache the GGUF
    is loaded directly.
    """
    path = source.gguf_path
    if path is not None:
        try:
            entry = cache.converted(path, source.sha256)
        except (OSError, ValueError) as err:
            raise source.load_error(err) from None
        if entry is not None:
            log.debug("%s: converted copy in %s", source.config.name, entry)
            return str(entry), None
    return source.where, source.gguf


def pretrained_kwargs(cfg: ModelConfig, gguf: str | None, weights: bool = False) -> dict[str, Any]:
    """Keyword arguments of ``from_pretrained`` (config, tokenizer or, with ``weights``, the model).

    ``gguf`` is the GGUF file name to load (:func:`_where`), None for none.
    """
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    if cfg.revision:
        kwargs["revision"] = cfg.revision
    if weights:
        kwargs["dtype"] = DTYPES[cfg.dtype]
        if cfg.device_map:
            kwargs["device_map"] = cfg.device_map
    return kwargs


def load_tokenizer(model: ModelConfig | ModelSource) -> Any:
    """The tokenizer of ``model`` (a config is resolved first; pass a :class:`ModelSource` to reuse one)."""
    from transformers import AutoTokenizer

    source = resolve_model(model)
    where, gguf = _where(source)
    try:
        with cache.parse_once() if gguf else contextlib.nullcontext():
            return AutoTokenizer.from_pretrained(where, **pretrained_kwargs(source.config, gguf))
    except (OSError, ValueError) as err:
        raise source.load_error(err) from None


def load_model(model: ModelConfig | ModelSource, tokenizer: Any = None) -> LoadedModel:
    """Load model (and tokenizer unless given), find their parts, describe them for provenance."""
    from transformers import AutoModelForCausalLM

    source = resolve_model(model)
    cfg = source.config
    identity = model_identity(source)
    where, gguf = _where(source)
    if tokenizer is None:
        tokenizer = load_tokenizer(source)
    kwargs = pretrained_kwargs(cfg, gguf, weights=True)
    log.info("loading %s (%s%s)", cfg.name, source.kind, f", {gguf}" if gguf else f", {where}")
    try:
        with cache.parse_once() if gguf else contextlib.nullcontext():
            model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as err:
        raise source.load_error(err) from None
    if not cfg.device_map:
        try:
            model.to(cfg.device)
        except (RuntimeError, AssertionError) as err:
            raise ProbingError(
                f"cannot move the model to --model.device {cfg.device}: {err}"
            ) from None
    model.eval()
    model.requires_grad_(False)
    parts = model_parts(model)
    commit = getattr(model.config, "_commit_hash", None) or source.cached_commit
    meta = {
        **identity,
        "model_revision": str(commit or identity["model_revision"]),
        "architecture": parts.architecture,
        "num_decoder_layers": parts.num_decoder_layers,
        "vocab_size": int(parts.unembed.weight.shape[0]),
    }
    return LoadedModel(model=model, tokenizer=tokenizer, parts=parts, meta=meta)


def from_pretrained_objects(model: Any, tokenizer: Any, name: str = "in-memory") -> LoadedModel:
    """Wrap an already loaded model (tests, notebooks) the way :func:`load_model` would."""
    model.eval()
    model.requires_grad_(False)
    parts = model_parts(model)
    dtype = next(model.parameters()).dtype
    meta = {
        "model": name,
        "model_source": "object",
        "model_revision": "",
        "gguf_sha256": "",
        "architecture": parts.architecture,
        "dtype": str(dtype).removeprefix("torch."),
        "num_decoder_layers": parts.num_decoder_layers,
        "vocab_size": int(parts.unembed.weight.shape[0]),
    }
    return LoadedModel(model=model, tokenizer=tokenizer, parts=parts, meta=meta)
