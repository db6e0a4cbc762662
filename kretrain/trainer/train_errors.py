"""The error a training run raises when it cannot start or finish (its message names the field or file)."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training could not start or finish; the message names the field or file at fault."""
