"""What ``probing compare`` says when it is done: each run's summary on the log, each failed run on
stderr, and the exit status.

Exit status: 0 when every run finished, 1 when some failed (the others are still compared and written;
each failure is one line on stderr and in ``compare_summary.csv``), 2 for a bad config or when every
run failed.
"""

from __future__ import annotations

import logging
import sys

from probing.compare.spec import CompareConfig, CompareResult
from probing.errors import ProbingError

log = logging.getLogger(__name__)


__all__ = ["report"]


def report(cfg: CompareConfig, result: CompareResult) -> int:
    """``probing compare``'s ending: log each run's summary; returns 0, or 1 when some runs failed;
    raises :class:`ProbingError` when every run failed."""
    for s in result.summary:
        if s["status"] == "ok":
            first = "never" if s["first_layer"] is None else f"layer {s['first_layer']}"
            depth = (
                "" if s["first_relative_depth"] is None else f" ({s['first_relative_depth']:.2f})"
            )
            log.info(
                "%s %s: first >= %g at %s%s, best %.3f (layer %s)",
                s["run"],
                s["classifier"],
                cfg.threshold,
                first,
                depth,
                s["best_accuracy"],
                s["best_layer"],
            )
    log.info("wrote %s", ", ".join(str(p) for p in result.paths.values()))
    if len(result.failed) == len(result.runs):
        raise ProbingError(
            f"all {len(result.runs)} runs failed; see {result.paths['summary']} (first: "
            f"{result.failed[0].name}: {result.failed[0].reason})"
        )
    for r in result.failed:
        sys.stderr.write(f"probing compare: run {r.name!r} failed: {r.reason}\n")
    return 1 if result.failed else 0
