"""Damaged, hand-edited or hostile feature files through `probing info` and `probing fit`: refused
when the file is opened, one line naming the file and what is wrong, exit 2, nothing written.

(A tester's sweep: cases 4, 5, 8, 9 and 10.)"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import pytest
from featurefactory import make_feature_file, make_shards, single_thread  # noqa: F401

from probing.cli import main
from probing.features.shards import merge_shards

LINEAR = str(Path(__file__).resolve().parents[1] / "configs" / "probe" / "linear.yaml")
FIT = [
    "--trainer.logger",
    "false",
    "--trainer.default_root_dir",
    "runs",
    "--trainer.max_epochs",
    "1",
]


@pytest.fixture
def good(workdir):
    return make_feature_file(workdir / "good.h5", n=40, num_layers=3, hidden_size=8, seed=1)


def edited(good: Path, name: str, edit) -> Path:
    """A copy of ``good`` changed by ``edit(h5py.File)``."""
    path = good.with_name(name)
    shutil.copy(good, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def assert_refused(capsys, path: Path, match: str) -> None:
    """`info` and `fit` on ``path``: exit 2, one line naming the file; fit writes nothing."""
    for argv in (["info", str(path)], ["fit", "--config", LINEAR, "--data.path", str(path), *FIT]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"probing {argv[0]}: error: {path}"), err
        assert match in last, err
        # (a handler left by an earlier test on a closed capture stream prints "--- Logging error ---")
        assert err.count("Traceback") == err.count("--- Logging error ---"), err
    assert not Path("runs").exists()


def test_merged_file_reads_shards_only_in_its_folder(workdir, capsys):
    """Case 4: a `shards` attribute naming ../../etc/passwd (or /etc/passwd) while a real shard is
    missing passed the "shards exist" check and trained on rows of zeros."""
    shards = make_shards(workdir / "m.h5")
    merge_shards(shards, workdir / "m.h5")
    names = [p.name for p in shards]
    for outside in ("../../../../etc/passwd", "/etc/passwd"):
        with h5py.File(workdir / "m.h5", "r+") as f:
            f.attrs["shards"] = json.dumps([names[0], outside])
        os.rename(shards[1], workdir / "away.h5")
        assert_refused(capsys, Path("m.h5"), f"shard {outside!r} lies outside its folder")
        os.rename(workdir / "away.h5", shards[1])
    # merge itself never writes such a file: --output must be beside the shards (or above them)
    (workdir / "sub").mkdir()
    assert main(["merge", *map(str, shards), "--output", "sub/m2.h5"]) == 2
    assert "is not in the folder of --output sub/m2.h5" in capsys.readouterr().err
    assert not (workdir / "sub" / "m2.h5").exists()


def test_complete_flag_is_checked_against_rows_done(good, capsys):
    """Case 5: `complete = true` with rows_done 10 of 40 was 'complete' and trained on zeros."""
    bad = edited(good, "c5.h5", lambda f: f["rows_done"].__setitem__(0, 10))
    assert_refused(capsys, bad, "says it is complete but holds 10 of 40 rows")


def test_label_beyond_label_names(good, capsys):
    """Case 8: info died with an IndexError; fit dropped the row silently."""
    bad = edited(good, "c8.h5", lambda f: f["label"].__setitem__(3, 5))
    assert_refused(capsys, bad, "rows 3 have labels 5 outside its 2 label_names")


def test_fewer_activation_rows_than_labels(good, capsys):
    """Case 9: fit died with an IndexError."""

    def shorten(f):
        hidden = f["hidden"][:30]
        del f["hidden"]
        f["hidden"] = hidden

    bad = edited(good, "c9.h5", shorten)
    assert_refused(capsys, bad, "dataset 'label' has shape (40,), expected (30,)")


@pytest.mark.parametrize("target", ["/etc/passwd", "other.h5"])
def test_external_link_is_refused(good, capsys, target):
    """Case 10: an external link to a non-HDF5 file was a KeyError; to an HDF5 file, followed."""
    other = make_feature_file(good.with_name("other.h5"), n=40, num_layers=3, hidden_size=8)
    target = target if target.startswith("/") else str(other)

    def link(f):
        del f["hidden"]
        f["hidden"] = h5py.ExternalLink(target, "/hidden")

    bad = edited(good, "c10.h5", link)
    assert_refused(capsys, bad, f"'hidden' is a link (ExternalLink to {target})")


def test_virtual_source_other_than_shards_is_refused(good, capsys):
    """Case 10: a virtual dataset over another file is read only when it is a merge's own shard."""
    other = make_feature_file(good.with_name("other.h5"), n=40, num_layers=3, hidden_size=8)

    def virtual(f):
        shape, dtype = f["hidden"].shape, f["hidden"].dtype
        del f["hidden"]
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[:] = h5py.VirtualSource(str(other), "hidden", shape=shape)
        f.create_virtual_dataset("hidden", layout)

    bad = edited(good, "c10.h5", virtual)
    assert_refused(capsys, bad, f"dataset 'hidden' reads '{other}', which is not one of its shards")
