"""Errors a user can act on: the CLI prints their message and exits with status 2."""

from __future__ import annotations


class HeritagesegError(Exception):
    """Base of every error whose message tells the user what to fix."""


class ConfigError(HeritagesegError):
    """params.yaml or a command-line value is invalid."""


class DataError(HeritagesegError):
    """A data source as a whole is unusable (missing column, empty source, unreadable file)."""


class RecordError(HeritagesegError):
    """One record is unusable; --on-error skip can drop it and go on."""

    def __init__(self, record_id: str, origin: str, problem: str):
        self.record_id = record_id
        self.origin = origin
        self.problem = problem
        super().__init__(f"record {record_id!r} ({origin}): {problem}")
