"""The one exception type users see: a one-line message naming the thing and the fix."""


class UnpactError(Exception):
    """A user-facing error. The CLI prints ``error: <message>`` and exits with code 2.

    Messages name the file, field or value at fault and say what to do about it.
    """


def closest(word: str, choices) -> str | None:
    """The one of ``choices`` that ``word`` most likely misspells, or None."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.75)
    return close[0] if close else None


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a misspelt ``word``, else ``""``."""
    match = closest(word, choices)
    return f" (did you mean '{match}'?)" if match else ""
