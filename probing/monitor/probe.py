"""A trained probe for the monitor: its checkpoint (read by :mod:`probing.probes.checkpoint`, with its
standardisation and the identity of its training features), the layer to screen at, and the model it
belongs to (checked)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probing.errors import ProbingError
from probing.features.identity import require_same_model
from probing.features.positions import resolve_position
from probing.features.store import read_meta
from probing.layers import (
    AUTO,
    AUTO_TOLERANCE,
    LayerSpec,
    check_tolerance,
    earliest_within,
    is_auto,
    layers_text,
    resolve_layer,
)
from probing.models.assemble import sha256_file
from probing.models.load import LoadedModel
from probing.probes.checkpoint import probe_from_checkpoint, read_checkpoint

log = logging.getLogger(__name__)

# Read from the training feature file, beside the checkpoint's ``feature_meta`` (its identity keys):
# how to load the model (its config and dtype) and what the file holds.
EXTRA_META_KEYS = (
    "dtype", "num_positions", "position_names", "config", "label_names", "architecture",
    "model_source",
)  # fmt: skip
# The checkpoint's ``feature_meta`` must name these for the model and template to be checked.
REQUIRED_META_KEYS = ("model", "hidden_size", "num_layers", "template")


# -- the probe checkpoint ---------------------------------------------------------------------------
@dataclass
class LoadedProbe:
    """A trained probe module with what the monitor needs to apply it to live hidden states."""

    module: Any  # probing.probes.ProbeModule
    probe: str
    path: Path
    sha256: str
    layers: list[int]
    class_names: list[str]
    feature_meta: dict[str, Any]
    data_hparams: dict[str, Any] = field(default_factory=dict)
    val_results: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    data_path: Path | None = None
    # file rows of the training run's splits (train, val, test, heldout), as `probing fit` saved them;
    # None for a checkpoint written before they were saved (the split is then rebuilt)
    split_rows: dict[str, np.ndarray] | None = None

    @property
    def position(self) -> int:
        """The stored position the probe was trained on (``--data.position``, an index or a name)."""
        return resolve_position(
            self.feature_meta,
            self.data_hparams.get("position", -1),
            "--data.position",
            f"the training features of {self.path.name}",
        )

    @property
    def class_map(self) -> dict[str, str]:
        return dict(self.data_hparams.get("class_map") or {})

    @property
    def hidden_size(self) -> int:
        return int(self.module.hparams.hidden_size)

    def column(self, layer: int) -> int:
        if layer not in self.layers:
            raise ProbingError(
                f"--layer {layer} is not probed by {self.path.name}; it probes layers "
                f"{layers_text(self.layers)} (0 = embeddings)"
            )
        return self.layers.index(layer)

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B, L_sel, C]`` of raw (unstandardised) activations ``[B, L_sel, D]``."""
        logits = self.module.raw_logits(x.to(torch.float32))[self.probe]
        return logits.float().softmax(-1)


# where Lightning keeps ActivationDataModule.state_dict() in a checkpoint (its class name)
DATA_STATE_KEY = "ActivationDataModule"


def _resolve_data_path(raw: dict[str, Any], ckpt: Path) -> Path | None:
    """The training feature file: the absolute path `probing fit` recorded, else the path as given
    to it, relative to each folder above the checkpoint and then to the current folder. A file
    whose fingerprint differs from the recorded one is another file of that name: skipped."""
    state = raw.get(DATA_STATE_KEY) or {}
    value = (raw.get("datamodule_hyper_parameters") or {}).get("path")
    candidates = [Path(state["path"])] if state.get("path") else []
    if value:
        given = Path(value).expanduser()
        if not given.is_absolute():
            candidates += [parent / given for parent in ckpt.resolve().parents]
        candidates.append(given)
    want, seen = state.get("fingerprint"), set()
    for path in candidates:
        if os.path.abspath(path) in seen or not path.is_file():
            continue
        seen.add(os.path.abspath(path))
        try:
            found = read_meta(path).get("fingerprint") if want else want
        except ProbingError:
            found = None
        if found == want:
            return path
        log.warning("%s is not the training file of %s (another fingerprint); skipped", path, ckpt)
    return None


