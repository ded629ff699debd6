"""Recovery stage: bringing "forgotten" answers back without changing weights."""

from .focus_on_key import focus_on_key, keyword_words, placebo_words, rewrite

__all__ = ["focus_on_key", "keyword_words", "placebo_words", "rewrite"]
