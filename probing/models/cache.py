"""GGUF models converted once, then loaded from the model cache.

transformers builds a model from a GGUF file by parsing the file's metadata (tens of thousands of
vocabulary strings, read one field part at a time) and dequantizing every tensor. Loading from
``gguf_file=`` does it three times (tokenizer, config, weights): ~30 s for SmolLM2-135M on 2 CPU cores.
Here the file is parsed **once** (:func:`parse_once`), the result (config, tokenizer, float32
safetensors weights) is written to ``<cache_dir()>/converted/<entry>/``, and every later load reads
that folder (seconds).

An entry is named after what changes the conversion: the GGUF file's SHA-256, the transformers and
gguf versions, the dtype the weights were stored in (always float32: the dequantized values exactly;
a load casts to the dtype asked for, as a direct GGUF load does) and :data:`FORMAT`. It is written to a
temporary folder in the same parent and renamed into place; its marker file (:data:`MARKER`: the key
and every file's size) is written last, so a folder without a valid marker is never used: it is
rebuilt with a warning. An exclusive lock stops two processes from converting the same file at once.

``probing cache`` lists the entries; ``probing cache --clear true`` (or :func:`clear`) removes them.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probing.models.assemble import cache_dir
from probing.models.cache_config import CacheConfig

log = logging.getLogger(__name__)

FORMAT = 1  # bump when what an entry holds, or how it is made, changes
MARKER = "probing-cache.json"
CONVERT_DTYPE = "float32"
SUBDIR = "converted"
_PATCH_LOCK = threading.RLock()  # parse_once swaps module attributes: one thread at a time


def converted_dir() -> Path:
    """Where converted models live: ``<cache_dir()>/converted``."""
    return cache_dir() / SUBDIR


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def conversion_key(sha256: str) -> dict[str, Any]:
    """Everything an entry depends on; an entry is valid only when its marker repeats all of it."""
    return {
        "format": FORMAT,
        "sha256": sha256,
        "transformers": _version("transformers"),
        "gguf": _version("gguf"),
        "dtype": CONVERT_DTYPE,
    }


def entry_path(sha256: str) -> Path:
    key = conversion_key(sha256)
    name = f"{sha256}-transformers{key['transformers']}-gguf{key['gguf']}-{CONVERT_DTYPE}-v{FORMAT}"
    return converted_dir() / name


def _check(entry: Path, key: dict[str, Any]) -> str | None:
    """Why ``entry`` cannot be used (None: it can)."""
    try:
        record = json.loads((entry / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {MARKER} (a conversion that did not finish)"
    except (OSError, ValueError) as err:
        return f"unreadable {MARKER} ({err})"
    if not isinstance(record, dict):
        return f"{MARKER} is not a JSON object"
    differs = [k for k, v in key.items() if record.get(k) != v]
    if differs:
        return f"{MARKER} records another {', '.join(differs)}"
    files = record.get("files")
    if not isinstance(files, dict) or "config.json" not in files:
        return f"{MARKER} lists no files"
    for name, size in files.items():
        path = entry / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the marker says {size}"
    return None


def find(sha256: str, warn: bool = True) -> Path | None:
    """The valid entry for a GGUF with this SHA-256, else None (a broken one is reported)."""
    entry = entry_path(sha256)
    if not entry.exists():
        return None
    problem = _check(entry, conversion_key(sha256))
    if problem is None:
        return entry
    if warn:
        log.warning(
            "ignoring the broken model cache entry %s: %s; converting again", entry, problem
        )
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as handle:
        start = time.monotonic()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process converting into %s", path.parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
            log.info("waited %.0f s for the other conversion", time.monotonic() - start)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def parse_once() -> Iterator[None]:
    """Within the block, transformers parses each GGUF file once, not once per tokenizer/config/weights.

    transformers' GGUF loader builds a new ``gguf.GGUFReader`` (the slow part: every metadata field,
    one part at a time) for the tokenizer, the config and the weights, and a new tensor-name map for
    every module of the model. Within the block a reader is made once per file and shared (it only
    reads, through a memory map), metadata-only results are memoized (a deep copy is handed out each
    time) and the name map is built once per (architecture, layers). Outside it nothing changes.
    Threads loading GGUF files at once take turns.
    """
    with _PATCH_LOCK:
        yield from _parse_once()


def _parse_once() -> Iterator[None]:
    import gguf
    from transformers import modeling_gguf_pytorch_utils as mgpu

    make_reader, load_checkpoint, name_map = (
        gguf.GGUFReader,
        mgpu.load_gguf_checkpoint,
        gguf.get_tensor_name_map,
    )
    readers: dict[tuple[str, str], Any] = {}
    metadata: dict[str, Any] = {}
    maps: dict[tuple[Any, int], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = make_reader(path, mode)
        return readers[key]

    def checkpoint(path: Any, return_tensors: bool = False, **kwargs: Any) -> Any:
        if return_tensors or kwargs:
            return load_checkpoint(path, return_tensors=return_tensors, **kwargs)
        key = os.path.realpath(path)
        if key not in metadata:
            metadata[key] = load_checkpoint(path, return_tensors=False)
        return copy.deepcopy(metadata[key])

    def tensor_name_map(arch: Any, n_blocks: int) -> Any:
        if (arch, n_blocks) not in maps:
            maps[(arch, n_blocks)] = name_map(arch, n_blocks)
        return maps[(arch, n_blocks)]

    gguf.GGUFReader, mgpu.load_gguf_checkpoint, gguf.get_tensor_name_map = (
        reader,
        checkpoint,
        tensor_name_map,
    )
    try:
        yield
    finally:
        gguf.GGUFReader, mgpu.load_gguf_checkpoint, gguf.get_tensor_name_map = (
            make_reader,
            load_checkpoint,
            name_map,
        )


def convert(gguf_file: str | Path) -> tuple[Any, Any]:
    """(tokenizer, float32 model) built from ``gguf_file``, the file parsed once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    with parse_once():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
        )
    return tokenizer, model


