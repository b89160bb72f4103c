"""A built wheel carries the built-in data (datasets/, configs/) and works outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import pytest
from tiny import save_tiny

from probing.resources import builtin_path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "probing",
    "datasets",
    "configs",
)


def test_checkout_reads_its_own_folders():
    assert builtin_path("datasets") == ROOT / "datasets"
    assert builtin_path("configs", "judge", "keywords.yaml") == ROOT / "configs/judge/keywords.yaml"
    with pytest.raises(ValueError):
        builtin_path("tests")


@pytest.mark.slow
def test_wheel_ships_builtin_data_and_extracts_outside_the_checkout(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "_data"))
        else:
            shutil.copy2(path, src / name)
    (src / "datasets" / "zz_new_set.csv").write_text("prompt\nA brand new built-in set\n")
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)]
    subprocess.run(build, check=True, cwd=tmp_path, timeout=300)
    (wheel,) = wheels.glob("probing-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"probing/_data/{p.relative_to(src)}"
        for p in [*(src / "datasets").glob("*.csv"), *(src / "configs").glob("**/*.yaml")]
    }
    assert "probing/_data/datasets/zz_new_set.csv" in expected  # a new CSV needs no change
    assert expected | {"probing/_data/datasets/jailbreak_templates.yaml"} <= names

    site = tmp_path / "site"
    install = [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, cwd=tmp_path, timeout=300)
    model = save_tiny(tmp_path / "tiny-llama", "llama")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PROBING_DATASETS"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    script = (
        "import sys, probing\n"
        f"assert probing.__file__.startswith({str(site)!r}), probing.__file__\n"
        "from probing.generation.judge import default_judge_path\n"
        "from probing.lens.emotions import default_emotions_path\n"
        "from probing.demo import CONFIGS\n"
        "for p in (default_judge_path(), default_emotions_path(), CONFIGS / 'probe/linear.yaml'):\n"
        f"    assert p.is_file() and str(p).startswith({str(site)!r}), p\n"
        "from probing.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    prompts = [
        {"path": "normal", "limit": 2},
        {"path": "malicious", "limit": 2, "jailbreak": True},
        {"path": "malicious", "limit": 2},
    ]
    out = tmp_path / "f.h5"
    args = ["extract", "--model.name", str(model), "--prompts", json.dumps(prompts)]
    args += ["--output", str(out), "--too_long", "truncate", "--progress", "false"]
    run = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with h5py.File(out) as f:
        assert f.attrs["complete"] and f["label"].shape[0] == 6
        rows = [(int(s), p.decode()) for s, p in zip(f["source"][:], f["prompt"][:])]
    goals = {p for s, p in rows if s == 2}
    wrapped = [p for s, p in rows if s == 1]
    assert len(goals) == len(wrapped) == 2
    # the jailbreak templates (package data) wrapped the goals
    assert all(p not in goals and len(p) > min(map(len, goals)) for p in wrapped)
