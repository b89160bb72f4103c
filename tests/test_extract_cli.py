"""`probing extract` / `probing info` end to end: resume after SIGKILL, no-op reruns, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from tiny import save_tiny, tiny_lm

from probing.cli import main
from probing.errors import ProbingError
from probing.features import FeatureFile
from probing.features.atomic import lock_path, partial_path
from probing.features.extract import ExtractConfig, extract
from probing.prompts import PromptSource

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text(
        "goal\n" + "\n".join(f"request number {i} {'x' * (i % 7)}" for i in range(20)) + "\n"
    )
    return p


def cli(*args: str) -> int:
    return main(["extract", *args, "--progress", "false"])


def test_cli_extract_and_info(tmp_path, model_dir, prompts, capsys):
    out = tmp_path / "f.h5"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model:\n  name: {model_dir}\nprompts:\n  - path: {prompts}\n    label: mal\n"
        f"  - path: {prompts}\n    label: ok\n    limit: 5\noutput: {out}\n"
    )
    assert cli("--config", str(cfg), "--batch_size", "4") == 0
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and info["rows"] == 25 and info["layers"] == 4
    assert info["labels"] == {"mal": 20, "ok": 5} and info["hidden_size"] == 32
    assert info["model"] == str(model_dir)
    assert main(["info", str(out)]) == 0
    assert "complete" in capsys.readouterr().out
    # an identical rerun is a no-op: the file is untouched
    before = out.stat().st_mtime_ns
    assert cli("--config", str(cfg)) == 0
    assert out.stat().st_mtime_ns == before
    # another prompt set into the same file is refused, then allowed with --overwrite
    assert cli("--config", str(cfg), "--prompts", f'[{{"path": "{prompts}", "limit": 3}}]') == 2
    assert "another prompt set" in capsys.readouterr().err
    assert (
        cli(
            "--config",
            str(cfg),
            "--prompts",
            f'[{{"path": "{prompts}", "limit": 3}}]',
            "--overwrite",
            "true",
        )
        == 0
    )
    assert FeatureFile(out).num_rows == 3


def test_lens_off_file_says_so_and_the_lens_refuses_it(tmp_path, model_dir, prompts, capsys):
    out = tmp_path / "f.h5"
    base = ["--model.name", str(model_dir), "--prompts", f'[{{"path": "{prompts}"}}]']
    assert cli(*base, "--output", str(out), "--lens_top_k", "0") == 0
    assert main(["info", str(out)]) == 0
    assert "no lens (--lens_top_k 0)" in capsys.readouterr().out
    assert main(["lens", str(out), "--output", str(tmp_path / "lens")]) == 2
    _one_line_error(capsys, "holds no logit-lens data (lens_top_k=0); re-extract with --lens_top_k")
    assert cli(*base, "--output", str(tmp_path / "g.h5"), "--lens_top_k", "-1") == 2
    _one_line_error(capsys, "--lens_top_k must be >= 0 (0: no lens), got -1")


def test_print_config(model_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["extract", "--model.name", str(model_dir), "--print_config"])
    assert exit_info.value.code == 0
    assert f"name: {model_dir}" in capsys.readouterr().out


def test_resume_after_sigkill_equals_uninterrupted(tmp_path, prompts):
    killed = tmp_path / "killed.h5"
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "scripts" / "extract_slow.py"), str(prompts), str(killed)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for line in proc.stdout:
            if line.startswith("rows") and int(line.split()[1]) >= 6:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not killed.exists()  # the rows so far are in killed.h5.partial
    with h5py.File(partial_path(killed)) as f:
        assert not f.attrs["complete"]
        assert 6 <= f["rows_done"][0] < 20
    with pytest.raises(ProbingError, match="incomplete"):
        FeatureFile(killed)

    lm = tiny_lm("llama")
    cfg = ExtractConfig(
        prompts=[PromptSource(path=str(prompts))], output=str(killed), batch_size=2, progress=False
    )
    with pytest.raises(ProbingError, match="pass --resume"):
        extract(cfg, lm=lm)
    cfg.resume = True
    extract(cfg, lm=lm)
    full = ExtractConfig(
        prompts=[PromptSource(path=str(prompts))],
        output=str(tmp_path / "full.h5"),
        batch_size=2,
        progress=False,
    )
    extract(full, lm=lm)
    a, b = FeatureFile(killed), FeatureFile(tmp_path / "full.h5")
    for name in ("hidden", "lens_ids", "lens_logits", "label", "prompt_index", "n_tokens"):
        np.testing.assert_array_equal(a.column(name), b.column(name), err_msg=name)
    assert a.meta["fingerprint"] == b.meta["fingerprint"]


def _slow_extract(prompts: Path, out: Path, *extra: str, rows: int = 2) -> subprocess.Popen:
    """A second process extracting slowly into ``out``; returns once it has written ``rows`` rows."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "scripts" / "extract_slow.py"), str(prompts), str(out), *extra],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "SLOW_WRITE_S": "1.0"},
    )
    for line in proc.stdout:
        if line.startswith("rows") and int(line.split()[1]) >= rows:
            return proc
    proc.wait(timeout=60)
    raise AssertionError(f"the slow extraction ended early (exit {proc.returncode})")


