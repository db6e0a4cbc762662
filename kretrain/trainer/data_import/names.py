"""Checks on names that come from an untrusted source: file names, era names, class names."""

from __future__ import annotations

import re
import unicodedata

from kretrain.api.spec import ERA_PATTERN
from kretrain.store import UNSAFE_KEY_CATEGORIES

MAX_NAME_CHARS = 1024
"""Longest relative file name accepted from a source."""


def name_problem(name: object) -> str | None:
    """Why `name` is not a safe relative POSIX file name, or None if it is.

    Refused: non-strings, empty or overlong names, the store's UNSAFE_KEY_CATEGORIES (controls such
    as NUL and newlines, line/paragraph separators, format characters such as bidirectional
    overrides, lone surrogates), backslashes, absolute names, drive letters, and empty, `.` or `..`
    segments (path traversal). The same names the data pipeline accepts as object keys.
    """
    if not isinstance(name, str):
        return f"is not a string ({type(name).__name__})"
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    bad = (
        None
        if name.isprintable()
        else next((c for c in name if unicodedata.category(c) in UNSAFE_KEY_CATEGORIES), None)
    )
    if bad is not None:
        return f"contains the control, separator or format character U+{ord(bad):04X} ({unicodedata.category(bad)})"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is absolute"
    if re.match(r"^[A-Za-z]:", name):
        return "starts with a drive letter"
    segments = name.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return "has an empty, '.' or '..' path segment (path traversal)"
    return None


def check_name(name: object, what: str) -> str:
    """`name` if it is a safe relative file name, else ValueError naming `what` and the problem."""
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"{what} {name!r} {problem}")
    assert isinstance(name, str)
    return name


def check_era(era: str) -> str:
    """The era name if it matches the spec's era pattern (one path segment), else ValueError."""
    if not re.match(ERA_PATTERN, era):
        raise ValueError(f"era name {era!r} must match {ERA_PATTERN} (letters, digits, '.', '_', '-'; 1-63 chars)")
    return era


def normalise_class(name: str) -> str:
    """A class name folded for typo detection: case-folded, whitespace collapsed and trimmed."""
    return " ".join(name.split()).casefold()
