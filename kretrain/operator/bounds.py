"""Status fields built from untrusted run records (report.json, progress.json), trimmed to a bounded size."""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

from kretrain.api import CheckResult, Comparison, Decision, EraDelta, Evaluation, Metrics, Progress, RunProgress

MAX_STATUS_BYTES = 200 * 1024
"""A status patch is kept under this many bytes of JSON (etcd takes ~1.5 MiB per object, the issue asks 256 KiB)."""
MAX_TEXT = 1000
"""A reason, check detail or summary is cut to this many characters."""
MAX_NAME = 64
"""A check name or metric name is cut to this many characters."""
MAX_REASONS = 200
"""The most decision reasons the status keeps (the report keeps all of them)."""
MAX_REASONS_CHARS = 48 * 1024
"""All decision reasons the status keeps together (a status holds at most two decisions: the run's and a
fallback's)."""
MAX_CONDITION_MESSAGE = 16 * 1024
"""A condition message built from decision reasons is cut to this many characters."""
MAX_CHECKS = 32
"""The most check results the status keeps."""


UNSAFE_TEXT_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
"""Characters shown as escapes in status and events: controls (ANSI escapes, newlines), format characters
(bidi overrides), line/paragraph separators and lone surrogates (report text reaches `kubectl describe`)."""


def printable(text: str) -> str:
    """`text` with every character in UNSAFE_TEXT_CATEGORIES written as its Python escape (`\\x1b`, `\\u202e`)."""
    if text.isprintable():
        return text
    return "".join(
        ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        if unicodedata.category(ch) in UNSAFE_TEXT_CATEGORIES
        else ch
        for ch in text
    )


def short(text: object, limit: int = MAX_TEXT) -> str:
    """`text` as a printable string (see `printable`) of at most `limit` characters (cut with an ellipsis)."""
    value = printable(str(text))
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _metrics(m: Metrics) -> Metrics:
    """Pooled figures only: the per-class detail stays in the report."""
    return m.model_copy(update={"per_class": {}, "class_instances": {}})


def _evaluation(e: Evaluation, eras: list[str], with_eras: bool) -> Evaluation:
    kept = {era: _metrics(e.eras[era]) for era in eras if era in e.eras} if with_eras else {}
    version = short(e.model_version, 253) if e.model_version is not None else None
    return Evaluation(model_version=version, pooled=_metrics(e.pooled), eras=kept)


def comparison(c: Comparison, eras: list[str], with_eras: bool = True) -> Comparison:
    """status.evaluation: pooled and per-era figures of the spec's eras only, no per-class metrics (their emptied
    `perClass` keys are left out of the status by without_per_class)."""
    deltas: dict[str, EraDelta] = {e: c.eras[e] for e in eras if e in c.eras} if with_eras else {}
    trimmed = Comparison(
        metric=c.metric,
        candidate=_evaluation(c.candidate, eras, with_eras),
        incumbent=_evaluation(c.incumbent, eras, with_eras) if c.incumbent else None,
        pooled=c.pooled,
        eras=deltas,
        confidence=c.confidence,
    )
    return trimmed


def without_per_class(value: Any) -> Any:
    """The dumped comparison without its (emptied) `perClass` and `classInstances` keys."""
    if isinstance(value, dict):
        return {k: without_per_class(v) for k, v in value.items() if k not in ("perClass", "classInstances")}
    return value


def checks(results: list[CheckResult]) -> list[CheckResult]:
    """status.checks: at most MAX_CHECKS, names and details cut, non-finite numbers dropped."""
    return [
        CheckResult(
            name=short(c.name, MAX_NAME),
            passed=c.passed,
            value=_finite(c.value),
            threshold=_finite(c.threshold),
            detail=short(c.detail),
        )
        for c in results[:MAX_CHECKS]
    ]


def decision(d: Decision) -> Decision:
    """The decision with at most MAX_REASONS reasons of at most MAX_TEXT characters each, MAX_REASONS_CHARS in all."""
    reasons: list[str] = []
    used = 0
    for reason in d.reasons[:MAX_REASONS]:
        cut = short(reason)
        if used + len(cut) > MAX_REASONS_CHARS:
            break
        reasons.append(cut)
        used += len(cut)
    if len(reasons) < len(d.reasons):
        reasons.append(f"... {len(d.reasons) - len(reasons)} more reasons in the run's report")
    return d.model_copy(update={"reasons": reasons, "summary": short(d.summary)})


def progress(p: RunProgress) -> Progress:
    """status.progress from a validated progress.json (every number already finite and bounded)."""
    return Progress(
        epoch=p.epoch, epochs=p.epochs, display=f"{p.epoch}/{p.epochs}", eta_seconds=p.eta_seconds, metrics=p.metrics
    )


def size(patch: dict[str, Any]) -> int:
    """Bytes of the patch as JSON (NaN and Infinity are refused: the API server would refuse them too)."""
    return len(json.dumps(patch, allow_nan=False, separators=(",", ":")))
