"""The demo driver's stage wrapper: thread choice per stage, restored afterwards."""

from __future__ import annotations

import pytest
import torch

import probing.demo_run as demo_mod
from probing.demo_config import DemoConfig
from probing.demo_run import Demo, busy_cores, stage_threads
from probing.errors import ProbingError


@pytest.mark.parametrize(
    ("requested", "previous", "busy", "load", "expected"),
    [
        (3, None, 2.0, 9.0, 3),  # asked for: taken as is
        (None, None, 0.1, 9.0, 2),  # measured: the cores are free
        (None, 2, 0.9, 0.0, 1),  # measured: another process on one core
        (None, None, None, 0.2, 2),  # no /proc/stat: an idle machine by its load, every core
        (None, None, None, 1.4, 1),  # another process on one core
        (None, 2, None, 2.3, 2),  # the load is the demo's own previous stage
        (None, 1, None, 4.0, 1),  # a busy machine: one thread
    ],
)
def test_stage_threads(monkeypatch, requested, previous, busy, load, expected):
    monkeypatch.setattr(demo_mod.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(demo_mod, "busy_cores", lambda: busy)
    monkeypatch.setattr(demo_mod.os, "getloadavg", lambda: (load, load, load))
    assert stage_threads(requested, previous) == expected


def test_busy_cores_reads_the_machine():
    busy = busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= (demo_mod.os.cpu_count() or 1) + 1e-9


def test_stage_sets_and_restores_threads(tmp_path):
    demo = Demo(DemoConfig(output=str(tmp_path), threads=1))
    before = torch.get_num_threads()
    seen = []
    demo.stage("one", lambda: seen.append(torch.get_num_threads()))

    def fail() -> None:
        raise ProbingError("model not installed")

    demo.stage("two", fail, optional=True)
    assert seen == [1] and torch.get_num_threads() == before
    assert set(demo.timings) == {"one", "two"} and "not installed" in demo.notes["two"]
    with pytest.raises(ProbingError):
        demo.stage("three", fail)
    assert torch.get_num_threads() == before


def test_stages_with_torch_probes_keep_the_default_threads(tmp_path, monkeypatch):
    """Probe training's numbers depend on the thread count: those stages ignore the load."""
    monkeypatch.setattr(demo_mod, "busy_cores", lambda: 50.0)
    demo = Demo(DemoConfig(output=str(tmp_path)))
    seen = []
    demo.stage("busy", lambda: seen.append(torch.get_num_threads()))
    demo.stage("fit", lambda: seen.append(torch.get_num_threads()), keep_threads=True)
    assert seen == [1, torch.get_num_threads()]
