"""Stage 6: a live jailbreak monitor: a trained probe screens prompts at an early layer before the
model generates (the forward stops at the probe's layer); thresholds for a target false positive rate,
evaluation per layer and class, and guarded generation. See docs/monitor.md.

The names are imported on first use, so that ``probing.monitor.config`` (read by ``--help``) does not
import torch.
"""

from probing.lazy import lazy_names

__all__, __getattr__ = lazy_names(
    __name__,
    {
        "calibrate": [
            "Calibration",
            "Scorer",
            "auroc",
            "calibrate_scores",
            "evaluate",
            "threshold_at_fpr",
            "tpr_at_fpr",
        ],
        "labelled": ["calibrate_probe", "feature_probs"],
        "probe": ["LoadedProbe", "check_model", "choose_layer", "load_probe"],
        "screen": ["DEFAULT_REFUSAL", "Guarded", "Screener", "Screening", "guarded_generate"],
    },
)
