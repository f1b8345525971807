"""The error an HTTP handler raises to answer with a JSON error body."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StartupError(Exception):
    """The node cannot start (its data dir is unusable or in use); the message names the path."""
