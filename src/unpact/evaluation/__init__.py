"""Evaluation stage: answer correctness, the dilemma rates and quadrant, and the registry of benchmark
metrics (TOFU's, MUSE's: `unpact.evaluation.registry`; a new one is one registered function in one module)."""

from .correctness import DEFAULT_ROUGE_THRESHOLD, correctness, is_correct, item_correctness, rouge_l_recall
from .quadrant import DEFAULT_DESTRUCTIVE_THRESHOLD, DEFAULT_RECOVERY_THRESHOLD, quadrant
from .rates import destructive_rate, forget_efficacy, keep_counts, recovery_rate, wilson_interval
from .registry import BENCHMARK_METRICS, Material, Missing, benchmark_metric, compute_metrics

__all__ = ["BENCHMARK_METRICS", "DEFAULT_DESTRUCTIVE_THRESHOLD", "DEFAULT_RECOVERY_THRESHOLD", "DEFAULT_ROUGE_THRESHOLD",
           "Material", "Missing", "benchmark_metric", "compute_metrics", "correctness", "item_correctness", "destructive_rate", "keep_counts",
           "forget_efficacy", "is_correct", "quadrant", "recovery_rate", "rouge_l_recall", "wilson_interval"]
