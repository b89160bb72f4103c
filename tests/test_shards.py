"""Sharded extraction: shards + merge = the single-process file; bad shard sets are refused."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from featurefactory import make_shards
from tiny import save_tiny, tiny_lm

from probing.cli import main
from probing.errors import ProbingError
from probing.features import FeatureFile
from probing.features.extract import ExtractConfig, extract
from probing.features.shards import merge_shards, shard_bounds, shard_path
from probing.prompts import PromptSource

ROWS = ("hidden", "lens_ids", "label", "prompt_index", "n_tokens", "source")


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("\n".join(f"prompt {i} " + "word " * (i % 9) for i in range(23)) + "\n")
    return p


def config(prompts, out, **kw):
    return ExtractConfig(
        prompts=[PromptSource(path=str(prompts))],
        output=str(out),
        batch_size=4,
        progress=False,
        **kw,
    )


def assert_same_rows(a: FeatureFile, b: FeatureFile) -> None:
    for name in ROWS:
        x, y = a.column(name), b.column(name)
        if name == "hidden":
            np.testing.assert_allclose(
                x.astype(np.float32), y.astype(np.float32), atol=2e-3, rtol=2e-3
            )
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.column("prompt") == b.column("prompt")


def test_shard_bounds_balance_tokens():
    bounds = shard_bounds(np.array([10] * 4 + [1] * 40), 2)
    assert bounds[0][0] == 0 and bounds[-1][1] == 44 and bounds[0][1] == bounds[1][0]
    assert 3 <= bounds[0][1] <= 5
    with pytest.raises(ProbingError, match="at most 3 shards"):
        shard_bounds(np.ones(3), 4)


def test_shards_then_auto_merge_equal_single_process(tmp_path, prompts):
    lm = tiny_lm("llama")
    single = FeatureFile(
        extract(config(prompts, tmp_path / "single.h5", storage_dtype="float32"), lm=lm)
    )
    out = tmp_path / "sharded" / "merged.h5"
    first = extract(config(prompts, out, shard="0/3", storage_dtype="float32"), lm=lm)
    assert first == shard_path(out, 0, 3) and not out.exists()
    extract(config(prompts, out, shard="2/3", storage_dtype="float32"), lm=lm)
    assert extract(config(prompts, out, shard="1/3", storage_dtype="float32"), lm=lm) == out
    merged = FeatureFile(out)
    assert merged.meta["complete"] and len(merged.meta["shards"]) == 3
    assert merged.meta["fingerprint"] == single.meta["fingerprint"]
    assert_same_rows(merged, single)
    with h5py.File(out) as f:
        assert f["hidden"].is_virtual
    # resuming an identical run is a no-op; the merged file is what a single run at `out` would be
    assert FeatureFile(extract(config(prompts, out, storage_dtype="float32"), lm=lm)).num_rows == 23
    # moving shard and merged file together keeps them readable (relative paths)
    moved = tmp_path / "moved"
    (tmp_path / "sharded").rename(moved)
    assert_same_rows(FeatureFile(moved / "merged.h5"), single)
    os.remove(moved / shard_path("merged.h5", 1, 3).name)
    with pytest.raises(ProbingError, match="missing"):
        FeatureFile(moved / "merged.h5")


def test_lens_off_stores_the_same_states_and_merges(tmp_path, prompts):
    """``lens_top_k: 0``: the states of a lens-on run, zero-width lens datasets, through shards too."""
    lm = tiny_lm("llama")
    on = FeatureFile(extract(config(prompts, tmp_path / "on.h5", storage_dtype="float32"), lm=lm))
    off = FeatureFile(
        extract(config(prompts, tmp_path / "off.h5", storage_dtype="float32", lens_top_k=0), lm=lm)
    )
    np.testing.assert_array_equal(off.column("hidden"), on.column("hidden"))
    assert off.column("lens_ids").shape == (23, 4, 1, 0) and off.meta["lens_top_k"] == 0
    assert on.column("lens_ids").shape == (23, 4, 1, 5)
    out = tmp_path / "sharded" / "merged.h5"
    for i in (0, 1):
        extract(config(prompts, out, shard=f"{i}/2", storage_dtype="float32", lens_top_k=0), lm=lm)
    merged = FeatureFile(out)
    assert merged.meta["complete"] and merged.column("lens_logits").shape == (23, 4, 1, 0)
    np.testing.assert_array_equal(merged.column("hidden"), off.column("hidden"))


def test_torchrun_shard_uses_its_local_gpu_without_changing_the_config(
    tmp_path, prompts, monkeypatch
):
    """``--model.device cuda`` becomes ``cuda:LOCAL_RANK`` in the shard, not in the caller's cfg."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    cfg = config(prompts, tmp_path / "f.h5", shard="0/2")
    cfg.model.device = "cuda"
    path = extract(cfg, lm=tiny_lm("llama"))
    assert FeatureFile(path).meta["config"]["model"]["device"] == "cuda:1"
    assert cfg.model.device == "cuda"


