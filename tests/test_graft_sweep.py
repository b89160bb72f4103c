"""Grafting sweep on a tiny model: identity graft, reports, bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from tiny import tiny_lm

from probing.errors import ProbingError
from probing.features import FeatureFile
from probing.features.extract import ExtractConfig, extract
from probing.features.identity import require_same_model
from probing.generation.judge import KeywordJudge
from probing.grafting.donors import class_rows, target_sequences
from probing.grafting.run import GraftConfig, donors, plot, write
from probing.grafting.sweep import GraftSweep
from probing.prompts import PromptSource


def emotion(token: str) -> str:
    return {"S": "positive", "I": "negative"}.get(token.lstrip("Ġ")[:1], "neutral")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graft")
    lm = tiny_lm("llama")
    for name, lines in {
        "normal": ["hello there", "what is rain", "tell me a joke"],
        "malicious": ["do a bad thing", "break the rules now", "x y z", "another bad one"],
        "jailbreak": ["pretend you may do a bad thing"],
    }.items():
        (tmp / f"{name}.txt").write_text("\n".join(lines) + "\n")
    cfg = ExtractConfig(
        prompts=[
            PromptSource(path=str(tmp / f"{n}.txt")) for n in ("normal", "malicious", "jailbreak")
        ],
        output=str(tmp / "f.h5"),
        storage_dtype="float32",
        progress=False,
    )
    return lm, FeatureFile(extract(cfg, lm=lm)), tmp


def runner(lm, **kw):
    judge = KeywordJudge(refusal=["I"], compliance=["S"])
    return GraftSweep(lm, judge, emotion, max_new_tokens=3, **kw)


def test_identity_graft_gives_zero_kl(setup):
    lm, ff, _ = setup
    rows = class_rows(ff, "malicious")
    seqs, _ = target_sequences(ff, rows, lm.tokenizer)
    states = torch.from_numpy(ff.layers(rows=rows))  # [B, L, D] in row order
    sweep = runner(lm, batch_size=len(seqs))
    h0, logits0, text0, _ = sweep.condition(seqs, None, None)
    for layer in (0, 2, ff.num_layers - 1):
        h, logits, text, _ = sweep.condition(seqs, layer, states[:, layer])
        torch.testing.assert_close(logits, logits0, atol=1e-5, rtol=1e-5)
        assert text == text0
    np.testing.assert_allclose(h0.numpy(), states.numpy(), atol=1e-4)


def test_sweep_reports(setup, tmp_path):
    lm, ff, _ = setup
    rows = class_rows(ff, "malicious")
    seqs, prompts = target_sequences(ff, rows, lm.tokenizer)
    jb, _ = target_sequences(ff, class_rows(ff, "jailbreak"), lm.tokenizer)
    cfg = GraftConfig(features=str(ff.path), source="class_mean", output=str(tmp_path / "out"))
    result = runner(lm, batch_size=2).run(seqs, prompts, [1, 2, 3], donors(cfg, ff), jb)
    conditions = [s["condition"] for s in result.summary]
    assert conditions == ["ungrafted", "jailbreak", "grafted", "grafted", "grafted"]
    assert result.summary[0]["mean_kl"] == pytest.approx(0, abs=1e-6)
    assert all(s["mean_kl"] > 0 for s in result.summary[2:])
    assert len(result.rows) == 4 + 1 + 3 * 4
    assert all(len(r["continuation"]) <= 60 for r in result.rows)
    write(cfg, result, lm)
    with open(tmp_path / "out" / "graft_summary.csv") as f:
        header = next(csv.reader(f))
    assert (
        header[:4] == ["condition", "layer", "relative_depth", "n"] and "probe_flip_rate" in header
    )
    assert (tmp_path / "out" / "graft_sweep.png").stat().st_size > 1000


def test_a_row_donor_is_that_rows_state_per_layer(setup):
    """``--source row``: donor ``[L, D]`` = the row's stored state at every layer (it was the
    ``[D, L]`` stack reshaped to ``[L, D]``, a scramble, before FeatureFile.states)."""
    _, ff, _ = setup
    got = donors(GraftConfig(features=str(ff.path), source="row", source_row=3), ff)
    assert tuple(got.shape) == (ff.num_layers, ff.hidden_size)
    want = np.stack([ff.layer(i)[3] for i in range(ff.num_layers)])
    np.testing.assert_array_equal(got.numpy(), want)


def test_bad_input(setup, tmp_path):
    lm, ff, tmp = setup
    with pytest.raises(ProbingError, match="not a class of"):
        class_rows(ff, "nope", "--target_class")
    np.save(tmp_path / "v.npy", np.zeros(7, np.float32))
    with pytest.raises(ProbingError, match=r"expected \[32\]"):
        donors(
            GraftConfig(features=str(ff.path), source="vector", vector=str(tmp_path / "v.npy")), ff
        )
    with pytest.raises(ProbingError, match="out of range"):
        donors(GraftConfig(features=str(ff.path), source="row", source_row=99), ff)
    with pytest.raises(ProbingError, match=r"is from model .* leave --model.name unset"):
        require_same_model(ff.meta, tiny_lm("gpt2"), str(ff.path))
    sweep = runner(lm)
    seqs, prompts = target_sequences(ff, class_rows(ff, "malicious"), lm.tokenizer)
    with pytest.raises(ProbingError, match="out of range"):
        sweep.run(seqs, prompts, [9], torch.zeros(32))
    with pytest.raises(ProbingError, match="hidden size"):
        sweep.run(seqs, prompts, [1], torch.zeros(4, 31))
    plot([], tmp_path / "empty.png")


def test_grafting_callback_through_the_cli(tmp_path):
    """`probing fit` with a GraftingCallback in the YAML: the sweep runs at fit end with the probe."""
    from tiny import save_tiny

    from probing.cli import main

    model = save_tiny(tmp_path / "tiny", "llama")
    lines = {
        "normal": [f"please help me with task {i}" for i in range(12)],
        "malicious": [f"do a bad thing number {i}" for i in range(12)],
        "jailbreak": [f"pretend you may do bad thing {i}" for i in range(4)],
    }
    sources = []
    for name, items in lines.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(items) + "\n")
        sources.append(f'{{"path": "{tmp_path / name}.txt"}}')
    feats = tmp_path / "f.h5"
    assert (
        main(
            [
                "extract",
                "--model.name",
                str(model),
                "--prompts",
                f"[{', '.join(sources)}]",
                "--output",
                str(feats),
                "--progress",
                "false",
            ]
        )
        == 0
    )
    import json

    import h5py

    with h5py.File(feats, "r+") as f:  # a newer file: keys the callback does not know, remote code
        config = json.loads(f.attrs["config"])
        config["model"].update(quantization="int4", trust_remote_code=True)
        f.attrs["config"] = json.dumps(config)
    cfg = tmp_path / "probe.yaml"
    cfg.write_text(
        f"""
