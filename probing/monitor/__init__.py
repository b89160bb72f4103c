"""Stage 6: a live jailbreak monitor: a trained probe screens prompts at an early layer before the
model generates (the forward stops at the probe's layer); thresholds for a target false positive rate,
evaluation per layer and class, and guarded generation. See docs/monitor.md.

The names are imported on first use, so that ``probing.monitor.config`` (read by ``--help``) does not
import torch.
"""

from typing import Any

CALIBRATE = {
    "Calibration",
    "Scorer",
    "auroc",
    "calibrate_scores",
    "evaluate",
    "threshold_at_fpr",
    "tpr_at_fpr",
}
LABELLED = {"calibrate_probe", "feature_probs"}
PROBE = {"LoadedProbe", "check_model", "choose_layer", "load_probe"}
SCREEN = {"DEFAULT_REFUSAL", "Guarded", "Screener", "Screening", "guarded_generate"}
__all__ = sorted(CALIBRATE | LABELLED | PROBE | SCREEN)


def __getattr__(name: str) -> Any:
    if name in CALIBRATE:
        from probing.monitor import calibrate

        return getattr(calibrate, name)
    if name in LABELLED:
        from probing.monitor import labelled

        return getattr(labelled, name)
    if name in PROBE:
        from probing.monitor import probe

        return getattr(probe, name)
    if name in SCREEN:
        from probing.monitor import screen

        return getattr(screen, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