def test_merge_refuses_bad_sets(tmp_path, prompts, capsys):
    lm = tiny_lm("llama")
    out = tmp_path / "m.h5"
    for i in range(3):
        extract(config(prompts, out, shard=f"{i}/3"), lm=lm)
    s = [str(shard_path(out, i, 3)) for i in range(3)]
    other = tmp_path / "other.txt"
    other.write_text("a\nb\nc\nd\n")
    extract(
        ExtractConfig(
            prompts=[PromptSource(path=str(other))],
            output=str(tmp_path / "o.h5"),
            shard="1/3",
            progress=False,
        ),
        lm=lm,
    )
    cases = [
        ([s[0], s[2]], "expected 3 shards.*missing \\[1\\]"),
        ([s[0], s[1], s[1]], "duplicates"),
        ([s[0], str(shard_path(tmp_path / "o.h5", 1, 3)), s[2]], "disagree on model, prompt set"),
        ([s[0], s[1], str(tmp_path / "nope.h5")], "does not exist"),
        ([str(out)], "not a shard"),
    ]
    for paths, match in cases:
        with pytest.raises(ProbingError, match=match):
            merge_shards(paths, tmp_path / "x.h5")
        assert not (tmp_path / "x.h5").exists()
    assert main(["merge", s[0], s[2], "--output", str(tmp_path / "x.h5")]) == 2
    assert "missing [1]" in capsys.readouterr().err
    assert main(["merge", *s, "--output", str(tmp_path / "x.h5")]) == 0
    assert FeatureFile(tmp_path / "x.h5").num_rows == 23
    with pytest.raises(ProbingError, match="expected i/n"):
        extract(config(prompts, out, shard="3/3"), lm=lm)


@pytest.mark.slow
def test_torchrun_two_processes_equal_single(tmp_path, prompts):
    model = save_tiny(tmp_path / "tiny", "llama")
    out = tmp_path / "tr.h5"
    args = [
        "--model.name",
        str(model),
        "--prompts",
        f'[{{"path": "{prompts}"}}]',
        "--batch_size",
        "4",
        "--storage_dtype",
        "float32",
        "--progress",
        "false",
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "0",
        "-m",
        "probing.cli",
        "extract",
        *args,
        "--output",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, timeout=300, capture_output=True)
    assert main(["extract", *args, "--output", str(tmp_path / "single.h5")]) == 0
    assert shard_path(out, 0, 2).exists() and shard_path(out, 1, 2).exists()
    assert_same_rows(FeatureFile(out), FeatureFile(tmp_path / "single.h5"))


def test_merge_output_needs_overwrite_and_info_sees_missing_shards(tmp_path, prompts, capsys):
    lm = tiny_lm("llama")
    out = tmp_path / "m.h5"
    for i in range(2):
        extract(config(prompts, out, shard=f"{i}/2"), lm=lm)
    s = [str(shard_path(out, i, 2)) for i in range(2)]
    capsys.readouterr()
    # an existing file that is not this merge is kept unless --overwrite
    other = tmp_path / "other.h5"
    other.write_bytes(b"precious results")
    assert main(["merge", *s, "--output", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert (
        err.startswith("probing merge: error: ")
        and "already exists" in err
        and "--overwrite" in err
    )
    assert other.read_bytes() == b"precious results"
    assert main(["merge", *s, "--output", str(other), "--overwrite"]) == 0
    assert FeatureFile(other).num_rows == 23
    # the same merge again is a no-op
    before = out.stat().st_mtime_ns
    assert main(["merge", *s, "--output", str(out)]) == 0
    assert out.stat().st_mtime_ns == before
    capsys.readouterr()
    # a merged file whose shard is gone is not complete (its rows would read as zeros)
    os.remove(s[1])
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert not info["complete"] and info["missing_shards"] == [os.path.basename(s[1])]
    assert main(["info", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "INCOMPLETE" in first and os.path.basename(s[1]) in first


def test_merge_refuses_an_output_that_is_one_of_its_shards(tmp_path, capsys):
    """`merge S0 S1 --output S0 --overwrite` replaced shard 0 by a file reading itself: refused."""
    shards = make_shards(tmp_path / "m.h5")
    before = [p.read_bytes() for p in shards]
    for target in (shards[0], tmp_path / "." / shards[1].name):
        assert main(["merge", *map(str, shards), "--output", str(target), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, err
        assert err.startswith("probing merge: error: --output ") and "is one of the shards" in err
    assert [p.read_bytes() for p in shards] == before
    assert main(["merge", *map(str, shards), "--output", str(tmp_path / "m.h5")]) == 0
    assert FeatureFile(tmp_path / "m.h5").num_rows == 40


def test_merge_on_a_full_disk_leaves_nothing(tmp_path, capsys, monkeypatch):
    """A failed write of the merged file removes it and says why (as extraction does)."""
    shards = make_shards(tmp_path / "m.h5")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    assert main(["merge", *map(str, shards), "--output", str(tmp_path / "m.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"probing merge: error: cannot write {tmp_path / 'm.h5'}: No space left")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in shards)