def load_probe(ckpt: str | os.PathLike, probe: str | None = None) -> LoadedProbe:
    """Load a probe checkpoint of ``probing fit`` (any probe class) on CPU, in eval mode."""
    path = Path(ckpt).expanduser()
    raw = read_checkpoint(path, "--ckpt")  # weights_only: tensors and plain data, no pickled code
    module = probe_from_checkpoint(raw, path, "--ckpt")
    data_hp = dict(raw.get("datamodule_hyper_parameters") or {})
    data_path = _resolve_data_path(raw, path)
    names = list(module.heads)
    if probe is None:
        probe = names[0]
        if len(names) > 1:
            log.info("%s holds probes %s; using %r (choose with --probe)", path.name, names, probe)
    elif probe not in names:
        raise ProbingError(f"--probe {probe!r} is not in {path.name}; it holds {names}")
    return LoadedProbe(
        module=module,
        probe=probe,
        path=path,
        sha256=sha256_file(path),
        layers=list(module.layers),
        class_names=list(module.class_names),
        feature_meta=_feature_meta(module.hparams, data_path, path),
        data_hparams=data_hp,
        val_results=dict(raw.get("probe_val_results") or {}),
        data_path=data_path,
        split_rows=_split_rows(raw),
    )


def _split_rows(raw: dict[str, Any]) -> dict[str, np.ndarray] | None:
    saved = (raw.get(DATA_STATE_KEY) or {}).get("split_rows")
    if not isinstance(saved, dict):
        return None
    return {str(k): np.asarray(torch.as_tensor(v), dtype=np.int64) for k, v in saved.items()}


def _feature_meta(hp: Any, data_path: Path | None, ckpt: Path) -> dict[str, Any]:
    """The checkpoint's ``feature_meta`` plus ``EXTRA_META_KEYS`` of its training file (if found)."""
    meta = dict(hp.get("feature_meta") or {})
    missing = [k for k in REQUIRED_META_KEYS if k not in meta]
    if missing:
        raise ProbingError(
            f"--ckpt {ckpt} records no feature_meta {missing}, so the model and prompt template "
            "cannot be checked; use a checkpoint written by `probing fit`"
        )
    if data_path is not None:
        file_meta = read_meta(data_path)
        meta.update({k: file_meta[k] for k in EXTRA_META_KEYS if k not in meta and k in file_meta})
    return meta


# -- choosing the layer -------------------------------------------------------------------------------
def choose_layer(
    probe: LoadedProbe, spec: LayerSpec = AUTO, tolerance: float = AUTO_TOLERANCE
) -> int:
    """``spec`` as one layer (an index; -1 = the last), or ``auto``: the earliest probed layer whose
    validation accuracy is within ``tolerance`` of the best one (``tolerance=0``: the recorded best)."""
    if not is_auto(spec):
        where = f"the training file of {probe.path.name}"
        layer = resolve_layer(spec, probe.feature_meta["num_layers"], "--layer", where)
        probe.column(layer)
        return layer
    tolerance = check_tolerance(tolerance)
    acc = probe.val_results.get(probe.probe, {}).get("accuracy")
    if not acc:
        raise ProbingError(
            f"--layer auto needs the validation accuracy per layer, which {probe.path.name} does not "
            "record (trained without a validation split?); give --layer N"
        )
    layer, value, best = earliest_within(probe.layers, acc, tolerance)
    log.info(
        "--layer auto: layer %d (val accuracy %.4f; best %.4f; earliest within %.4f)",
        layer,
        value,
        best,
        tolerance,
    )
    return layer


# -- the model --------------------------------------------------------------------------------------
def check_model(probe: LoadedProbe, lm: LoadedModel) -> None:
    """Refuse a model other than the one the probe's features came from (and a head of another width)."""
    what = f"--ckpt {probe.path.name}"
    require_same_model(probe.feature_meta, lm, what)
    require_same_model({**probe.feature_meta, "hidden_size": probe.hidden_size}, lm, what)
