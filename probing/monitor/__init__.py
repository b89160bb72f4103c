"""Stage 6: a live jailbreak monitor: a trained probe screens prompts at an early layer before the
model generates (the forward stops at the probe's layer); thresholds for a target false positive rate,
evaluation per layer and class, and guarded generation. See docs/monitor.md."""

from probing.monitor.calibrate import (
    Calibration,
    Scorer,
    auroc,
    calibrate_scores,
    evaluate,
    threshold_at_fpr,
    tpr_at_fpr,
)
from probing.monitor.labelled import calibrate_probe, feature_probs
from probing.monitor.probe import LoadedProbe, check_model, choose_layer, load_probe
from probing.monitor.screen import DEFAULT_REFUSAL, Guarded, Screener, Screening, guarded_generate

__all__ = [
    "DEFAULT_REFUSAL",
    "Calibration",
    "Guarded",
    "LoadedProbe",
    "Screener",
    "Screening",
    "Scorer",
    "auroc",
    "calibrate_scores",
    "calibrate_probe",
    "check_model",
    "choose_layer",
    "evaluate",
    "feature_probs",
    "guarded_generate",
    "load_probe",
    "threshold_at_fpr",
    "tpr_at_fpr",
]
