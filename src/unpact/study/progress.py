"""Progress bars for long stages (rich), or silence (tests, --quiet)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter:
    """Prints stage messages and drives one progress bar at a time; silent when ``quiet``."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(stderr=True)
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    @contextmanager
    def bar(self, description: str, total: int):
        """Yields ``update(done, total, logs)``: a callback for the stage loops' ``progress`` argument."""
        if self.quiet:
            yield lambda done, total, logs=None: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[logs]}"), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as prog:
            task = prog.add_task(description, total=total, logs="")

            def update(done: int, total: int, logs: dict | None = None) -> None:
                text = "  ".join(f"{k}={v:.3g}" for k, v in (logs or {}).items() if isinstance(v, float))
                prog.update(task, completed=done, total=total, logs=text)

            yield update
