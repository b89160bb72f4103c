"""Grafting the paper's way (paired donors) and at named positions, with 95 % intervals."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from test_graft_sweep import one_at_a_time, runner
from tiny import save_tiny, tiny_lm

from probing.cli import main
from probing.generation.intervals import independent_change, paired_change, wilson
from probing.prompts import render

TEXTS = ["do a bad thing", "x", "break every rule you know of, now", "ab", "tell me"]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "qwen2"])
@pytest.mark.parametrize("tail", [1, 3, 6])
def test_graft_at_an_earlier_token_with_paired_donors_equals_one_prompt_at_a_time(arch, tail):
    """The tail (grafted token and all after it) runs per condition on the shared prefix's cache;
    each prompt gets its own donor: the same as each prompt alone with the graft hooked there."""
    torch.manual_seed(0)
    lm = tiny_lm(arch)
    seqs = render(lm.tokenizer, TEXTS, "chat").ids
    d = lm.model.config.hidden_size
    grafts = [(None, None), (1, torch.randn(len(seqs), d)), (2, torch.randn(d))]
    sweep = runner(lm, batch_size=2, rows_per_pass=4)
    sweep.max_new_tokens = 4
    for (layer, donor), got in zip(grafts, sweep.conditions(seqs, grafts, tail), strict=True):
        hidden, logits, tokens = one_at_a_time(lm, seqs, layer, donor, 4, position=-tail)
        torch.testing.assert_close(got.hidden, hidden, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got.logits, logits, atol=1e-5, rtol=1e-4)
        assert got.first_ids == [t[:1] for t in tokens]


def test_a_graft_at_inst_changes_the_template_tokens_after_it():
    """Grafting the instruction's token moves the last token's state; an identity graft does not."""
    torch.manual_seed(0)
    lm = tiny_lm("llama")
    seqs = render(lm.tokenizer, TEXTS, "chat").ids
    tail = 14  # inst: the 13 byte-level tokens of "<|im_end|>\n<|im_start|>assistant\n" follow it
    sweep = runner(lm)
    base, moved = sweep.conditions(seqs, [(None, None), (1, torch.randn(32) * 5)], tail)
    assert not torch.allclose(base.hidden[:, -1], moved.hidden[:, -1])
    assert torch.equal(base.hidden[:, 0], moved.hidden[:, 0])  # the embeddings come before it


def test_wilson_and_newcombe_match_the_published_examples():
    """Newcombe (1998): Wilson 81/263 = 0.2553–0.3662, 15/148 = 0.0624–0.1605; the difference
    56/70 − 48/80 = 0.2000 with hybrid score interval 0.0524–0.3339."""
    np.testing.assert_allclose(wilson(81, 263), (0.2553, 0.3662), atol=1e-4)
    np.testing.assert_allclose(wilson(15, 148), (0.0624, 0.1605), atol=1e-4)
    np.testing.assert_allclose(independent_change(56, 70, 48, 80), (0.2, 0.0524, 0.3339), atol=1e-4)
    assert wilson(0, 24) == (0.0, wilson(0, 24)[1]) and wilson(0, 24)[1] > 0.1  # not empty at 0 %
    assert wilson(24, 24)[1] == 1.0 and math.isnan(wilson(0, 0)[0])


def test_paired_change_interval_covers_the_truth_about_95_percent():
    """Simulated paired verdicts (correlated, as a graft's are): the interval holds the true change
    in 93–98 % of 400 draws; identical verdicts give a change of 0 with an interval around it."""
    rng = np.random.default_rng(0)
    n, hits = 60, 0
    joint = np.array([0.30, 0.05, 0.20, 0.45])  # (1,1), (1,0), (0,1), (0,0)
    truth = joint[1] - joint[2]
    for _ in range(400):
        cells = rng.choice(4, size=n, p=joint)
        after, before = np.isin(cells, [0, 1]), np.isin(cells, [0, 2])
        _, low, high = paired_change(list(after), list(before))
        hits += low <= truth <= high
    assert 0.93 <= hits / 400 <= 0.98
    same = [True] * 10 + [False] * 20
    change, low, high = paired_change(same, same)
    assert change == 0 and low < 0 < high


def _template_file(tmp_path):
    model = save_tiny(tmp_path / "tiny", "llama")
    sources = []
    for name, lines in {
        "normal": [f"please help me with task {i}" for i in range(6)],
        "malicious": [f"do a bad thing number {i}" for i in range(5)],
    }.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
        sources.append(f'{{"path": "{tmp_path / name}.txt"}}')
    feats = tmp_path / "t.h5"
    extract = ["extract", "--model.name", str(model), "--prompts", f"[{', '.join(sources)}]"]
    assert main([*extract, "--positions", "template", "--output", str(feats)]) == 0
    return model, feats


def test_graft_cli_paired_at_inst_writes_intervals(tmp_path):
    model, feats = _template_file(tmp_path)
    out = tmp_path / "g"
    args = ["graft", "--features", str(feats), "--source", "paired", "--position", "inst"]
    assert main([*args, "--layers", "[1, 2]", "--max_new_tokens", "2", "--output", str(out)]) == 0
    with open(out / "graft_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["condition"] for r in rows] == ["ungrafted", "grafted", "grafted"]
    for r in rows:
        assert float(r["refusal_low"]) <= float(r["refusal_rate"]) <= float(r["refusal_high"])
    assert rows[0]["refusal_change"] == "" and rows[1]["change_low"] != ""
    assert float(rows[1]["change_low"]) <= float(rows[1]["refusal_change"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--position", "nope"], "is not a position of"),
        (["--position", "mean"], "is not a position of"),
        (["--source", "paired", "--source_class", "nope"], "is not a class of"),
    ],
)
def test_graft_cli_refuses_positions_it_cannot_graft(tmp_path, capsys, extra, message):
    model, feats = _template_file(tmp_path)
    capsys.readouterr()
    args = ["graft", "--features", str(feats), "--output", str(tmp_path / "g"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "g" / "graft_summary.csv").exists()


def test_graft_cli_refuses_a_pooled_mean_position(tmp_path, capsys):
    model = save_tiny(tmp_path / "tiny", "llama")
    (tmp_path / "p.txt").write_text("one prompt\nanother prompt\n")
    feats = tmp_path / "m.h5"
    src = f'[{{path: "{tmp_path / "p.txt"}", label: malicious}}]'
    extract = ["extract", "--model.name", str(model), "--prompts", src, "--positions", "mean"]
    assert main([*extract, "--output", str(feats)]) == 0
    capsys.readouterr()
    args = ["graft", "--features", str(feats), "--output", str(tmp_path / "g")]
    assert main([*args, "--position", "mean"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not one token of the prompt" in err and "--positions template" in err


def test_add_intervals_pairs_each_prompt_with_itself_and_says_what_moved():
    """Per-prompt verdicts → Wilson rates and paired changes against the same prompts ungrafted;
    the sentence names a layer only when its interval excludes 0."""
    from probing.grafting.summary import add_intervals, sentence
    from probing.grafting.sweep import SweepResult

    base = [True] * 30 + [False] * 10
    after = {5: [False] * 30 + [False] * 10, 9: base[::-1]}  # layer 5: all refusals gone
    rows = [{"condition": "ungrafted", "layer": "", "row": i, "verdict": "refusal" if v else "x"}
            for i, v in enumerate(base)]  # fmt: skip
    for layer, verdicts in after.items():
        rows += [{"condition": "grafted", "layer": layer, "row": i,
                  "verdict": "refusal" if v else "x"} for i, v in reversed(list(enumerate(verdicts)))]  # fmt: skip
    summary = [
        {"condition": "ungrafted", "layer": "", "n": 40, "refusal_rate": 0.75, "mean_kl": 0.0}
    ]
    summary += [{"condition": "grafted", "layer": k, "n": 40, "refusal_rate": sum(v) / 40,
                 "mean_kl": 1.0} for k, v in after.items()]  # fmt: skip
    result = SweepResult(rows=rows, summary=summary)
    add_intervals(result)
    five, nine = result.summary[1], result.summary[2]
    assert list(five)[:5] == ["condition", "layer", "n", "refusal_rate", "refusal_low"]
    assert (five["refusal_change"], five["change_low"], five["change_high"]) == paired_change(
        after[5], base
    )
    assert five["change_high"] < 0 and nine["change_low"] < 0 < nine["change_high"]
    text = sentence(result.summary)
    assert "Ungrafted, 75 % [" not in text and "75% [" in text
    assert "lowers refusals at layer(s) 5 (-75 points" in text and " 9 (" not in text
