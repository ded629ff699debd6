"""Study stage: runs the pipeline into a run directory and assembles metrics and records."""

from .progress import Reporter
from .runner import Study

__all__ = ["Reporter", "Study"]
