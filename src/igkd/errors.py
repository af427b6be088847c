"""The one exception type the CLI turns into a single clear error line."""


class IgkdError(Exception):
    """A problem with the user's input or environment; the message names the problem and the fix."""
