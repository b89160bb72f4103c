"""A hub id without a network: the cached snapshot is loaded without a request; with nothing cached
the command stops at once with one line (instead of ~50 s of retries)."""

from __future__ import annotations

import time

import pytest
from huggingface_hub import constants
from tiny import save_tiny

import probing.models.hub as hub
from probing.cli import main
from probing.errors import ProbingError
from probing.models import ModelConfig, load_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An HF cache in tmp_path holding ``tiny-org/tiny-llama`` at ``main`` (a tiny random llama)."""
    cache = tmp_path / "hub"
    repo = cache / "models--tiny-org--tiny-llama"
    save_tiny(repo / "snapshots" / COMMIT, "llama")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def unreachable(monkeypatch):
    """Offline mode off, and the hub's endpoint does not answer."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_reachable", lambda endpoint: False)


@pytest.mark.parametrize("offline", [True, False])
def test_a_cached_hub_model_loads_without_the_hub(hub_cache, monkeypatch, offline):
    if offline:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    else:
        unreachable(monkeypatch)
    lm = load_model(ModelConfig(name="tiny-org/tiny-llama"))
    assert lm.meta["model"] == "tiny-org/tiny-llama" and lm.meta["model_source"] == "hub"
    assert lm.meta["model_revision"] == COMMIT  # read from the snapshot's folder name


def test_an_uncached_hub_id_fails_at_once(hub_cache, monkeypatch):
    unreachable(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(ProbingError, match=r"is not reachable and it is not in the local cache"):
        load_model(ModelConfig(name="tiny-org/other-model"))
    with pytest.raises(ProbingError, match=r"not in the local cache .* at revision v2"):
        load_model(ModelConfig(name="tiny-org/tiny-llama", revision="v2"))
    assert time.perf_counter() - start < 5


def test_a_reachable_hub_is_used_as_usual(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_reachable", lambda endpoint: True)
    assert hub.offline_folder("tiny-org/tiny-llama", None, None) is None


def test_the_reachability_probe_does_not_retry():
    start = time.perf_counter()
    assert hub.hub_reachable.__wrapped__("http://127.0.0.1:9", timeout=2.0) is False
    assert time.perf_counter() - start < 4


def test_cli_one_line(hub_cache, tmp_path, capsys):
    """`probing extract` with an uncached hub id (HF_HUB_OFFLINE, as in the test session)."""
    prompts = ["--prompts", '[{"path": "normal", "limit": 2}]']
    code = main(["extract", "--model.name", "tiny-org/missing", *prompts,
                 "--output", str(tmp_path / "o.h5")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()  # the prompts are read first (logged)
    assert [line for line in err if "error" in line] == err[-1:]
    assert err[-1].startswith("probing extract: error: --model.name")
    assert "HF_HUB_OFFLINE is set and it is not in the local cache" in err[-1]
