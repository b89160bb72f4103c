""" "The model a feature file came from" is one function (``recorded_model``) with one override
(``ModelOverride``) in every command that loads it — graft, the GraftingCallback, monitor and lens —
and one check (``require_same_model``) with one message. Nothing in a file switches on remote code;
a key the recorded config does not know is ignored, never a crash."""

from __future__ import annotations

import logging

import pytest
from test_untrusted_inputs import feature_file, one_line_error, train_probe
from tiny import save_tiny

from probing.cli import main
from probing.errors import ProbingError
from probing.features.identity import recorded_model
from probing.features.store import read_meta
from probing.grafting import GraftingCallback
from probing.models.config import ModelOverride
from probing.models.load import ModelConfig

# a newer (or edited) file: an unknown key, a bad value, and remote code asked for
RECORDED = {
    "name": "some-org/model",
    "gguf_file": None,
    "revision": "v1",
    "dtype": "bfloat16",
    "device": "cpu",
    "device_map": None,
    "trust_remote_code": True,
    "quantization": "int4",
    "max_memory": {"0": "10GiB"},
}
AS_RECORDED = ModelConfig(name="some-org/model", revision="v1", dtype="bfloat16")
OVERRIDDEN = ModelConfig(name="other/x", dtype="bfloat16", trust_remote_code=True)


@pytest.fixture(autouse=True)
def _fresh_logging(monkeypatch):
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])


def _stop(seen: list):
    def fake(cfg, *args, **kwargs):
        seen.append(cfg)
        raise ProbingError("stopped before loading the model (test)")

    return fake


def _configs_of_every_command(tmp_path, monkeypatch, capsys, override: ModelOverride, extra=()):
    """The ModelConfig each command would load (graft, monitor, lens's tokenizer, the callback)
    with ``override`` as options (``extra``: lens's instead)."""
    feat = tmp_path / "f.h5"
    if not feat.exists():
        feature_file(feat, config={"model": RECORDED})
        train_probe(feat, tmp_path / "p.ckpt")
    seen: list = []
    monkeypatch.setattr("probing.grafting.run.load_model", _stop(seen))
    monkeypatch.setattr("probing.monitor.run.load_model", _stop(seen))
    monkeypatch.setattr("probing.models.load.load_tokenizer", _stop(seen))
    monkeypatch.setattr("probing.models.load.load_model", _stop(seen))
    graft = ["graft", "--features", str(feat), "--output", str(tmp_path / "g")]
    monitor = ["monitor", "--ckpt", str(tmp_path / "p.ckpt"), "--prompt", "hi", "--layer", "1"]
    lens = ["lens", str(feat), "--output", str(tmp_path / "lens")]
    options = [
        word
        for key, value in vars(override).items()
        if value not in (None, False)
        for word in (f"--model.{key}", str(value).lower() if value is True else value)
    ]
    for argv in (graft + options, monitor + options, lens + list(extra or options)):
        assert main(argv) == 2
        one_line_error(capsys, "stopped before loading the model")
    with pytest.raises(ProbingError, match="stopped before"):
        GraftingCallback(model=override)._load(read_meta(feat))
    return seen


def test_every_command_loads_the_recorded_model(tmp_path, monkeypatch, capsys):
    seen = _configs_of_every_command(tmp_path, monkeypatch, capsys, ModelOverride())
    assert seen == [AS_RECORDED] * 4  # unknown keys ignored, trust_remote_code never from the file
    override = ModelOverride(name="other/x", trust_remote_code=True)
    lens = ["--tokenizer", "other/x", "--model.trust_remote_code", "true"]  # the old spelling
    seen = _configs_of_every_command(tmp_path, monkeypatch, capsys, override, lens)
    assert seen == [OVERRIDDEN] * 4  # another location: not the recorded revision


