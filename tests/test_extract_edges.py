"""`probing extract` at the edges a tester's sweep found: a full disk, an --output that is an input
or a file of the user's. Each ends in one line and exit 2, nothing of the user's touched, no
half-written output left."""

from __future__ import annotations

import errno
import json

import h5py
import numpy as np
import pytest
from tiny import save_tiny

from probing.cli import main
from probing.features import FeatureFile
from probing.features.atomic import lock_path, partial_path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("goal\n" + "\n".join(f"request number {i}" for i in range(20)) + "\n")
    return p


def extract(model_dir, prompts, *args: str) -> int:
    source = f'[{{"path": "{prompts}"}}]'
    return main(["extract", "--model.name", str(model_dir), "--prompts", source, *args,
                 "--progress", "false", "--batch_size", "4"])  # fmt: skip


def one_line_error(capsys, match: str) -> None:
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("probing extract: error: ") and match in last, err
    assert "Traceback" not in err, err


HDF5_ENOSPC = (
    "Unable to synchronously flush file (file write failed: time = Mon Dec  7 18:50:46 2026\n, "
    "filename = 'o.h5.partial', file descriptor = 3, errno = 28, error message = 'No space left "
    "on device', buf = 0x55e4, total write size = 85576, bytes this sub-write = 85576)"
)


@pytest.mark.parametrize("raised", ["OSError", "RuntimeError"])
def test_full_disk_removes_the_partial_output(
    tmp_path, model_dir, prompts, capsys, monkeypatch, raised
):
    """Case 3: a write failing for a full disk (h5py raises OSError or RuntimeError) crashed with two
    tracebacks and a segfault and left OUTPUT.partial; now one line says why, and it is gone."""
    if raised == "OSError":
        real = h5py.Dataset.__setitem__

        def full(self, key, value):
            if self.name == "/hidden" and isinstance(key, slice) and key.start:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, key, value)

        monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    else:
        real_flush, calls = h5py.File.flush, []

        def full(self):
            calls.append(1)
            if len(calls) > 3:  # the layout's flush, then the first batch's two
                raise RuntimeError(HDF5_ENOSPC)
            return real_flush(self)

        monkeypatch.setattr(h5py.File, "flush", full)
    out = tmp_path / "o.h5"
    assert extract(model_dir, prompts, "--output", str(out)) == 2
    one_line_error(capsys, f"cannot write {out}: No space left on device (4 of 20 rows written)")
    assert not out.exists() and not partial_path(out).exists() and not lock_path(out).exists()


def test_output_that_is_the_prompt_file_is_refused(tmp_path, model_dir, prompts, capsys):
    """Case 6: `--output PROMPTS --overwrite` replaced the user's prompt file by HDF5."""
    before = prompts.read_bytes()
    assert extract(model_dir, prompts, "--output", str(prompts), "--overwrite", "true") == 2
    one_line_error(capsys, f"--output {prompts} is the prompt file {prompts}; writing the features")
    assert prompts.read_bytes() == before and not lock_path(prompts).exists()


def test_output_that_is_not_hdf5_says_so(tmp_path, model_dir, prompts, capsys):
    """Case 14: a text file at --output was 'being written by another process' (our own lock)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert extract(model_dir, prompts, "--output", str(notes)) == 2
    one_line_error(capsys, f"--output {notes} exists and is not an HDF5 file")
    assert notes.read_text() == "my notes\n" and not lock_path(notes).exists()
    assert main(["info", str(notes)]) == 2
    assert (
        f"{notes} is not a readable HDF5 file (not HDF5 at all); give a feature file"
        in capsys.readouterr().err
    )


def test_txt_lines_end_only_at_newlines(tmp_path, model_dir, capsys):
    """Case 11: U+2028, a form feed or NEL inside a TXT line made 6 prompts of 3 lines (and JSONL
    lines, where a raw U+2028 is valid JSON, broke apart)."""
    lines = ["first\u2028still first", "second\x0cstill second", "third\x85still third"]
    txt = tmp_path / "p.txt"
    txt.write_bytes(("\n".join(lines[:2]) + "\r\n" + lines[2] + "\n").encode())
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": x}, ensure_ascii=False) + "\n" for x in lines))
    for source in (txt, jsonl):
        out = tmp_path / f"{source.suffix[1:]}.h5"
        assert extract(model_dir, source, "--output", str(out)) == 0
        ff = FeatureFile(out)
        order = np.argsort(ff.column("prompt_index"))
        assert [ff.column("prompt")[i] for i in order] == lines


def test_csv_with_an_unterminated_quote_is_refused(tmp_path, model_dir, capsys):
    """Case 12: an unterminated quote swallowed the rest of the file into one prompt."""
    bad = tmp_path / "bad.csv"
    bad.write_text('goal\nfirst\n"multi\nline"\n"second, never closed\nthird\nfourth\n')
    out = tmp_path / "o.h5"
    assert extract(model_dir, bad, "--output", str(out)) == 2
    one_line_error(capsys, f"{bad}: the quoted field in row 4 (line 5) is never closed")
    assert not out.exists()
