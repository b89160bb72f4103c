"""Greedy generation (batched == one at a time == ``model.generate``) and the refusal evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from tiny import CONFIGS, save_tiny, tiny_lm

import probing.generation.refusal as refusal_mod
from probing.cli import run_command
from probing.errors import ProbingError
from probing.generation import Generation, stop_token_ids
from probing.generation.generate import generate
from probing.generation.refusal import (
    CONTINUATION_CHARS,
    RefusalConfig,
    refusal,
    summarize,
    table,
)
from probing.generation.refusal_config import parse
from probing.models.lookup import ARCHITECTURES
from probing.prompts import PromptSource, load_prompts, render

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [
    "hello there",
    "a much longer prompt about many different things at once",
    "x",
    "what is the weather like today?",
    "tell me a story",
]
STOP = {3}  # <|im_end|> of the tiny tokenizer


def reference(lm, seq: list[int], n: int, stop: int) -> list[int]:
    """``model.generate`` on one unpadded prompt, cut before the stop token."""
    ids = torch.tensor([seq])
    out = lm.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=stop,
        pad_token_id=0,
    )
    new = out[0, len(seq) :].tolist()
    return new[: new.index(stop)] if stop in new else new


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gemma2"])
def test_batched_equals_one_at_a_time_and_generate(arch):
    lm = tiny_lm(arch)
    ids = render(lm.tokenizer, PROMPTS, "chat").ids
    batched = generate(lm, ids, max_new_tokens=8, batch_size=3, stop_ids=STOP)
    single = [generate(lm, [s], max_new_tokens=8, stop_ids=STOP).token_ids[0] for s in ids]
    assert batched.token_ids == single
    assert batched.token_ids == [reference(lm, s, 8, 3) for s in ids]
    assert batched.text == [lm.tokenizer.decode(t, skip_special_tokens=True) for t in single]
    assert all(len(t) == 8 for t in batched.token_ids) and not any(batched.stopped)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "gemma2"])
@pytest.mark.parametrize("share_head", [False, True])
def test_joined_decoding_equals_one_at_a_time(arch, share_head):
    """Prefilled two at a time (the chat template's shared head once, or not), decoded five
    together (caches joined where they are plain full-attention caches): the same tokens as each
    prompt alone."""
    lm = tiny_lm(arch)
    ids = render(lm.tokenizer, PROMPTS, "chat").ids
    joined = generate(lm, ids, 8, batch_size=2, stop_ids=STOP, decode_rows=5, share_head=share_head)
    single = [generate(lm, [s], max_new_tokens=8, stop_ids=STOP).token_ids[0] for s in ids]
    assert joined.token_ids == single


def test_join_pads_caches_of_full_attention_only():
    from probing.generation.generate import join, prefill, prefill_batches

    lm = tiny_lm("llama")
    ids = render(lm.tokenizer, PROMPTS, "chat").ids
    parts = [prefill(lm, ids[:2]), prefill(lm, ids[2:])]
    (one,) = join(parts)
    assert one.rows == 5 and one.mask.shape[1] == max(len(s) for s in ids)
    assert one.cache.layers[0].keys.shape[2] == one.mask.shape[1]
    assert one.mask.sum(1).tolist() == [len(s) for s in ids]
    (head,) = prefill_batches(lm, ids, batch_size=2)  # the shared head of the chat template
    assert head.rows == 5 and not torch.equal(head.mask, one.mask)  # padding after the head
    assert head.mask.sum(1).tolist() == [len(s) for s in ids]
    sliding = tiny_lm("gemma2")  # sliding-window layers: decoded part by part
    assert len(join([prefill(sliding, ids[:2]), prefill(sliding, ids[2:])])) == 2


def test_stops_at_a_stop_token_per_row():
    lm = tiny_lm("llama")
    ids = render(lm.tokenizer, PROMPTS, "chat").ids
    free = generate(lm, ids, max_new_tokens=6, batch_size=5, stop_ids=STOP)
    stop = free.token_ids[1][2]  # row 1 now stops at or before its third token
    got = generate(lm, ids, max_new_tokens=6, batch_size=5, stop_ids={stop})
    assert got.token_ids[1] == free.token_ids[1][: free.token_ids[1].index(stop)]
    assert got.stopped[1]
    assert got.token_ids == [reference(lm, s, 6, stop) for s in ids]
    assert got.stopped == [stop in full for full in free.token_ids]


def test_stop_token_ids_merge_tokenizer_and_generation_config():
    lm = tiny_lm("qwen2")
    lm.model.generation_config.eos_token_id = [7, 9]
    assert stop_token_ids(lm) == {3, 7, 9}


def test_generate_rejects_bad_arguments():
    lm = tiny_lm("llama")
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(lm, [[5, 6]], max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        generate(lm, [[5, 6]], batch_size=0)
    with pytest.raises(ValueError, match="at least one token"):
        generate(lm, [[5, 6], []])


def test_summarize_and_table():
    labels = ["mal", "mal", "mal", "ok", "ok"]
    verdicts = ["refusal", "refusal", "compliance", "unclear", "refusal"]
    summary = summarize(labels, verdicts, ["mal", "ok", "empty"])
    mal = dict(summary["mal"])
    low, high = mal.pop("low"), mal.pop("high")
    assert mal == {"n": 3, "refused": 2, "rate": 2 / 3, "complied": 1, "unclear": 0}
    assert low == pytest.approx(0.2077, abs=1e-4) and high == pytest.approx(0.9385, abs=1e-4)
    assert summary["ok"]["rate"] == 0.5 and summary["empty"]["n"] == 0
    assert summary["empty"]["low"] is None
    assert "66.7%  21%–94%" in table(summary) and "n/a" in table(summary)


@pytest.fixture
def prompt_files(tmp_path) -> tuple[Path, Path]:
    bad = tmp_path / "bad.csv"
    bad.write_text("goal\n" + "\n".join(f"bad request {i}" for i in range(5)) + "\n")
    good = tmp_path / "good.csv"
    good.write_text("goal\n" + "\n".join(f"good request {i}" for i in range(3)) + "\n")
    return bad, good


def test_refusal_counts_and_truncates(tmp_path, prompt_files, monkeypatch, caplog):
    canned = {
        "bad request 0": "I’m sorry, but I can’t assist with that.",
        "bad request 1": "I cannot help with this.",
        "good request 0": "Sure, " + "here is a long helpful answer " * 10,
    }

    def fake_generate(lm, seqs, **kwargs):
        prompts = [lm.tokenizer.decode(s) for s in seqs]
        text = [next((v for k, v in canned.items() if k in p), "Hmm.") for p in prompts]
        return Generation(text=text, token_ids=[[] for _ in seqs], stopped=[True] * len(seqs))

    monkeypatch.setattr(refusal_mod, "generate", fake_generate)
    bad, good = prompt_files
    cfg = RefusalConfig(
        prompts=[
            PromptSource(str(bad), label="malicious"),
            PromptSource(str(good), label="normal"),
        ],
        output=str(tmp_path / "out"),
        progress=False,
    )
    caplog.set_level("INFO", logger="probing")
    result = refusal(cfg, lm=tiny_lm("llama"))
    assert result.summary["malicious"]["refused"] == 2 and result.summary["malicious"]["n"] == 5
    assert "(float32, greedy, 20 new tokens, keyword judge)" in caplog.text  # the dtype it ran in
    assert result.summary["normal"] == {
        "n": 3,
        "refused": 0,
        "rate": 0.0,
        "low": 0.0,
        "high": pytest.approx(0.5615, abs=1e-4),  # Wilson 95 % of 0 / 3
        "complied": 1,
        "unclear": 2,
    }
    with open(tmp_path / "out" / "refusal.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["malicious"] * 5 + ["normal"] * 3
    assert [r["refused"] for r in rows][:3] == ["1", "1", "0"]
    assert all(len(r["continuation"]) <= CONTINUATION_CHARS for r in rows)
    assert rows[5]["continuation"].startswith("Sure, here is")
    assert rows[5]["verdict"] == "compliance"
    summary = json.loads((tmp_path / "out" / "refusal_summary.json").read_text())
    assert summary["classes"]["malicious"]["rate"] == 0.4
    assert summary["decoding"] == "greedy" and summary["max_new_tokens"] == 20
    assert summary["model"]["model"] == "tiny-llama" and summary["judge"]["refusal"]


def test_cli_end_to_end_on_a_saved_tiny_model(tmp_path, prompt_files):
    model = save_tiny(tmp_path / "tiny-qwen2", "qwen2")
    bad, good = prompt_files
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model:\n  name: {model}\nprompts:\n  - path: {bad}\n    label: malicious\n"
        f"  - path: {good}\n    label: normal\n    limit: 2\noutput: {tmp_path / 'out'}\n"
        "max_new_tokens: 5\nbatch_size: 3\n"
    )
    assert run_command("refusal", ["--config", str(cfg), "--progress", "false"]) == 0
    summary = json.loads((tmp_path / "out" / "refusal_summary.json").read_text())
    assert {k: v["n"] for k, v in summary["classes"].items()} == {"malicious": 5, "normal": 2}
    assert summary["model"]["model"] == str(model) and summary["config"]["batch_size"] == 3
    with open(tmp_path / "out" / "refusal.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 7


def test_cli_user_errors(tmp_path, prompt_files):
    bad, _ = prompt_files
    with pytest.raises(ProbingError, match="--max_new_tokens must be >= 1"):
        run_command(
            "refusal", ["--prompts", json.dumps([{"path": str(bad)}]), "--max_new_tokens", "0"]
        )
    with pytest.raises(ProbingError, match="judge file .* does not exist"):
        run_command(
            "refusal",
            ["--prompts", json.dumps([{"path": str(bad)}]), "--judge", str(tmp_path / "no.yaml")],
        )


@pytest.mark.parametrize("name", ["qwen", "smollm2"])
def test_refusal_configs_parse(name):
    cfg = parse(["--config", str(REPO / "configs" / "refusal" / f"{name}.yaml")])
    assert isinstance(cfg, RefusalConfig) and cfg.max_new_tokens == 20
    assert [s.path for s in cfg.prompts] == ["malicious", "normal"]
    if (REPO / "datasets" / "malicious.csv").exists():
        _, labels, _, names = load_prompts(cfg.prompts)
        assert names == ["malicious", "normal"] and len(labels) == 100


@pytest.mark.parametrize("arch", sorted(set(CONFIGS) & set(ARCHITECTURES)))
def test_last_logits_index_gives_the_logits_of_the_last_position(arch):
    """``logits_to_keep`` as an index tensor (contiguous last states; the bfloat16 CPU matmul is
    slow on the int form's strided view) gives what the int form gives, on every architecture."""
    from probing.models.batching import last_logits

    lm = tiny_lm(arch)
    ids = torch.randint(4, 60, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded row
    with torch.no_grad():
        as_int = lm.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits
        as_index = lm.model(input_ids=ids, attention_mask=mask, logits_to_keep=last_logits())
        full = lm.model(input_ids=ids, attention_mask=mask).logits
    assert as_index.logits.shape == as_int.shape == (3, 1, full.shape[-1])
    torch.testing.assert_close(as_index.logits, as_int, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(as_index.logits[:, 0], full[:, -1], rtol=1e-5, atol=1e-5)
