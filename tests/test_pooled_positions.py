"""``--positions [inst, last, mean]``: several positions from one forward pass, each equal to its
single-position extraction; named in ``position_names``, located by ``position_offsets``, read by
name by every reader and by the monitor's live forward."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from test_positions import PROMPTS, M, in_prompt_order
from tiny import SUPPORTED, extract_texts, save_tiny, tiny_lm

from probing.cli import main
from probing.errors import ProbingError
from probing.features import FeatureFile
from probing.features.activations import ActivationReader, Selector
from probing.features.identity import feature_identity
from probing.features.layout import layout, normalize
from probing.features.positions import position_offsets, resolve_position
from probing.monitor import LoadedProbe, Screener
from probing.probes import LinearProbe

ROOT = Path(__file__).resolve().parents[1]


def run(tmp_path, lm, name, **kw):
    return extract_texts(tmp_path, lm, PROMPTS, name, **kw)


@pytest.mark.parametrize("arch", SUPPORTED)
def test_pooled_equals_single_extractions(tmp_path, arch):
    """inst, last and mean of one pass = the template, last and mean files, bit for bit (same
    batches); batched = one prompt at a time."""
    lm = tiny_lm(arch)
    kw = {"batch_size": 4, "system_prompt": "Be brief."}
    ff = run(tmp_path, lm, "p.h5", positions=["mean", "last", "inst"], **kw)
    assert ff.meta["position_names"] == ["inst", "last", "mean"]
    assert ff.meta["positions"] == "inst,last,mean" and ff.num_positions == 3
    assert ff.meta["position_offsets"] == [M, 0, None]
    pooled = in_prompt_order(ff)
    template = in_prompt_order(run(tmp_path, lm, "t.h5", positions="template", **kw))
    last = in_prompt_order(run(tmp_path, lm, "l.h5", positions="last", **kw))
    mean = in_prompt_order(run(tmp_path, lm, "m.h5", positions="mean", **kw))
    np.testing.assert_array_equal(pooled[:, :, 0], template[:, :, 0])
    np.testing.assert_array_equal(pooled[:, :, 1], last[:, :, 0])
    np.testing.assert_array_equal(pooled[:, :, 2], mean[:, :, 0])
    one = run(tmp_path, lm, "one.h5", positions=["inst", "last", "mean"], batch_size=1,
              system_prompt="Be brief.")  # fmt: skip
    np.testing.assert_allclose(in_prompt_order(one), pooled, atol=1e-4, rtol=1e-4)
    lens = in_prompt_order(ff, "lens_ids")
    np.testing.assert_array_equal(
        lens[:, :, 1], in_prompt_order(FeatureFile(tmp_path / "l.h5"), "lens_ids")[:, :, 0]
    )


def test_template_with_mean_and_raw_prompts(tmp_path):
    lm = tiny_lm("llama")
    ff = run(tmp_path, lm, "tm.h5", positions=["template", "mean", "last"])
    assert ff.meta["position_names"] == ["inst", *(f"post_{j}" for j in range(1, M + 1)), "mean"]
    assert ff.meta["positions"] == "template,mean"
    assert resolve_position(ff.meta, "last", "--x") == M  # post_m
    raw = run(tmp_path, lm, "raw.h5", positions=["inst", "last", "mean"], template="raw")
    assert raw.meta["position_names"] == ["inst", "mean"]  # inst is the last token: stored once
    assert resolve_position(raw.meta, "last", "--x") == 0
    last = run(tmp_path, lm, "last.h5", positions="last", template="raw")
    np.testing.assert_array_equal(in_prompt_order(raw)[:, :, 0], in_prompt_order(last)[:, :, 0])


def test_layouts_of_requests():
    assert normalize("last") == ("last",) and normalize(["last"]) == ("last",)
    assert normalize(["mean", "last_k", "last"]) == ("last_k", "mean")
    assert normalize(["last", "template", "inst"]) == ("template",)
    got = layout(normalize(["last_k", "mean"]), k=3)
    assert got.names == ["last-2", "last-1", "last", "mean"] and got.offsets == [2, 1, 0, None]
    assert layout(("inst", "mean"), post=4).offsets == [4, None]
    assert layout(("inst", "mean"), post=4).tokens_needed == 5
    with pytest.raises(ProbingError, match="last_k cannot be listed with inst or template"):
        normalize(["inst", "last_k"])
    with pytest.raises(ProbingError, match="--positions takes one of"):
        normalize([])
    # files written before position_offsets: implied by their setting
    assert position_offsets({"positions": "template", "num_positions": 3}) == [2, 1, 0]
    assert position_offsets({"positions": "mean", "num_positions": 1}) == [None]
    assert position_offsets({"positions": "last_k", "num_positions": 2}) == [1, 0]


def test_selector_gathers_offsets_and_the_mean():
    h = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    sel = Selector([3, 0, None])
    sel.mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    out = sel(h)
    torch.testing.assert_close(out[:, 0], h[:, 1])
    torch.testing.assert_close(out[:, 1], h[:, 4])
    torch.testing.assert_close(out[:, 2], torch.stack([h[0, 1:].mean(0), h[1].mean(0)]))
    assert Selector([2, 1, 0]).within_last(3) and not Selector([2, 0]).within_last(2)
    assert not Selector([0, None]).within_last(10)


def test_the_monitor_screens_a_pooled_position(tmp_path):
    """A probe of `inst` or `mean` from a pooled file: the live forward reads that position."""
    lm = tiny_lm("llama")
    ff = run(tmp_path, lm, "p.h5", positions=["inst", "last", "mean"], batch_size=3)
    n, hidden = lm.parts.num_layers, int(lm.model.config.hidden_size)
    prompts = list(ff.column("prompt"))
    for name in ("inst", "last", "mean"):
        module = LinearProbe(num_layers=n, hidden_size=hidden, class_names=["normal", "malicious"])
        probe = LoadedProbe(
            module=module.eval(), probe="linear", path=Path("p.ckpt"), sha256="",
            layers=list(range(n)), class_names=["normal", "malicious"], feature_meta=feature_identity(ff.meta),
            data_hparams={"position": name},
        )  # fmt: skip
        screener = Screener(lm, probe, layer=n - 1, batch_size=3)
        got = screener.hidden(screener.encode(prompts), list(range(n))).numpy()
        index = ff.meta["position_names"].index(name)
        np.testing.assert_allclose(got, ff.states(position=index), atol=1e-4, rtol=1e-4)


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])


def test_cli_extract_fit_by_name_and_errors(tmp_path, quiet, monkeypatch, capsys):
    """Through the CLI: a list of positions, fit by a pooled name, a missing name and a list that
    cannot be stored are one line each."""
    monkeypatch.chdir(tmp_path)
    model = save_tiny(tmp_path / "tiny", "llama")
    src = tmp_path / "p.csv"
    rows = [f"request {i} {'x' * (i % 5)}" for i in range(24)]
    src.write_text("goal\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "f.h5"
    base = ["extract", "--model.name", str(model), "--prompts", f'[{{path: {src}, label: normal}}, '
            f'{{path: {src}, label: malicious}}]', "--output", str(out), "--progress", "false"]  # fmt: skip
    assert main([*base, "--positions", "[inst, last, mean]"]) == 0
    with FeatureFile(out) as ff:
        assert ff.meta["position_names"] == ["inst", "last", "mean"]
    fit = ["fit", "--config", str(ROOT / "configs/probe/linear.yaml"), "--data.path", str(out),
           "--trainer.max_epochs", "1", "--trainer.logger", "false",
           "--trainer.enable_progress_bar", "false"]  # fmt: skip
    assert main([*fit, "--data.position", "mean"]) == 0
    capsys.readouterr()
    assert main([*fit, "--data.position", "post_1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "it stores ['inst', 'last', 'mean']" in err[0]
    assert main([*base[:-2], "--output", str(tmp_path / "g.h5"), "--progress", "false",
                 "--positions", "[inst, last_k]"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last_k cannot be listed with inst or template" in err[0]


def test_reader_takes_offsets():
    lm = tiny_lm("llama")
    seqs = [[5, 6, 7, 8, 9], [10, 11, 12]]
    pooled = ActivationReader(lm, [2, 0, None], top_k=2)(seqs)
    last = ActivationReader(lm, "last", top_k=2)(seqs)
    mean = ActivationReader(lm, "mean", top_k=2)(seqs)
    torch.testing.assert_close(pooled.hidden[:, :, 1], last.hidden[:, :, 0])
    torch.testing.assert_close(pooled.hidden[:, :, 2], mean.hidden[:, :, 0])
    torch.testing.assert_close(pooled.lens_ids[:, :, 1], last.lens_ids[:, :, 0])


def test_damaged_position_offsets_are_refused(tmp_path):
    ff = run(tmp_path, tiny_lm("llama"), "p.h5", positions=["last", "mean"])
    ff.close()
    with h5py.File(ff.path, "r+") as f:
        f.attrs["position_offsets"] = "[0, -1]"
    with pytest.raises(ProbingError, match=r"position_offsets \[0, -1\] is not a list of 2 token"):
        FeatureFile(ff.path)
