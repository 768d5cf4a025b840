"""Errors the studio reports to users; each message names the value, the rule and the fix."""


class StudioError(Exception):
    """Base: a message meant for the user."""


class InvalidInput(StudioError):
    """A request or setting has a value outside what is allowed."""


class StorageError(StudioError):
    """Output files could not be written or read."""


class ModelUnavailable(StudioError):
    """A model's files are missing, incomplete or could not be loaded."""


class DoesNotFit(StudioError):
    """A run cannot fit the memory budget, even after unloading idle models and offloading."""


class Cancelled(StudioError):
    """The user cancelled the run."""
