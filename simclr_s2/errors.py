"""Errors a user can cause, kept apart from bugs so entry points print one line instead of a traceback."""


class UserError(ValueError):
    """A mistake in the user's input (a file, patch, parameter): the message names it and what was expected."""