def test_recorded_model_rules(caplog):
    meta = {
        "model": "m",
        "model_revision": "abc",
        "dtype": "float16",
        "config": {"model": RECORDED},
    }
    assert recorded_model(meta) == AS_RECORDED  # the recorded revision before the resolved one
    assert "quantization='int4'" in caplog.text and "trust_remote_code" in caplog.text
    bare = {"model": "m", "model_revision": "abc", "dtype": "float16"}  # no config recorded
    assert recorded_model(bare) == ModelConfig(name="m", revision="abc", dtype="float16")
    gpu = {"model": "m", "config": {"model": {"name": "m", "device": "cuda:3", "dtype": "float64"}}}
    assert recorded_model(gpu) == ModelConfig(name="m", device="cuda:3")  # float64: not a dtype
    assert recorded_model(gpu, ModelOverride(device="cpu", dtype="bfloat16")) == ModelConfig(
        name="m", device="cpu", dtype="bfloat16"
    )
    gguf = {"model": "a.gguf", "config": {"model": {"name": "dir", "gguf_file": "a.gguf"}}}
    assert recorded_model(gguf, ModelOverride(name="dir")).gguf_file == "a.gguf"
    assert recorded_model(gguf, ModelOverride(name="b.gguf")).gguf_file is None
    for broken in ({"config": "nonsense"}, {"config": {"model": ["x"]}}, {}):
        with pytest.raises(ProbingError, match="record no model; give it with --model.name"):
            recorded_model(broken)
    memory = {"model": "tiny-llama", "model_source": "object", "config": {"model": RECORDED}}
    with pytest.raises(ProbingError, match="in-memory model 'tiny-llama'.*--model.name"):
        recorded_model(memory)
    assert recorded_model(memory, ModelOverride(name="f")).name == "f"


def test_the_callback_takes_a_name_or_an_override():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(GraftingCallback, "cb")
    for value, want in (
        ("tiny", ModelOverride(name="tiny")),
        ('{"name": "tiny", "dtype": "float16"}', ModelOverride(name="tiny", dtype="float16")),
    ):
        init = parser.instantiate_classes(parser.parse_args(["--cb.model", value]))
        assert init.cb.model == want
    assert GraftingCallback().model is None


def test_another_model_is_refused_in_one_line(tmp_path, capsys):
    """The loaded model is not the features' one: one line naming the option that chose it."""
    feat = feature_file(tmp_path / "f.h5")
    ckpt = train_probe(feat, tmp_path / "p.ckpt")
    model = str(save_tiny(tmp_path / "tiny", "llama"))
    graft = ["graft", "--features", str(feat), "--output", str(tmp_path / "g")]
    assert main([*graft, "--model.name", model]) == 2
    line = one_line_error(capsys, f"{feat} is from model 'synthetic-model' (num_layers")
    assert "leave --model.name unset" in line
    assert main(["monitor", "--ckpt", str(ckpt), "--prompt", "hi", "--model.name", model]) == 2
    line = one_line_error(capsys, "--ckpt p.ckpt is from model 'synthetic-model'")
    assert "leave --model.name unset" in line


def test_old_spellings_still_parse(tmp_path, caplog):
    """Graft's YAML ``model: {name, dtype, device, trust_remote_code}`` (it was a ModelConfig), the
    monitor's flat options and lens's ``--tokenizer`` keep working (the last two with a warning)."""
    from probing.grafting.config import parse as graft
    from probing.lens.config import parse as lens
    from probing.monitor.config import parse as monitor

    old = tmp_path / "graft.yaml"
    old.write_text(
        "features: f.h5\nmodel:\n  name: qwen2.5-coder-0.5b-instruct\n  dtype: bfloat16\n"
        "  device: cuda\n  trust_remote_code: true\n"
    )
    want = ModelOverride("qwen2.5-coder-0.5b-instruct", "cuda", "bfloat16", True)
    assert graft(["--config", str(old)]).model == want
    assert graft(["--features", "f.h5"]).model == ModelOverride()
    flat = ["--model_name", want.name, "--device", "cuda", "--dtype", "bfloat16"]
    assert monitor(["--ckpt", "c", *flat, "--trust_remote_code"]).model == want
    assert monitor(["--ckpt", "c"]).model == ModelOverride(device="cpu")  # the monitor's default
    assert lens(["f.h5", "--output", "o", "--tokenizer", "t"]).model == ModelOverride(name="t")
    assert "--tokenizer is deprecated; use --model.name" in caplog.text
