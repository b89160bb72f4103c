"""Probe checkpoints read safely: tensors and plain data only (``weights_only``), probe classes from an
allow-list, and the check that a probe is applied to features of the model and format it was trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from probing.errors import ProbingError
from probing.features.identity import require_same_identity
from probing.probes.module import LinearMLPProbe, LinearProbe, MLPProbe, ProbeModule


def check_feature_identity(probe: ProbeModule, meta: dict[str, Any], what: str) -> None:
    """Refuse to apply a probe to activations of another model or format."""
    require_same_identity(
        probe.hparams.get("feature_meta") or {}, meta,
        "the probe was trained on {key}={a!r} but {what} has {key}={b!r}; use a probe trained on "
        "features of this model and prompt format",
        what=what,
    )  # fmt: skip


def read_checkpoint(path: str | Path, option: str = "--ckpt") -> dict[str, Any]:
    """A checkpoint's contents as tensors and plain data only (``weights_only``: nothing in it runs)."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise ProbingError(f"{option} {path} does not exist; give a checkpoint of `probing fit`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err):  # weights_only met a class or function to import and call
            raise ProbingError(
                f"{option} {path} holds Python objects other than tensors and plain data; refusing "
                "to unpickle it (only checkpoints written by `probing fit` are loaded)"
            ) from None
        raise ProbingError(_unreadable(path, option)) from None
    except Exception:  # torch raises several kinds for a non-checkpoint file
        raise ProbingError(_unreadable(path, option)) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ProbingError(f"{option} {path} is not a probe checkpoint of `probing fit`")
    return ckpt


def _unreadable(path: Path, option: str) -> str:
    """Why torch cannot load ``path`` as a checkpoint, judged by its first bytes."""
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        what = "a zip archive that torch.save did not write (or a damaged checkpoint)"
    elif head[:1] == b"\x80":
        what = "a plain Python pickle, not a checkpoint that torch.save wrote"
    else:
        what = "neither a checkpoint nor a pickle"
    return (
        f"{option} {path} is not a readable checkpoint: it is {what}; give a checkpoint of "
        "`probing fit` (RUN/checkpoints/*.ckpt)"
    )


def probe_class(target: str | None, option: str = "--ckpt") -> type[ProbeModule]:
    """The probe class a checkpoint names, from the allow-list only (a name in a file is never imported)."""
    allowed = {cls.__name__: cls for cls in (LinearProbe, MLPProbe, LinearMLPProbe)}
    name = (target or "").rpartition(".")[2]
    module = (target or "").rpartition(".")[0]
    if name in allowed and module in ("", "probing.probes", "probing.probes.module"):
        return allowed[name]
    raise ProbingError(
        f"{option} names the probe class {target!r}; only {', '.join(allowed)} (probing.probes) are "
        "loaded from a checkpoint"
    )


def load_probe_checkpoint(
    path: str | Path, meta: dict[str, Any] | None = None, what: str = "the data"
) -> ProbeModule:
    """A trained probe from its checkpoint (class recorded in it), checked against ``meta``."""
    path = Path(path)
    probe = probe_from_checkpoint(read_checkpoint(path, "probe checkpoint"), path)
    if meta is not None:
        check_feature_identity(probe, meta, what)
    return probe


def probe_from_checkpoint(
    ckpt: dict[str, Any], path: str | Path, option: str = "probe checkpoint"
) -> ProbeModule:
    """The probe in a checkpoint's contents (of :func:`read_checkpoint`), in eval mode; errors name
    ``option`` and ``path``."""
    import inspect

    hp = dict(ckpt.get("hyper_parameters") or {})
    targets = [t for t in (ckpt.get("probe_class"), hp.get("_class_path")) if t]
    if not targets:
        raise ProbingError(
            f"{option} {path} names no probe class (`probe_class`, which every checkpoint of "
            "`probing fit` records); refusing to guess one — train it again with `probing fit`"
        )
    cls = probe_class(targets[0], f"{option} {path}")
    for other in targets[1:]:
        probe_class(other, f"{option} {path}")  # every name the file gives is checked
    names: set[str] = set()
    for klass in cls.__mro__[: cls.__mro__.index(ProbeModule) + 1]:
        names |= set(inspect.signature(klass.__init__).parameters)
    # plain keyword arguments into an allow-listed class; no instantiator or class path from the file
    try:
        probe = cls(**{k: v for k, v in hp.items() if k in names and not k.startswith("_")})
    except TypeError as err:
        raise ProbingError(f"{option} {path} is not a probe checkpoint ({err})") from None
    try:
        probe.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise ProbingError(
            f"{option} {path} does not fit {cls.__name__}: {str(err).splitlines()[0]}"
        ) from None
    probe.on_load_checkpoint(ckpt)
    return probe.eval()
