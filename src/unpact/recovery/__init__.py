"""Recovery stage: trying to bring "forgotten" answers back.

Prompt attacks leave the weights untouched: FocusOnKey (keyword emphasis, the unPact attack),
sampling, paraphrased and few-shot prompts. Weight attacks change them and are reported as such:
round-to-nearest quantisation and light relearning.
"""

from .focus_on_key import (
    focus_on_key,
    keyword_words,
    lowest_contribution_words,
    placebo_words,
    rewrite,
    words_of_tokens,
)
from .prompts import few_shot_questions, paraphrase_questions
from .quantize import quantization_error, quantize_model
from .relearn import relearn
from .sampling import any_correct, sample_answers

__all__ = ["any_correct", "few_shot_questions", "focus_on_key", "keyword_words", "lowest_contribution_words",
           "paraphrase_questions", "placebo_words", "quantization_error", "quantize_model", "relearn", "rewrite",
           "sample_answers", "words_of_tokens"]
