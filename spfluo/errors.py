"""Errors of the application layer that the command line reports without a traceback."""

__all__ = ["ProjectError"]


class ProjectError(Exception):
    """A project or run request that cannot be done (the message says why and what to do)."""