def test_second_writer_is_refused_and_finished_file_survives(tmp_path, model_dir, prompts, capsys):
    out = tmp_path / "f.h5"
    proc = _slow_extract(prompts, out)
    try:
        # another process on the same output: one line, nothing of the first run's file touched
        args = ["--model.name", str(model_dir), "--prompts", f'[{{"path": "{prompts}"}}]']
        assert cli(*args, "--output", str(out), "--overwrite", "true") == 2
        _one_line_error(capsys, "is being written by another process")
        assert main(["info", str(out)]) == 2  # a reader is told to wait, not to change --output
        _one_line_error(
            capsys,
            "is being written by another process (lock f.h5.lock); wait for it to finish, then read it",
        )
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        proc.wait()
    assert FeatureFile(out).num_rows == 20
    assert not partial_path(out).exists() and not lock_path(out).exists()
    # an --overwrite run killed half-way leaves the finished file as it was (atomic replace)
    before = out.read_bytes()
    proc = _slow_extract(prompts, out, "--overwrite")
    proc.kill()
    proc.wait()
    assert out.read_bytes() == before and FeatureFile(out).num_rows == 20
    assert partial_path(out).exists()
    assert main(["info", str(out)]) == 0
    assert "complete" in capsys.readouterr().out


def _one_line_error(capsys, match: str) -> None:
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("probing ") and ": error: " in last, err
    assert match in last, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--model.name", "/nonexistent/model"], "does not exist; fix --model.name"),
        (["--model.name", "no-such-org/no-such-model"], "not in the local cache"),
        (["--prompts", '[{"path": "/nonexistent.csv"}]'], "does not exist"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
        (["--max_tokens", "5"], "no prompt is usable"),
    ],
)
def test_cli_bad_input(tmp_path, model_dir, prompts, capsys, args, match):
    base = [
        "--model.name",
        str(model_dir),
        "--prompts",
        f'[{{"path": "{prompts}"}}]',
        "--output",
        str(tmp_path / "o.h5"),
    ]
    assert cli(*base, *args) == 2
    _one_line_error(capsys, match)
    assert not (tmp_path / "o.h5").exists()


ENCODED = {
    "utf16.csv": ("goal\nhello there\n".encode("utf-16"), "not UTF-8 text (UTF-16"),
    "utf16be.txt": (b"\xfe\xff" + "hello there\n".encode("utf-16-be"), "not UTF-8 text (UTF-16"),
    "utf16.jsonl": ('{"prompt": "hi"}\n'.encode("utf-16"), "not UTF-8 text (UTF-16"),
    "binary.txt": (b"\x7fELF\x02\x01\x00\x00" + bytes(range(256)), "not UTF-8 text"),
    "latin1.csv": ("goal\ncaf\u00e9 au lait\n".encode("latin-1"), "undecodable byte at offset 8"),
    "latin1.json": ('[{"prompt": "\u00fcber"}]'.encode("latin-1"), "undecodable byte"),
    "text.parquet": (b"goal\nthis is a CSV file, not Parquet\n", "not a readable Parquet file"),
}


