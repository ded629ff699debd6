"""Attribution stage: leave-one-out (delete/replace/mask) and gradient attributions over tokens, words or
spans, faithfulness (ERASER comprehensiveness/sufficiency, deletion curve), KeyTokens, tracking and the
penalisation profile.

Methods register themselves (`unpact.attribution.registry`): a new attribution method is one new module
in this package, found by ``ATTRIBUTION_METHODS`` (alias ``METHODS``) and run by `attribute`.
"""

from .ablation import ABLATIONS, Attribution, loo_attributions
from .faithfulness import agreement, faithfulness, kendall_tau
from .features import FEATURE_KINDS, Features, make_features
from .gradients import GRADIENT_METHODS, INTEGRATION_RULES, gradient_attributions, integration_nodes
from .keytokens import DEFAULT_ALPHA, DEFAULT_BETA, key_tokens
from .methods import METHODS, attribute
from .penalisation import keyword_token_mask, penalisation_profile
from .registry import ATTRIBUTION_METHODS, AttributionMethod, attribution_method
from .tracking import aggregate, track

__all__ = ["ABLATIONS", "ATTRIBUTION_METHODS", "Attribution", "AttributionMethod", "DEFAULT_ALPHA", "DEFAULT_BETA",
           "FEATURE_KINDS", "Features", "GRADIENT_METHODS", "INTEGRATION_RULES", "METHODS", "aggregate", "agreement",
           "attribute", "attribution_method", "faithfulness", "gradient_attributions", "integration_nodes",
           "kendall_tau", "key_tokens", "keyword_token_mask", "loo_attributions", "make_features",
           "penalisation_profile", "track"]
