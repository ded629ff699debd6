"""The one exception type users see: a one-line message naming the thing and the fix."""


class UnpactError(Exception):
    """A user-facing error. The CLI prints ``error: <message>`` and exits with code 2.

    Messages name the file, field or value at fault and say what to do about it.
    """
