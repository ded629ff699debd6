"""unpact: unlearning, prompt attribution, contribution tracking and recovery for causal LMs.

The package follows the pipeline  data → models → unlearn → attribution → recovery → evaluation → report,
one sub-package per stage; `scoring` is the one primitive every stage shares.
"""

__version__ = "0.1.0"
