"""Shared fixtures: the paper's data beside the checkout, tiny models, quiet W&B."""

from __future__ import annotations

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
