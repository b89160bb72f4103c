"""Extract with a tiny model, slowly, announcing each flushed batch (killed by test_resume)."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiny import tiny_lm  # noqa: E402

from probing.features.extract import ExtractConfig, extract  # noqa: E402
from probing.features.store import FeatureWriter  # noqa: E402
from probing.prompts import PromptSource  # noqa: E402

original = FeatureWriter.write


def slow_write(self, *args):
    original(self, *args)
    sys.stdout.write(f"rows {self.rows_done}\n")
    sys.stdout.flush()
    time.sleep(0.3)


FeatureWriter.write = slow_write
prompts, output = sys.argv[1], sys.argv[2]
cfg = ExtractConfig(
    prompts=[PromptSource(path=prompts)], output=output, batch_size=2, progress=False
)
extract(cfg, lm=tiny_lm("llama"))