@pytest.mark.parametrize("name", sorted(ENCODED))
def test_cli_prompt_file_encodings(tmp_path, model_dir, capsys, name):
    """A prompt file that is not UTF-8 (or not what its suffix says): exit 2, one line naming it."""
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow")
    data, match = ENCODED[name]
    bad = tmp_path / name
    bad.write_bytes(data)
    out = tmp_path / "o.h5"
    args = ["--model.name", str(model_dir), "--prompts", f'[{{"path": "{bad}"}}]']
    assert cli(*args, "--output", str(out)) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("probing ") and ": error: " in last and "Traceback" not in err, err
    assert str(bad) in last and match in last, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("p.csv", "goal,id\nfirst prompt,1\nsecond prompt,2\n"),
        ("p.txt", "first prompt\nsecond prompt\n"),
        ("p.json", '[{"prompt": "first prompt"}, {"prompt": "second prompt"}]'),
        ("p.jsonl", '{"prompt": "first prompt"}\n{"prompt": "second prompt"}\n'),
    ],
)
def test_cli_bom_gives_the_same_prompts(tmp_path, model_dir, name, text):
    """A UTF-8 BOM is dropped: the same prompts (the first one included) as without it."""
    stored = []
    for bom in (b"", b"\xef\xbb\xbf"):
        folder = tmp_path / ("bom" if bom else "plain")
        folder.mkdir()
        (folder / name).write_bytes(bom + text.encode())
        out = folder / "f.h5"
        args = ["--model.name", str(model_dir), "--prompts", f'[{{"path": "{folder / name}"}}]']
        assert cli(*args, "--output", str(out)) == 0
        ff = FeatureFile(out)
        order = np.argsort(ff.column("prompt_index"))
        stored.append([ff.column("prompt")[i] for i in order])
    assert stored[0] == stored[1] == ["first prompt", "second prompt"]


def test_unwritable_output(tmp_path, model_dir, prompts, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert (
        cli(
            "--model.name",
            str(model_dir),
            "--prompts",
            f'[{{"path": "{prompts}"}}]',
            "--output",
            str(blocker / "o.h5"),
        )
        == 2
    )
    _one_line_error(capsys, "is a file, not a folder; choose another --output")


def test_unknown_architecture(tmp_path, prompts, capsys):
    model = save_tiny(tmp_path / "opt", "opt")
    assert (
        cli(
            "--model.name",
            str(model),
            "--prompts",
            f'[{{"path": "{prompts}"}}]',
            "--output",
            str(tmp_path / "o.h5"),
        )
        == 2
    )
    _one_line_error(capsys, "unsupported architecture 'opt'")


def test_output_of_another_model_is_refused(tmp_path, model_dir, prompts, capsys):
    out = tmp_path / "o.h5"
    other = save_tiny(tmp_path / "tiny-gpt2", "gpt2")
    assert (
        cli(
            "--model.name",
            str(other),
            "--prompts",
            f'[{{"path": "{prompts}"}}]',
            "--output",
            str(out),
        )
        == 0
    )
    assert (
        cli(
            "--model.name",
            str(model_dir),
            "--prompts",
            f'[{{"path": "{prompts}"}}]',
            "--output",
            str(out),
        )
        == 2
    )
    _one_line_error(capsys, f"features of model '{other}'")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1]
    assert (
        cli(
            "--model.name",
            str(model_dir),
            "--prompts",
            f'[{{"path": "{prompts}"}}]',
            "--output",
            str(foreign),
        )
        == 2
    )
    _one_line_error(capsys, "not a probing feature file")
    assert main(["info", str(foreign)]) == 2


def test_too_long_skip_and_truncate(tmp_path, prompts, caplog):
    lm = tiny_lm("llama")
    base = {"prompts": [PromptSource(path=str(prompts))], "progress": False, "max_tokens": 40}
    skip = FeatureFile(extract(ExtractConfig(output=str(tmp_path / "s.h5"), **base), lm=lm))
    assert skip.num_rows < 20 and skip.meta["skipped"]["too_long"] == 20 - skip.num_rows
    trunc = FeatureFile(
        extract(ExtractConfig(output=str(tmp_path / "t.h5"), too_long="truncate", **base), lm=lm)
    )
    assert trunc.num_rows == 20 and max(trunc.column("n_tokens")) == 40
    assert f"truncated {20 - skip.num_rows} prompts from the left to 40 tokens" in caplog.text
    # which rows were cut is recorded, and `rendered` holds the text the model actually saw
    flags, n_tokens = trunc.column("truncated"), trunc.column("n_tokens")
    assert flags.dtype == bool and flags.sum() == 20 - skip.num_rows
    assert (n_tokens[flags] == 40).all() and (n_tokens[~flags] <= 40).all()
    kept = set(skip.column("rendered"))
    for text, cut, n in zip(trunc.column("rendered"), flags, n_tokens):
        assert (text in kept) != cut
        assert len(lm.tokenizer(text)["input_ids"]) == n
    assert not skip.column("truncated").any()


