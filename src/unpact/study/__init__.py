"""Study stage: runs the pipeline into a run directory and assembles metrics and records.

`Study` runs one (model, benchmark) group; `Grid` runs a study config's models × benchmarks × seeds ×
methods, one resumable cell each.
"""

from .grid import Cell, Grid
from .progress import Reporter
from .runner import Study

__all__ = ["Cell", "Grid", "Reporter", "Study"]
