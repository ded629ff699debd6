"""Recovery stage: trying to bring "forgotten" answers back.

Prompt attacks leave the weights untouched: FocusOnKey (keyword emphasis, the unPact attack),
sampling, paraphrased and few-shot prompts. Weight attacks change them and are reported as such:
round-to-nearest quantisation and light relearning.

Every module of this package that defines an attack registers it (`base.register`); all of them are
imported here, so a new attack is one new file: studies, audits, configs, reports and the CLI find
it in `ATTACKS`.
"""

import importlib
import pkgutil

from .base import ATTACKS, Attack, AttackContext, AttackKey, AttackRun, judge, register, setting
from .few_shot import few_shot_questions
from .focus_on_key import (
    focus_on_key,
    keyword_words,
    lowest_contribution_words,
    placebo_words,
    rewrite,
    words_of_tokens,
)
from .paraphrase import paraphrase_questions
from .quantize import quantization_error, quantize_model
from .relearn import relearn
from .sampling import any_correct, sample_answers

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackKey", "AttackRun", "any_correct", "few_shot_questions",
           "focus_on_key", "judge", "keyword_words", "lowest_contribution_words", "paraphrase_questions",
           "placebo_words", "quantization_error", "quantize_model", "register", "relearn", "rewrite",
           "sample_answers", "setting", "words_of_tokens"]