seed_everything: 1
trainer:
  max_epochs: 2
  logger: false
  enable_progress_bar: false
  default_root_dir: {tmp_path / "run"}
  callbacks:
    - class_path: probing.grafting.GraftingCallback
      init_args: {{limit: 3, layers: [1, 3], max_new_tokens: 2, batch_size: 2, model: {{device: cpu}}}}
model:
  class_path: probing.probes.LinearProbe
data:
  path: {feats}
  classes: [normal, malicious]
  split: [0.5, 0.25, 0.25]
  batch_size: 8
"""
    )
    assert main(["fit", "--config", str(cfg)]) == 0
    summary = tmp_path / "run" / "grafting" / "fit_end" / "graft_summary.csv"
    with open(summary) as f:
        rows = list(csv.DictReader(f))
    assert [r["condition"] for r in rows] == ["ungrafted", "jailbreak", "grafted", "grafted"]
    assert rows[2]["probe_flip_rate"] != "" and rows[3]["probe_flip_rate"] != ""


def test_jailbreak_transfer_counts_flags(setup, tmp_path):
    """Share flagged per layer = the probe's argmax on stored activations, counted by hand."""
    from probing.probes.module import LinearProbe
    from probing.probes.transfer import flagged_share, write

    _, ff, _ = setup
    torch.manual_seed(0)
    probe = LinearProbe(
        num_layers=ff.num_layers, hidden_size=ff.hidden_size, class_names=["normal", "malicious"]
    )
    probe.hparams["feature_meta"] = {"model": ff.meta["model"], "hidden_size": ff.hidden_size}
    rows = flagged_share(probe, ff, ["jailbreak", "normal"])
    assert len(rows) == 2 * ff.num_layers
    idx = class_rows(ff, "normal")
    x = torch.from_numpy(ff.layers(rows=idx))
    with torch.no_grad():
        expected = (probe(x)["linear"].argmax(-1) == 1).float().mean(0).numpy()
    got = [r["share_flagged"] for r in rows if r["class"] == "normal"]
    np.testing.assert_allclose(got, expected)
    csv_path, png = write(rows, tmp_path)
    assert png.stat().st_size > 1000 and csv_path.read_text().startswith(
        "probe,layer,class,n,share_flagged"
    )
    probe.hparams["feature_meta"] = {"model": "other", "hidden_size": ff.hidden_size}
    with pytest.raises(ProbingError, match="trained on model='other'"):
        flagged_share(probe, ff, ["normal"])
    probe.hparams["feature_meta"] = {}
    with pytest.raises(ProbingError, match="not in"):
        flagged_share(probe, ff, ["nope"])


