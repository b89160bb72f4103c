"""Extract with a tiny model, slowly, announcing each flushed batch (killed by test_resume).

``extract_slow.py PROMPTS OUTPUT [--overwrite]``; ``SLOW_WRITE_S`` sets the pause per batch.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiny import tiny_lm  # noqa: E402

from probing.features.extract import ExtractConfig, extract  # noqa: E402
from probing.features.writer import FeatureWriter  # noqa: E402
from probing.prompts import PromptSource  # noqa: E402

original = FeatureWriter.write


def slow_write(self, *args):
    original(self, *args)
    sys.stdout.write(f"rows {self.rows_done}\n")
    sys.stdout.flush()
    time.sleep(float(os.environ.get("SLOW_WRITE_S", "0.3")))


FeatureWriter.write = slow_write
prompts, output = sys.argv[1], sys.argv[2]
cfg = ExtractConfig(
    prompts=[PromptSource(path=prompts)],
    output=output,
    batch_size=2,
    progress=False,
    overwrite="--overwrite" in sys.argv[3:],
)
extract(cfg, lm=tiny_lm("llama"))
