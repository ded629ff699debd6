"""Attribution stage: leave-one-out contributions, KeyTokens and before/after tracking."""

from .ablation import Attribution, loo_attributions
from .keytokens import DEFAULT_ALPHA, DEFAULT_BETA, key_tokens
from .tracking import aggregate, track

__all__ = ["Attribution", "DEFAULT_ALPHA", "DEFAULT_BETA", "aggregate", "key_tokens", "loo_attributions", "track"]
