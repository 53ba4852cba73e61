"""The one exception type a user can cause; the CLI prints it as `error: ...` and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input (a file, a flag, a recipe), reported as one line."""

    exit_code = 2
