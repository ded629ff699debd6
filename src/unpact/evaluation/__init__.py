"""Evaluation stage: answer correctness, the dilemma rates and quadrant."""

from .correctness import DEFAULT_ROUGE_THRESHOLD, correctness, is_correct, rouge_l_recall
from .quadrant import DEFAULT_DESTRUCTIVE_THRESHOLD, DEFAULT_RECOVERY_THRESHOLD, quadrant
from .rates import destructive_rate, forget_efficacy, recovery_rate, wilson_interval

__all__ = ["DEFAULT_DESTRUCTIVE_THRESHOLD", "DEFAULT_RECOVERY_THRESHOLD", "DEFAULT_ROUGE_THRESHOLD", "correctness",
           "destructive_rate", "forget_efficacy", "is_correct", "quadrant", "recovery_rate", "rouge_l_recall", "wilson_interval"]
