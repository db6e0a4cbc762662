"""The registry's errors (kretrain.registry re-exports them; kretrain.artifacts raises them too)."""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every registry error."""


class IncumbentChanged(RegistryError):
    """The incumbent is not the one the caller decided against (or another writer won the race).

    `current` is the version that is incumbent now (None when there is none), `expected` the one the
    caller expected.
    """

    def __init__(self, message: str, current: str | None = None, expected: str | None = None) -> None:
        super().__init__(message)
        self.current = current
        self.expected = expected


class TamperedWeights(RegistryError):
    """Weights whose sha256 does not match the value registered for their version."""


class ConditionalWritesIgnored(RegistryError):
    """The registry's S3 backend does not honour If-None-Match / If-Match, so two promotions could both win.

    `endpoint` is the S3 endpoint (None: AWS), `problems` what the probe saw.
    """

    def __init__(self, message: str, endpoint: str | None, problems: list[str]) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.problems = problems


class VersionExists(RegistryError):
    """A version registered already with other weights (another writer won, or an old version of that name)."""


class VersionNotFound(RegistryError, LookupError):
    """A version (or model) that is not in the registry."""


class InvalidRunRecord(RegistryError):
    """A run record (progress.json, report.json) that is too large or does not validate; `uri` names it."""

    def __init__(self, uri: str, problem: str) -> None:
        super().__init__(f"{uri}: {problem}")
        self.uri = uri
        self.problem = problem