def test_default_max_tokens_is_the_models_context(tmp_path, model_dir, capsys):
    """No --max_tokens: the limit is the model's max_position_embeddings (256), not 4096."""
    prompts = tmp_path / "long.csv"
    prompts.write_text("goal\n" + "short one\nshort two\n" + "y" * 600 + "\n")
    out = tmp_path / "ctx.h5"
    assert (
        cli(
            "--model.name",
            str(model_dir),
            "--prompts",
            f'[{{"path": "{prompts}"}}]',
            "--output",
            str(out),
        )
        == 0
    )
    ff = FeatureFile(out)
    assert ff.num_rows == 2 and ff.meta["skipped"] == {"too_long": 1}
    assert (
        cli(
            "--model.name",
            str(model_dir),
            "--prompts",
            f'[{{"path": "{prompts}"}}]',
            "--output",
            str(tmp_path / "t.h5"),
            "--too_long",
            "truncate",
        )
        == 0
    )
    ff = FeatureFile(tmp_path / "t.h5")
    assert ff.num_rows == 3 and max(ff.column("n_tokens")) == 256
    assert ff.column("truncated").tolist() == [True, False, False]


def test_gguf_context_length_reads_the_header(tmp_path):
    gguf = pytest.importorskip("gguf")
    from probing.models.context import gguf_context_length

    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list([f"t{i}" for i in range(300)])  # arrays before the key are skipped
    writer.add_token_scores([0.0] * 300)
    writer.add_context_length(8192)
    writer.add_tensor("w", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_context_length(path) == 8192
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00")
    assert gguf_context_length(tmp_path / "bad.gguf") is None
    assert gguf_context_length(tmp_path / "missing.gguf") is None


@pytest.mark.slow
def test_embedded_model_on_paper_data(tmp_path, shared_data):
    """The real embedded model: a few dozen prompts of the paper's data, checked end to end."""
    pytest.importorskip("gguf")
    from probing.models import ModelConfig, load_model

    lm = load_model(ModelConfig())
    cfg = ExtractConfig(
        prompts=[
            PromptSource(path=str(shared_data / "normal_prompts.csv"), label="normal", limit=16),
            PromptSource(
                path=str(shared_data / "advbench_plus_malicious.csv"), label="malicious", limit=16
            ),
        ],
        output=str(tmp_path / "real.h5"),
        progress=False,
    )
    ff = FeatureFile(extract(cfg, lm=lm))
    assert ff.num_layers == 31 and ff.hidden_size == 576 and ff.num_rows == 32
    assert ff.meta["template"] == "chat" and len(ff.meta["gguf_sha256"]) == 64
    assert np.bincount(ff.labels).tolist() == [16, 16]
    hidden = ff.column("hidden").astype(np.float32)
    assert np.isfinite(hidden).all() and hidden.std() > 0
    import torch

    text = ff.column("rendered")[0]
    with torch.no_grad():
        logits = lm.model(**lm.tokenizer(text, return_tensors="pt")).logits[0, -1]
    assert ff.lens(0)[0][0, -1, 0] == int(logits.argmax())


def test_model_free_checks_and_config_errors_come_first(
    tmp_path, model_dir, prompts, capsys, monkeypatch
):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before a check that needs none")

    monkeypatch.setattr("probing.features.extract.load_model", no_model)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    base = ["--model.name", str(model_dir), "--prompts", f'[{{"path": "{prompts}"}}]']
    assert cli(*base, "--output", str(blocker / "o.h5")) == 2
    _one_line_error(capsys, "is a file, not a folder; choose another --output")
    # a config error is one line with the --help hint, not a usage dump
    for args, match in (
        (["--batch_size", "abc"], 'Parser key "batch_size"'),
        (["--no_such_option", "1"], "unrecognized arguments"),
    ):
        assert cli(*base, *args) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "usage:" not in err, err
        assert err.startswith("probing extract: error: ") and match in err
        assert err.endswith("see `probing extract --help`")
