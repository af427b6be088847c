"""The one exception type the CLI turns into a single clear error line."""


class IgkdError(Exception):
    """A problem with the user's input or environment; the message names the problem and the fix."""


class IgkdErrors(IgkdError):
    """Several such problems found at once (by the checks before a run); the CLI prints one error line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)
