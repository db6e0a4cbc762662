"""What the Job controller decides for the kubelet harness: pure functions over a Job's spec and its pods' outcomes.

Indexed and NonIndexed Jobs of `completions` pods (the harness runs NonIndexed ones with completions 1 only),
`backoffLimit`, `backoffLimitPerIndex` with `maxFailedIndexes`, and `podFailurePolicy` rules (onExitCodes,
onPodConditions; actions FailJob, FailIndex, Ignore, Count), as in the Kubernetes documentation of Jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_BACKOFF_LIMIT = 6


@dataclass
class Progress:
    """What happened to a Job's indexes so far."""

    succeeded: set[int] = field(default_factory=set)
    failed_indexes: set[int] = field(default_factory=set)
    """Indexes out of retries (backoffLimitPerIndex) or failed by a FailIndex rule."""
    failures: int = 0
    """Counted pod failures over all indexes (what backoffLimit limits)."""
    per_index: dict[int, int] = field(default_factory=dict)
    """Counted pod failures of each index (what backoffLimitPerIndex limits)."""


@dataclass(frozen=True)
class Verdict:
    """After one pod ended: restart its index or not, and whether the Job is now done (and why)."""

    restart: bool
    job_failed: tuple[str, str] | None = None
    """(reason, message) when the Job has failed."""


def completions(spec: dict[str, Any]) -> int:
    return int(spec.get("completions") or 1)


def indexed(spec: dict[str, Any]) -> bool:
    return spec.get("completionMode") == "Indexed"


def rule_action(spec: dict[str, Any], container: str, exit_code: int, pod_conditions: list[dict[str, Any]]) -> str:
    """The action of the first podFailurePolicy rule matching a failed pod, `Count` when none does."""
    for rule in (spec.get("podFailurePolicy") or {}).get("rules") or []:
        on_codes = rule.get("onExitCodes")
        if on_codes is not None:
            if on_codes.get("containerName") not in (None, container):
                continue
            listed = exit_code in on_codes.get("values", [])
            if listed == (on_codes.get("operator") == "In"):
                return str(rule["action"])
            continue
        for want in rule.get("onPodConditions") or []:
            have = {(c.get("type"), c.get("status", "True")) for c in pod_conditions}
            if (want["type"], want.get("status", "True")) in have:
                return str(rule["action"])
    return "Count"


def pod_failed(spec: dict[str, Any], progress: Progress, index: int, action: str) -> Verdict:
    """Record a failed pod of `index` under `action` (rule_action's answer) and decide what follows."""
    if action == "FailJob":
        return Verdict(False, ("PodFailurePolicy", f"pod of index {index} matched a FailJob rule"))
    if action == "Ignore":
        return Verdict(True)
    per_index_limit = spec.get("backoffLimitPerIndex")
    if action == "FailIndex":
        progress.failed_indexes.add(index)
    else:
        progress.failures += 1
        progress.per_index[index] = progress.per_index.get(index, 0) + 1
        if per_index_limit is not None and progress.per_index[index] > int(per_index_limit):
            progress.failed_indexes.add(index)
    limit = spec.get("backoffLimit")
    if limit is None and per_index_limit is None:
        limit = DEFAULT_BACKOFF_LIMIT
    if limit is not None and progress.failures > int(limit):
        return Verdict(False, ("BackoffLimitExceeded", "Job has reached the specified backoff limit"))
    most = spec.get("maxFailedIndexes")
    if most is not None and len(progress.failed_indexes) > int(most):
        return Verdict(
            False, ("MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes")
        )
    return Verdict(index not in progress.failed_indexes, settled(spec, progress))


def settled(spec: dict[str, Any], progress: Progress) -> tuple[str, str] | None:
    """The Job's failure once every index has ended and some failed (backoffLimitPerIndex), else None."""
    if progress.failed_indexes and progress.succeeded | progress.failed_indexes >= set(range(completions(spec))):
        return ("FailedIndexes", "Job has failed indexes")
    return None


def complete(spec: dict[str, Any], progress: Progress) -> bool:
    """Every index succeeded."""
    return progress.succeeded >= set(range(completions(spec)))


def index_ranges(indexes: set[int]) -> str:
    """Kubernetes' compressed index list: {0, 1, 2, 5} -> `0-2,5`."""
    out: list[str] = []
    for i in sorted(indexes):
        if out and out[-1].split("-")[-1] == str(i - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


def status_counts(spec: dict[str, Any], progress: Progress, active: int) -> dict[str, Any]:
    """The Job status fields the controller keeps: active, succeeded, failed and, when indexed, the index lists."""
    out: dict[str, Any] = {"active": active, "succeeded": len(progress.succeeded), "failed": progress.failures}
    if indexed(spec):
        out["completedIndexes"] = index_ranges(progress.succeeded)
        if spec.get("backoffLimitPerIndex") is not None:
            out["failedIndexes"] = index_ranges(progress.failed_indexes)
    return out