def _save(tokenizer: Any, model: Any, folder: Path) -> None:
    """Config, generation config, tokenizer and safetensors weights of a GGUF-loaded model.

    ``model.save_pretrained`` refuses a model loaded through the GGUF quantizer (its weights are
    plain, dequantized tensors here), so the pieces are written one by one, the config without its
    ``quantization_config`` (a later load must not treat the safetensors as GGUF).
    """
    from safetensors.torch import save_model

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _publish(tmp: Path, entry: Path) -> None:
    """Rename the finished ``tmp`` to ``entry``, moving a broken entry out of the way first."""
    try:
        os.rename(tmp, entry)
        return
    except OSError:
        if not entry.exists():
            raise
    trash = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.broken."))
    os.rename(entry, trash / "entry")
    shutil.rmtree(trash, ignore_errors=True)
    os.rename(tmp, entry)


def converted(gguf_file: str | Path, sha256: str) -> Path | None:
    """The cache entry of ``gguf_file`` (SHA-256 ``sha256``), converting the file on first use.

    None when the cache cannot be written (read-only, full): the caller loads the GGUF directly.
    Errors of the conversion itself (an unsupported file) propagate from transformers.
    """
    entry = find(sha256)
    if entry is not None:
        return entry
    entry = entry_path(sha256)
    lock = contextlib.ExitStack()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        lock.enter_context(_locked(entry.parent / f".{entry.name}.lock"))
    except OSError as err:
        log.warning(
            "cannot use the model cache %s (%s); loading %s without it (set PROBING_CACHE to a "
            "writable folder to load it in seconds next time)",
            entry.parent,
            err,
            gguf_file,
        )
        return None
    with lock:
        if find(sha256, warn=False) is not None:  # another process converted it meanwhile
            return entry
        start = time.monotonic()
        log.info("converting %s once into the model cache %s", gguf_file, entry)
        tokenizer, model = convert(gguf_file)
        need = sum(p.numel() * p.element_size() for p in model.state_dict().values())
        tmp: Path | None = None
        try:
            free = shutil.disk_usage(entry.parent).free
            if free < need + (64 << 20):
                raise OSError(f"{free >> 20} MiB free, the converted model needs {need >> 20} MiB")
            tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.", suffix=".tmp"))
            _save(tokenizer, model, tmp)
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
            for name in files:
                os.chmod(tmp / name, 0o644)  # the cache may be shared
            record = {**conversion_key(sha256), "gguf_file": Path(gguf_file).name, "files": files}
            (tmp / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
            os.chmod(tmp / MARKER, 0o644)
            os.chmod(tmp, 0o755)
            _publish(tmp, entry)
            tmp = None
        except OSError as err:
            log.warning(
                "cannot write the converted model to %s (%s); loading %s without the cache",
                entry,
                err,
                gguf_file,
            )
            return None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("converted in %.1f s; later loads read %s", time.monotonic() - start, entry)
        return entry


@dataclass(frozen=True)
class Entry:
    path: Path
    valid: bool
    size: int  # bytes
    gguf_file: str  # the GGUF's name when converted ("" if unknown)


def entries() -> list[Entry]:
    """Every entry (valid or not) in :func:`converted_dir`."""
    root = converted_dir()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.name.startswith("."):
            continue
        try:
            record = json.loads((path / MARKER).read_text(encoding="utf-8"))
            sha = record["sha256"]
            valid = path == entry_path(sha) and _check(path, conversion_key(sha)) is None
            gguf_file = str(record.get("gguf_file", ""))
        except (OSError, ValueError, KeyError, TypeError):
            valid, gguf_file = False, ""
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        found.append(Entry(path, valid, size, gguf_file))
    return found


def clear() -> int:
    """Remove every converted model (and leftovers of interrupted conversions); bytes freed.

    Assembled GGUF files (:mod:`probing.models.assemble`) beside ``converted/`` are kept.
    """
    root = converted_dir()
    if not root.is_dir():
        return 0
    freed = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    shutil.rmtree(root)
    log.info("removed %s (%.1f MiB)", root, freed / 2**20)
    return freed


def format_entries(found: list[Entry]) -> str:
    root = converted_dir()
    if not found:
        return f"no converted models in {root}"
    lines = [f"{root}:"]
    for e in found:
        state = "ok" if e.valid else "broken or stale (rebuilt on next load)"
        lines.append(f"  {e.path.name}  {e.size / 2**20:.0f} MiB  {e.gguf_file or '?'}  {state}")
    total = sum(e.size for e in found)
    lines.append(f"{len(found)} entries, {total / 2**20:.0f} MiB")
    return "\n".join(lines)


def manage(cfg: CacheConfig) -> str:
    """``probing cache``: the converted models as text, or (``cfg.clear``) remove them and say so."""
    if cfg.clear:
        return f"removed {clear() / 2**20:.0f} MiB from {converted_dir()}"
    return format_entries(entries())