def one_at_a_time(lm, seqs, layer, donor, n, position=-1):
    """The reference: each prompt alone, unpadded — states and logits from the extraction reader,
    continuation from ``generate`` — with the graft hook over the whole prompt (at ``position``;
    a donor ``[N, D]`` has one row per prompt)."""
    from contextlib import nullcontext

    from probing.features.activations import ActivationReader
    from probing.generation.generate import generate
    from probing.grafting import graft

    reader = ActivationReader(lm, "last")
    hidden, logits, tokens = [], [], []
    for i, s in enumerate(seqs):
        mine = donor[i] if donor is not None and donor.ndim == 2 else donor
        with nullcontext() if layer is None else graft(lm.parts, layer, mine, position):
            out = reader([s], logits=True)
        with nullcontext() if layer is None else graft(lm.parts, layer, mine, position):
            tokens += generate(lm, [s], n, batch_size=1).token_ids
        hidden.append(out.hidden[:, :, 0])
        logits.append(out.logits)
    return torch.cat(hidden), torch.cat(logits), tokens


TEXTS = ["do a bad thing", "x", "break every rule you know of, now", "ab", "tell me"]
CASES = [
    (arch, batch, rows, template)
    for arch in ["llama", "qwen2", "gpt2", "gemma2", "falcon", "mistral", "phi"]
    for batch, rows in [(2, 2), (2, 4), (3, 64)]
    for template in ["raw", "chat"]
    if template == "raw" or (arch in ("llama", "gpt2", "gemma2") and batch == 2)
]


@pytest.mark.parametrize(("arch", "batch_size", "rows_per_pass", "template"), CASES)
def test_shared_prefix_batched_sweep_equals_one_prompt_at_a_time(
    arch, batch_size, rows_per_pass, template
):
    """Prefix once (the chat template's common head once for all), conditions stacked on its
    cache, caches joined across prompt batches, finished rows dropped: the same states, logits and
    tokens as each prompt and condition run alone (raw prompts include one of a single token)."""
    from probing.prompts import render

    torch.manual_seed(0)
    lm = tiny_lm(arch)
    hidden_size = lm.model.config.hidden_size
    if template == "chat":
        seqs = render(lm.tokenizer, TEXTS, "chat").ids
    else:
        seqs = [lm.tokenizer(t).input_ids for t in TEXTS]
    last = lm.parts.num_layers - 1
    grafts = [(None, None), (0, torch.randn(hidden_size)), (1, torch.randn(hidden_size))]
    grafts.append((last, torch.randn(hidden_size)))
    sweep = runner(lm, batch_size=batch_size, rows_per_pass=rows_per_pass)
    sweep.max_new_tokens = 5
    outcomes = sweep.conditions(seqs, grafts)
    for (layer, donor), got in zip(grafts, outcomes, strict=True):
        hidden, logits, tokens = one_at_a_time(lm, seqs, layer, donor, 5)
        torch.testing.assert_close(got.hidden, hidden, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got.logits, logits, atol=1e-5, rtol=1e-4)
        assert got.texts == [lm.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
        assert got.first_ids == [t[:1] for t in tokens]


def test_paired_donors_never_graft_a_prompt_onto_itself():
    from probing.grafting.donors import paired_rows

    rows = np.arange(40, 80)
    for seed in range(20):  # the control: donors drawn from the targets' own class
        got = paired_rows(rows, rows, seed)
        assert not (got == rows).any() and sorted(got) == list(rows)  # still one donor each
    other = paired_rows(np.arange(10), np.arange(100, 130), 3)  # another class: a plain draw
    assert sorted(np.bincount(other, minlength=10)) == [3] * 10
    assert paired_rows(np.array([5]), np.array([5]), 0).tolist() == [5]  # no other pairing exists
