"""The errors every layer may raise for its caller to report in one line."""


class UsageError(ValueError):
    """A bad option or an impossible setting; the message says how to fix it."""
