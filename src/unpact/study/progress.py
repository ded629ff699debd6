"""Progress for long work (rich): an overall bar over a study's cells and one bar per running stage,
drawn in one live display; or silence (tests, --quiet, and every process but the main one when
several run under ``accelerate launch``: they all run the same stages, and one display is enough)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .. import distributed


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[logs]}"), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=console, transient=False)


class Reporter:
    """Prints stage messages and drives progress bars; silent when ``quiet`` or on a process other
    than the main one (`unpact.distributed.is_main`).

    Inside `overall`, stage bars join the overall bar's display and disappear when their stage ends,
    so the terminal shows the study's progress and the stage now running, with elapsed time and an
    estimate of what remains.
    """

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(stderr=True)
        self.quiet = quiet or not distributed.is_main()
        self._live: Progress | None = None

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    @contextmanager
    def overall(self, description: str, total: int, done: int = 0):
        """Yields ``advance()``, called once per finished unit; ``done`` units are finished already
        (they count as progress but not towards the speed behind the time estimate)."""
        if self.quiet:
            yield lambda: None
            return
        with _progress(self.console) as prog:
            task = prog.add_task(description, total=total, completed=done, logs="")
            self._live = prog
            try:
                yield lambda: prog.advance(task)
            finally:
                self._live = None

    @contextmanager
    def bar(self, description: str, total: int):
        """Yields ``update(done, total, logs)``: a callback for the stage loops' ``progress`` argument."""
        if self.quiet:
            yield lambda done, total, logs=None: None
            return
        if self._live is not None:
            prog, own = self._live, None
        else:
            prog = own = _progress(self.console)
            own.start()
        task = prog.add_task(description, total=total, logs="")

        def update(done: int, total: int, logs: dict | None = None) -> None:
            text = "  ".join(f"{k}={v:.3g}" for k, v in (logs or {}).items() if isinstance(v, float))
            prog.update(task, completed=done, total=total, logs=text)

        try:
            yield update
        finally:
            if own is not None:
                own.stop()
            else:
                prog.remove_task(task)
