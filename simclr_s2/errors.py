"""Errors a user can cause, kept apart from bugs so entry points print one line instead of a traceback."""


class UserError(ValueError):
    """A mistake in the user's input (a file, patch, parameter): the message names it and what was expected."""


class SettingError(UserError):
    """A training that the settings of this one run broke (diverged to NaN, a metric left undefined), not
    its data: a tuning study marks such a trial failed and goes on, where a data error stops the study."""


class NonFiniteError(SettingError):
    """A loss or metric became NaN or infinite: the run stops before a checkpoint or model keeps it."""
