"""The live monitor: screening == the checkpoint on stored activations (reference), early stop,
thresholds vs sklearn, the CLI (screen, JSON, eval, guarded generation) and its errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from featurefactory import single_thread  # noqa: F401 (autouse fixture)
from sklearn.metrics import roc_auc_score, roc_curve
from tiny import SUPPORTED, save_tiny, tiny_lm

from probing.cli import run_command
from probing.data import ActivationDataModule
from probing.errors import ProbingError
from probing.features.extract import ExtractConfig, extract
from probing.features.store import FeatureFile
from probing.models.load import ModelConfig, load_model
from probing.monitor import (
    Scorer,
    Screener,
    calibrate_scores,
    choose_layer,
    feature_probs,
    guarded_generate,
    load_probe,
    threshold_at_fpr,
    tpr_at_fpr,
)
from probing.monitor.calibrate import STORE_NAME
from probing.monitor.config import MonitorConfig, build_parser, parse
from probing.monitor.labelled import calibrate_probe
from probing.monitor.run import monitor
from probing.probes import LinearMLPProbe
from probing.prompts import PromptSource, load_prompts

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    PromptSource(path="normal", limit=16, shuffle=True),
    PromptSource(path="malicious", limit=16, shuffle=True),
    PromptSource(path="jailbreak", limit=6, shuffle=True),
]


def train_probe(feat: Path, ckpt: Path, classes: list[str] | None) -> Path:
    """A tiny linear + MLP probe trained in process, saved like `probing fit` saves it."""
    L.seed_everything(0, verbose=False)
    dm = ActivationDataModule(str(feat), classes=classes, split=(0.5, 0.25, 0.25), batch_size=64)
    module = LinearMLPProbe(
        **dm.probe_args(),
        lr=0.05,
        hidden_dim=8,
    )
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(ckpt)
    return ckpt


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny llama saved to a folder (loadable by the CLI), its features (fp16) and two probes."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("monitor")
    folder = save_tiny(tmp / "tiny-llama", "llama")
    lm = load_model(ModelConfig(name=str(folder)))
    feat = tmp / "feat.h5"
    cfg = ExtractConfig(
        model=ModelConfig(name=str(folder)),
        prompts=SOURCES,
        output=str(feat),
        template="chat",
        too_long="truncate",  # jailbreak prompts exceed the tiny model's 256 positions
        storage_dtype="float32",  # the reference test compares live screening with stored states
        batch_size=8,
        progress=False,
    )
    extract(cfg, lm=lm)
    (tmp / "bin").mkdir()
    (tmp / "tri").mkdir()
    binary = train_probe(feat, tmp / "bin" / "probe.ckpt", ["normal", "malicious"])
    tri = train_probe(feat, tmp / "tri" / "probe.ckpt", None)
    return {"lm": lm, "feat": feat, "binary": binary, "tri": tri, "tmp": tmp, "folder": folder}


# -- the reference test -----------------------------------------------------------------------------
def test_screening_equals_probe_on_stored_activations(setup):
    probe = load_probe(setup["binary"], "mlp")
    stored, labels, _ = feature_probs(probe, setup["feat"], "all")
    with FeatureFile(setup["feat"]) as ff:
        prompts, hidden = ff.column("prompt"), ff.layers()
    screener = Screener(setup["lm"], probe, layer=2, batch_size=5)
    live = screener.probabilities(prompts, probe.layers).numpy()
    raw = screener.hidden(screener.encode(prompts[:3]), probe.layers).numpy()
    np.testing.assert_allclose(raw, hidden[:3], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(live, stored, atol=2e-3)
    # the one-layer screen (forward stopped at layer 2) gives the same column
    screened = screener.screen(prompts)
    np.testing.assert_allclose([s.probs["malicious"] for s in screened], stored[:, 2, 1], atol=2e-3)
    # batched == one at a time
    one = Screener(setup["lm"], probe, layer=2, batch_size=1).screen(prompts[:4])
    assert [s.score for s in one] == pytest.approx([s.score for s in screened[:4]], abs=1e-5)


def test_forward_stops_at_the_layer_and_hooks_are_removed(setup):
    lm = setup["lm"]
    probe = load_probe(setup["binary"])
    calls: list[int] = []
    handles = [
        block.register_forward_pre_hook(lambda m, a, i=i: calls.append(i))
        for i, block in enumerate(lm.parts.layers)
    ]
    norm_calls: list[int] = []
    handles.append(lm.parts.final_norm.register_forward_pre_hook(lambda m, a: norm_calls.append(1)))
    try:
        seqs = [[5, 6, 7], [8, 9]]
        for layer, blocks_run in [(0, [0]), (1, [0]), (2, [0, 1]), (3, [0, 1, 2])]:
            calls.clear()
            before = {id(b): len(b._forward_hooks) for b in lm.parts.layers}
            Screener(lm, probe, layer).hidden(seqs, [layer])
            assert calls == blocks_run, layer
            assert {id(b): len(b._forward_hooks) for b in lm.parts.layers} == before
            assert all(len(b._forward_pre_hooks) == 1 for b in lm.parts.layers)
        assert len(norm_calls) == 1  # only when the last layer (after the final norm) is screened
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("arch", SUPPORTED)
def test_stopped_forward_equals_stored_state_for_every_architecture(tmp_path, arch):
    """Every architecture of the lookup: the forward stopped at layer l runs blocks 1..l only and
    gives the state extraction stored for layer l (float32 storage)."""
    from probing.monitor import LoadedProbe
    from probing.probes import LinearProbe

    lm = tiny_lm(arch)
    src = tmp_path / "p.txt"
    src.write_text("How do I bake bread?\nWrite a poem about the sea and the moon\nHi\n")
    cfg = ExtractConfig(
        prompts=[PromptSource(path=str(src), label="normal")],
        output=str(tmp_path / "f.h5"),
        template="chat",
        storage_dtype="float32",
        progress=False,
    )
    with FeatureFile(extract(cfg, lm=lm)) as ff:
        meta, prompts, stored = ff.meta, ff.column("prompt"), ff.layers()
    n, hidden = lm.parts.num_layers, int(lm.model.config.hidden_size)
    module = LinearProbe(num_layers=n, hidden_size=hidden, class_names=["normal", "malicious"])
    probe = LoadedProbe(
        module=module.eval(), probe="linear", path=Path("tiny.ckpt"), sha256="",
        layers=list(range(n)), class_names=["normal", "malicious"], feature_meta=meta,
    )  # fmt: skip
    calls: list[int] = []
    handles = [
        block.register_forward_pre_hook(lambda m, a, i=i: calls.append(i))
        for i, block in enumerate(lm.parts.layers)
    ]
    try:
        for layer in range(n):
            screener = Screener(lm, probe, layer, batch_size=3)
            seqs = screener.encode(prompts)
            calls.clear()
            got = screener.hidden(seqs, [layer])[:, 0].numpy()
            assert calls == list(range(max(layer, 1))), (arch, layer)
            np.testing.assert_allclose(got, stored[:, layer], atol=1e-5, rtol=1e-5)
    finally:
        for h in handles:
            h.remove()


# -- thresholds and scores ---------------------------------------------------------------------------
def test_threshold_and_tpr_against_sklearn():
    rng = np.random.default_rng(0)
    positive = rng.random(1000) < 0.4
    scores = np.round(rng.random(1000) * 0.6 + positive * 0.35, 2)  # ties on purpose
    for fpr in (0.01, 0.05, 0.2):
        t = threshold_at_fpr(scores[~positive], fpr)
        assert (scores[~positive] >= t).mean() <= fpr
        # the lowest such threshold: any negative score just below it would exceed the rate
        assert (scores[~positive] >= np.max(scores[~positive][scores[~positive] < t])).mean() > fpr
        f, tp, _ = roc_curve(positive, scores)
        assert tpr_at_fpr(scores, positive, fpr) == pytest.approx(tp[f <= fpr].max())
        assert (scores[positive] >= t).mean() == pytest.approx(tp[f <= fpr].max())
    cal = calibrate_scores(scores[:, None], positive, [7], 0.05, "test")
    assert cal.threshold(7) == threshold_at_fpr(scores[~positive], 0.05)
    with pytest.raises(ProbingError, match="no negative"):
        threshold_at_fpr(np.array([]), 0.01)
    with pytest.raises(ProbingError, match="strictly between 0 and 1"):
        threshold_at_fpr(scores, 1.5)


def test_scorer_rules():
    p = torch.tensor([[0.7, 0.2, 0.1]])
    three = Scorer(("normal", "malicious", "jailbreak"))
    assert three.rule == "1 - p(normal)" and float(three(p)[0]) == pytest.approx(0.3)
    two = Scorer(("normal", "malicious"))
    assert two.rule == "p(malicious)" and float(two(p[:, :2])[0]) == pytest.approx(0.2)
    assert Scorer(("benign", "harmful"), positive="harmful").rule == "p(harmful)"
    assert two.is_positive(["normal", "jailbreak", "malicious"]).tolist() == [False, True, True]
    with pytest.raises(ProbingError, match="--positive"):
        Scorer(("a", "b"))
    with pytest.raises(ProbingError, match="--negative"):
        Scorer(("a", "b", "c"))


def test_layer_auto_is_the_earliest_near_best(setup):
    probe = load_probe(setup["binary"], "linear")
    probe.val_results = {"linear": {"accuracy": [0.5, 0.9, 0.904, 0.9]}}
    assert choose_layer(probe, "auto") == 1
    assert choose_layer(probe, "auto", tolerance=0) == 2
    assert choose_layer(probe, "3") == 3
    assert choose_layer(probe, -1) == 3
    with pytest.raises(ProbingError, match="--layer: layer 7 is out of range.*has layers 0..3"):
        choose_layer(probe, 7)
    probe.val_results = {}
    with pytest.raises(ProbingError, match="--layer N"):
        choose_layer(probe, "auto")


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_screens_a_file_to_json_lines(setup, tmp_path):
    prompts = tmp_path / "p.csv"
    prompts.write_text('prompt\n"how do I bake bread?"\n"write a poem, please"\n')
    out = tmp_path / "out.jsonl"
    argv = [
        "--ckpt",
        str(setup["binary"]),
        "--prompts",
        str(prompts),
        "--json",
        "--output",
        str(out),
    ]
    assert run_command("monitor", [*argv, "--layer", "1"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["how do I bake bread?", "write a poem, please"]
    for r in rows:
        assert set(r["probs"]) == {"normal", "malicious"}
        assert sum(r["probs"].values()) == pytest.approx(1, abs=1e-5)
        assert r["decision"] in {"flag", "allow"} and r["layer"] == 1
        assert r["flagged"] == (r["score"] >= r["threshold"])
    store = json.loads((setup["binary"].parent / STORE_NAME).read_text())
    (entry,) = store["entries"]
    assert entry["fpr"] == 0.01 and entry["rule"] == "p(malicious)"
    assert entry["calibration"]["layers"] == [0, 1, 2, 3]
    # one prompt, a fixed threshold, text output
    assert (
        run_command(
            "monitor",
            [
                "--ckpt",
                str(setup["binary"]),
                "--prompt",
                "hello",
                "--threshold",
                "0",
                "--layer",
                "2",
            ],
        )
        == 0
    )


def test_guarded_generation_logs_and_refuses(setup, caplog):
    probe = load_probe(setup["binary"])
    screener = Screener(setup["lm"], probe, 1, threshold=0.0)
    with caplog.at_level(logging.INFO, logger="probing.monitor"):
        out = guarded_generate(screener, ["hi", "bye"], max_new_tokens=3, refusal="No.")
    assert [g.response for g in out] == ["No.", "No."] and not any(g.generated for g in out)
    assert sum("monitor: refused prompt" in r.message for r in caplog.records) == 2
    screener.threshold = 1.0 + 1e-9  # nothing reaches it: everything is generated
    out = guarded_generate(screener, ["hi", "a longer prompt"], max_new_tokens=3)
    assert all(g.generated and not g.screening.flagged for g in out)
    cfg = MonitorConfig(
        ckpt=str(setup["binary"]), prompt="hi", generate=True, max_new_tokens=2, layer="1"
    )
    (g,) = monitor(cfg, lm=setup["lm"])
    assert g.as_dict()["generated"] == (not g.screening.flagged)


def test_eval_from_features_reports_every_layer_and_class(setup):
    cfg = MonitorConfig(ckpt=str(setup["binary"]), eval=True, layer="2", probe="linear")
    report = monitor(cfg)  # fast path: no model is loaded
    assert report["chosen_layer"] == 2 and [e["layer"] for e in report["layers"]] == [0, 1, 2, 3]
    chosen = report["chosen"]
    assert set(chosen["per_class"]) == {"normal", "malicious", "jailbreak"}
    assert set(chosen["calibrated"]) == {"0.01", "0.05"}
    assert "test split + classes not trained on" in report["eval_set"]
    # AUROC against sklearn on the same rows
    probe = load_probe(setup["binary"], "linear")
    probs, labels, _ = feature_probs(probe, None, "test")
    positive = np.array([x != "normal" for x in labels])
    assert chosen["auroc"] == pytest.approx(roc_auc_score(positive, probs[:, 2, 1]))
    assert chosen["per_class"]["jailbreak"]["rows"] == 6
    # the text baseline beside it, shaped like `chosen`, on the same rows and calibration rule
    text = report["text_baseline"]
    assert text["layer"] is None and set(text) == set(chosen)
    assert set(text["calibrated"]) == {"0.01", "0.05"} and text["rows"] == chosen["rows"]
    assert set(text["per_class"]) == set(chosen["per_class"])
    above = report["above_words"]
    assert {r["layer"] for r in above["rows"]} == {0, 1, 2, 3}
    (d,) = [r for r in above["rows"] if r["layer"] == 2 and r["metric"] == "auroc"]
    assert d["delta"] == pytest.approx(chosen["auroc"] - text["auroc"])  # paired on the same rows
    assert d["low"] <= d["delta"] <= d["high"]
    assert above["sentence"].startswith("linear vs the words (auroc, eval set")
    # the 3-class probe: score 1 - p(normal)
    report = monitor(MonitorConfig(ckpt=str(setup["tri"]), eval=True, layer="auto"))
    assert report["score"] == "1 - p(normal)"


def test_eval_live_on_prompts(setup):
    sources = [PromptSource(path="normal", limit=4), PromptSource(path="malicious", limit=4)]
    cfg = MonitorConfig(ckpt=str(setup["binary"]), eval=True, prompts=sources, threshold=0.5)
    report = monitor(cfg, lm=setup["lm"])
    assert report["chosen"]["rows"] == 8 and "screened live" in report["eval_set"]
    assert set(report["chosen"]["calibrated"]) == {"threshold"}


def test_the_model_is_checked_once_per_command(setup, monkeypatch):
    import probing.monitor.screen as screen

    calls = []
    check = screen.check_model
    monkeypatch.setattr(screen, "check_model", lambda *a: calls.append(1) or check(*a))
    argv = ["--ckpt", str(setup["binary"]), "--prompt", "hello", "--threshold", "0", "--layer", "2"]
    assert (
        run_command("monitor", argv) == 0
    )  # loads the recorded model (the tiny folder), checks it once
    sources = [PromptSource(path="normal", limit=2), PromptSource(path="malicious", limit=2)]
    cfg = MonitorConfig(ckpt=str(setup["binary"]), eval=True, prompts=sources, threshold=0.5)
    monitor(cfg, lm=setup["lm"])
    assert len(calls) == 2


def test_calibration_is_stored_and_reused(setup, monkeypatch):
    probe = load_probe(setup["tri"])
    scorer = Scorer(tuple(probe.class_names))
    first = calibrate_probe(probe, scorer, 0.05)
    import probing.monitor.labelled as cal_mod

    monkeypatch.setattr(cal_mod, "labelled_probs", lambda *a, **k: pytest.fail("recomputed"))
    assert calibrate_probe(probe, scorer, 0.05).thresholds == first.thresholds


# -- bad input ----------------------------------------------------------------------------------------
def test_errors(setup, tmp_path):
    ckpt = str(setup["binary"])
    lm = setup["lm"]
    probe = load_probe(ckpt)
    with pytest.raises(ProbingError, match="num_layers"):  # another model (fewer layers)
        Screener(tiny_lm("qwen2"), probe, 1)
    with pytest.raises(ProbingError, match=r"--ckpt \S+ is from model"):  # same shape, other name
        Screener(tiny_lm("llama", seed=1), probe, 1)
    raw = torch.load(ckpt, weights_only=False)
    raw["hyper_parameters"]["feature_meta"] = {**probe.feature_meta, "hidden_size": 64}
    other = tmp_path / "other.ckpt"
    torch.save(raw, other)
    with pytest.raises(ProbingError, match="hidden_size 64"):
        Screener(lm, load_probe(other), 1)
    with pytest.raises(ProbingError, match="empty"):
        Screener(lm, probe, 1).screen(["fine", "  "])
    with pytest.raises(ProbingError, match=r"--threshold .*\[0, 1\]"):
        run_command("monitor", ["--ckpt", ckpt, "--prompt", "x", "--threshold", "1.5"])
    with pytest.raises(ProbingError, match="--fpr"):
        run_command("monitor", ["--ckpt", ckpt, "--prompt", "x", "--fpr", "0"])
    with pytest.raises(ProbingError, match="does not exist"):
        run_command("monitor", ["--ckpt", str(tmp_path / "none.ckpt"), "--prompt", "x"])
    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    with pytest.raises(ProbingError, match="not a readable checkpoint"):
        load_probe(tmp_path / "bad.ckpt")
    with pytest.raises(ProbingError, match="nothing to screen"):
        run_command("monitor", ["--ckpt", ckpt])
    with pytest.raises(ProbingError, match="--probe 'svm'"):
        load_probe(ckpt, "svm")


def test_monitor_configs_parse(monkeypatch):
    monkeypatch.chdir(ROOT)
    for path in sorted((ROOT / "configs" / "monitor").glob("*.yaml")):
        cfg = parse(["--config", str(path)])
        assert cfg.layer == "auto" and 0 < cfg.fpr < 1
    assert "--calibrate" in build_parser().format_help()


def test_load_prompts_sanity():
    prompts, labels, _, names = load_prompts(SOURCES[:1])
    assert len(prompts) == 16 and names == ["normal"]


@pytest.mark.slow
def test_real_model_stopped_forward_matches_extraction():
    """The embedded model: states of the stopped forward == ActivationReader's (full forward)."""
    from probing.features.activations import ActivationReader
    from probing.monitor import LoadedProbe
    from probing.probes import LinearProbe

    lm = load_model(ModelConfig())
    n = lm.parts.num_layers
    hidden = int(lm.model.config.hidden_size)
    module = LinearProbe(num_layers=n, hidden_size=hidden, class_names=["normal", "malicious"])
    meta = {k: lm.meta[k] for k in ("model", "gguf_sha256", "model_revision")}
    meta.update(
        template="chat", system_prompt="", positions="last", hidden_size=hidden, num_layers=n
    )
    probe = LoadedProbe(
        module=module.eval(), probe="linear", path=Path("real.ckpt"), sha256="",
        layers=list(range(n)), class_names=["normal", "malicious"], feature_meta=meta,
    )  # fmt: skip
    screener = Screener(lm, probe, layer=5, batch_size=3)
    seqs = screener.encode(["How do I bake bread?", "Write a poem about the sea", "Hi"])
    ref = ActivationReader(lm)(seqs).hidden[:, :, 0]
    layers = [0, 5, n - 1]
    got = screener.hidden(seqs, layers)
    torch.testing.assert_close(got, ref[:, layers], atol=1e-4, rtol=1e-4)
