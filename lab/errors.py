"""The one exception labctl turns into a clear message instead of a traceback."""


class LabError(Exception):
    """A problem the user can act on; its text says what to do."""
