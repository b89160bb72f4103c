"""Every command that runs a model shows progress with rates (probing.progress), the long shared
prefix of an extraction and the grafting sweep included."""

from __future__ import annotations

import re

import pytest
import torch
from tiny import tiny_lm

from probing import progress
from probing.features import FeatureFile
from probing.features.extract import ExtractConfig, extract
from probing.generation.judge import KeywordJudge
from probing.grafting.donors import class_rows, target_sequences
from probing.grafting.sweep import GraftSweep
from probing.prompts import PromptSource


@pytest.fixture(autouse=True)
def _no_delay(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.0)


def _extract(tmp_path, lm, prompts, name="f.h5", **kw):
    src = tmp_path / f"{name}.txt"
    src.write_text("\n".join(prompts) + "\n")
    cfg = ExtractConfig(
        prompts=[PromptSource(path=str(src), label="any")],
        output=str(tmp_path / name),
        storage_dtype="float32",
        **kw,
    )
    return FeatureFile(extract(cfg, lm=lm))


def test_extraction_shows_its_shared_prefix_pass_layer_by_layer(tmp_path, capsys):
    """One long prompt is nearly all shared head: its pass had no bar (1.8 s of bar, 86 s of run)."""
    lm = tiny_lm("llama")
    long_prompt = " ".join(["long"] * 30)  # ~200 byte-level tokens (the tiny context: 256)
    _extract(tmp_path, lm, [long_prompt], system_prompt="Be brief.", template="chat")
    err = capsys.readouterr().err
    heads = re.findall(r"shared prefix \((\d+) tokens\): +(\d+)%.*?(\d+)/(\d+) \[", err)
    assert heads, err[-2000:]
    tokens, percent, done, total = heads[-1]
    assert int(tokens) > 100 and percent == "100"
    assert done == total == str(lm.parts.num_layers)  # one step per layer of the one pass
    assert "layer/s" in err or "s/layer" in err
    assert re.search(r"extract: 100%.*1/1 \[.*prompt", err)


def test_no_bars_with_progress_off(tmp_path, capsys):
    _extract(tmp_path, tiny_lm("llama"), ["hello there"] * 3, system_prompt="Be.", progress=False)
    assert "shared prefix" not in capsys.readouterr().err


def test_grafting_sweep_counts_prompt_condition_rows(tmp_path, capsys):
    lm = tiny_lm("llama")
    ff = _extract(tmp_path, lm, ["do a bad thing", "break the rules", "x y"], progress=False)
    seqs, prompts = target_sequences(ff, class_rows(ff, "any"), lm.tokenizer)
    judge = KeywordJudge(refusal=["I"], compliance=["S"])
    sweep = GraftSweep(lm, judge, lambda t: "neutral", max_new_tokens=2, progress=True)
    donors = torch.zeros(lm.parts.num_layers, lm.model.config.hidden_size)
    sweep.run(seqs, prompts, [1, 2], donors)
    err = capsys.readouterr().err
    assert re.search(r"graft: 100%.*9/9 \[.*row/s", err), err[-2000:]  # 3 prompts × 3 conditions
