"""`probing fit --config CONFIG` with its imports and its run timed apart (bench/probes.py's child).

    python bench/fit_timed.py CONFIG TIMES_JSON

Writes ``{"import_seconds", "run_seconds"}`` to TIMES_JSON (rank 0 only under DDP, whose launcher
starts this script again for the other ranks) and exits with the command's status.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

start = time.perf_counter()
from probing.cli import main  # noqa: E402
from probing.training import lightning as _fit_imports  # noqa: E402, F401  (what `probing fit` imports)

imported = time.perf_counter()
status = main(["fit", "--config", sys.argv[1]])
if os.environ.get("LOCAL_RANK", "0") == "0":
    times = {"import_seconds": imported - start, "run_seconds": time.perf_counter() - imported}
    Path(sys.argv[2]).write_text(json.dumps(times))
gc.freeze()  # as the console script does (probing.cli.entry)
sys.exit(status)
