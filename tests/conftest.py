"""Shared fixtures: the paper's data beside the checkout, tiny models, quiet W&B."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# before transformers/huggingface_hub read it at import: tests never reach a model hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def need_shared_data() -> Path:
    """The paper's prompt data in ../shared/data: skip without it, but fail under CI."""
    if (SHARED_DATA / "normal_prompts.csv").exists():
        return SHARED_DATA
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the paper's data is missing at {SHARED_DATA}")
    pytest.skip(f"the paper's data is not beside the checkout ({SHARED_DATA})")


@pytest.fixture
def shared_data() -> Path:
    return need_shared_data()


@pytest.fixture(autouse=True)
def _offline_wandb(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "offline"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path_factory.getbasetemp()))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working folder (relative ``runs/`` land there), W&B files inside it, and
    the ``probing`` logger without the handler an earlier test bound to its captured stderr."""
    monkeypatch.setattr(logging.getLogger("probing"), "handlers", [])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


@pytest.fixture
def feat(workdir: Path) -> str:
    """A small feature file whose layers separate the classes more and more (fit/test CLI runs)."""
    from featurefactory import make_feature_file

    return str(make_feature_file(workdir / "feat.h5", n=240, num_layers=4, hidden_size=8,
                                 separability=[0.3, 1.0, 2.0, 4.0], seed=5))  # fmt: skip
