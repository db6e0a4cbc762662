"""Conclude a finished run: bind its report to the run, apply the promotion policy, move the incumbent at most once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from kretrain.api import Comparison, Decision, ModelRef, RetrainJobSpec, RunReport, compare
from kretrain.api.conditions import DecisionReason
from kretrain.api.conditions import Reason as R
from kretrain.interval_checks import interval_mismatch
from kretrain.modelcard import build_card, write_card
from kretrain.policy import decide_report
from kretrain.registry import IncumbentChanged, Registry, RegistryError, VersionNotFound, now_rfc3339
from kretrain.store import ObjectTooLarge

Reason = DecisionReason
"""The reason of a Conclusion: kretrain.api.conditions.DecisionReason (one of its Reason constants)."""
REPORT_MISMATCH: Reason = R.REPORT_MISMATCH
"""The report does not belong to the run (run id, model, candidate version or weights differ): state Failed."""
MISSING_EVALUATION: Reason = R.MISSING_EVALUATION
"""The report lacks an evaluation the spec requires (an era, or the current incumbent's): state Rejected."""
FAILED_REASONS: frozenset[str] = frozenset({REPORT_MISMATCH})
"""Reasons that make the run Failed rather than Rejected: its outputs cannot be trusted at all."""
AWAITING_APPROVAL: Reason = R.AWAITING_APPROVAL
"""The candidate passed the gate under promotion.approval Manual and waits for an approval annotation (not terminal)."""
APPROVAL_REJECTED: Reason = R.APPROVAL_REJECTED
"""A person rejected the passing candidate with the reject annotation: state Rejected."""
APPROVE_ANNOTATION = "kretrain.dev/approve"
"""Annotation on the RetrainJob naming the candidate version a person approves."""
REJECT_ANNOTATION = "kretrain.dev/reject"
"""Annotation on the RetrainJob naming the candidate version a person rejects."""
Approval = Literal["automatic", "approved", "rejected", "waiting"]
MAX_REASON_CHARS = 1000
"""A reason quoting report content is cut to this many characters."""


@dataclass
class Conclusion:
    """The decision on a run, the comparison it was based on, and a CamelCase reason for conditions."""

    decision: Decision
    comparison: Comparison
    reason: Reason
    candidate_version: str
    expected_incumbent: str | None
    candidate: ModelRef | None = None
    """The candidate as the registry records it under the run id (None when the report was refused)."""
    incumbent: ModelRef | None = None
    """The incumbent the registry held when the run was concluded."""

    @property
    def failed(self) -> bool:
        """The report was refused as not belonging to the run (state Failed, not Rejected)."""
        return self.reason in FAILED_REASONS


def approval(spec: RetrainJobSpec, candidate_version: str, annotations: Mapping[str, str]) -> Approval:
    """Whether a passing candidate may be promoted now: `automatic` without promotion.approval Manual; else
    `rejected` when the reject annotation names the candidate, `approved` when the approve annotation does
    (a rejection wins over an approval of the same version), `waiting` otherwise (an annotation naming another
    version, e.g. an earlier run's, approves nothing)."""
    if spec.promotion.approval != "Manual":
        return "automatic"
    if str(annotations.get(REJECT_ANNOTATION, "")).strip() == candidate_version:
        return "rejected"
    if str(annotations.get(APPROVE_ANNOTATION, "")).strip() == candidate_version:
        return "approved"
    return "waiting"


def wants_fallback(spec: RetrainJobSpec, conclusion: Conclusion) -> bool:
    """Whether a full retrain must follow: an incremental candidate failed the gate and fallbackToFull is on."""
    strategy = spec.strategy
    return strategy.type == "incremental" and strategy.fallback_to_full and conclusion.reason == R.GATE_FAILED


def fallback_spec(spec: RetrainJobSpec) -> RetrainJobSpec:
    """The full-retrain spec that follows a rejected incremental run: same data, gate, knobs and start
    weights (the incumbent, unless the spec named others), every era's training split, no replay, and no
    further fallback."""
    strategy = spec.strategy.model_copy(
        update={
            "type": "full",
            "replay": None,
            "fallback_to_full": False,
            "base_weights": spec.strategy.effective_base_weights,
        }
    )
    return spec.model_copy(update={"strategy": strategy})


_OBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
"""An object directly in a version folder (no `/`, no leading dot)."""


def _short(text: object) -> str:
    value = str(text)
    return value if len(value) <= 80 else value[:77] + "..."


def _short_text(text: object) -> str:
    value = str(text)
    return value if len(value) <= 400 else value[:397] + "..."


def _record_ref(registry: Registry, model: str, run_id: str) -> ModelRef | str | None:
    """The version registered under `run_id` as a ModelRef, None when there is none, or why its record is unusable
    (the trainer writes it too: an oversized or malformed version.json fails the run, it is not retried)."""
    try:
        info = registry.version_info(model, run_id)
    except VersionNotFound:
        return None
    except (ObjectTooLarge, RegistryError) as exc:  # RegistryError: the record does not validate
        return f"The version record of {run_id!r} is unusable: {_short_text(exc)}"
    try:  # the VersionRecord validated both; a ModelRef may be stricter
        ref = ModelRef(version=run_id, uri=info.uri, sha256=info.sha256)
    except ValidationError:
        return f"The version record of {run_id!r} has no valid sha256 and uri ({_short(info.sha256)!r})."
    # The pointer a promotion writes copies this uri: it must name an object in the run's own version folder,
    # never another version's weights (or another bucket) that the trainer's record points at.
    folder = registry.version_uri(model, run_id) + "/"
    name = ref.uri[len(folder) :] if ref.uri.startswith(folder) else ""
    if not _OBJECT_NAME.fullmatch(name):
        return (
            f"The version record of {run_id!r} names weights {_short(ref.uri)!r}, which are not an object in "
            f"{folder}; a run's candidate is only ever its own registered weights."
        )
    return ref


def report_mismatch(report: RunReport, spec: RetrainJobSpec, run_id: str, record: ModelRef | str | None) -> str | None:
    """Why the report does not belong to run `run_id` of `spec.model` (None when it does)."""
    if isinstance(record, str):
        return record
    if report.run_id != run_id:
        return f"report.json names run {_short(report.run_id)!r}, but it was read for run {run_id!r}."
    if report.model != spec.model:
        return f"report.json names model {_short(report.model)!r}, but the RetrainJob trains {spec.model!r}."
    if record is None:
        return f"No version is registered under the run id {run_id!r}, so there is no candidate to promote."
    if report.candidate is None:
        return f"report.json names no candidate; version {run_id!r} has sha256 {record.sha256}."
    if report.candidate.version != run_id:
        return (
            f"report.json names candidate version {_short(report.candidate.version)!r}, but the run's candidate "
            f"is always the version registered under its run id {run_id!r}."
        )
    if report.candidate.sha256 != record.sha256:
        return (
            f"report.json names candidate weights with sha256 {report.candidate.sha256}, but version {run_id!r} "
            f"is registered with sha256 {record.sha256}."
        )
    return interval_mismatch(report)  # intervals the trainer made up would decide the gate alone


def missing_evaluations(report: RunReport, spec: RetrainJobSpec, current: str | None) -> list[str]:
    """Evaluations the spec requires that the report lacks: every era of the candidate, and of the current
    incumbent when there is one (an evaluation of another incumbent version is not 'missing' but stale)."""
    missing = [
        f"Era {e!r} is missing from the candidate's evaluation; every era of spec.dataset.eras must be evaluated."
        for e in spec.dataset.eras
        if e not in report.candidate_evaluation.eras
    ]
    inc = report.incumbent_evaluation
    if current is not None and inc is None:
        missing.append(
            f"The registry has incumbent {current!r}, but the report has no incumbentEvaluation; "
            "a candidate is only compared with the incumbent on the same images."
        )
    elif current is not None and inc is not None and inc.model_version == current:
        missing += [
            f"Era {e!r} is missing from the incumbent's evaluation; the two models cannot be compared on it."
            for e in spec.dataset.eras
            if e not in inc.eras
        ]
    return missing


def _refused(
    report: RunReport,
    spec: RetrainJobSpec,
    reason: Reason,
    problems: list[str],
    run_id: str,
    stamp: str,
    current: ModelRef | None,
    record: ModelRef | None,
) -> Conclusion:
    """A conclusion that promotes nothing: the report was refused (`problems` say why)."""
    what = "report refused" if reason in FAILED_REASONS else "missing evaluation"
    decision = Decision(
        promoted=False,
        passed=False,
        mode=spec.promotion.mode,
        summary=f"Not promoted: {what}: {problems[0]}"[:MAX_REASON_CHARS],
        reasons=[p[:MAX_REASON_CHARS] for p in problems],
        decided_at=stamp,
    )
    comparison = compare(
        report.candidate_evaluation, report.incumbent_evaluation, spec.promotion.metric, report.intervals
    )
    expected = current.version if current else None
    return Conclusion(decision, comparison, reason, run_id, expected, record, current)


def conclude(
    registry: Registry,
    report: RunReport,
    spec: RetrainJobSpec,
    actor: str,
    now: str | None = None,
    *,
    run_id: str,
    annotations: Mapping[str, str] | None = None,
) -> Conclusion:
    """Bind the report to run `run_id`, decide with the policy and, when the gate passes in auto mode, promote
    the version registered under `run_id` with a conditional write.

    `run_id` is the caller's own (the operator derives it from the RetrainJob): the candidate is always the
    version registered under it, never a version the report names. Before any decision the report must name
    that run and model, and that version's registered sha256 (else `ReportMismatch`, a failed run); it must
    evaluate the candidate on every era and, when the registry has an incumbent now, that very incumbent on
    every era (else `MissingEvaluation`, rejected). A report evaluated against another incumbent than the
    current one is `IncumbentChanged` and not applied. Every decided run (not a report refused as not the run's) gets a model
    card (card.json + card.md) in its version folder, written after the decision. Idempotent: when the
    candidate already is the incumbent (an earlier attempt promoted it), nothing is written again.
    """
    stamp = now or now_rfc3339()
    found = _record_ref(registry, spec.model, run_id)
    mismatch = report_mismatch(report, spec, run_id, found)
    record = found if isinstance(found, ModelRef) else None
    pointer = registry.incumbent_pointer(spec.model)
    current = None if pointer is None else ModelRef(version=pointer.version, uri=pointer.uri, sha256=pointer.sha256)
    if mismatch is not None:
        return _refused(report, spec, REPORT_MISMATCH, [mismatch], run_id, stamp, current, record)
    already = pointer is not None and pointer.version == run_id
    # Already the incumbent: an earlier attempt of ours promoted it against the pointer's previous incumbent,
    # so that is the evaluation the report must hold (a pointer moved to the run by anyone else is not a pass).
    previous = pointer.previous if pointer is not None else None
    missing = missing_evaluations(report, spec, previous if already else (current.version if current else None))
    if missing:
        refused = _refused(report, spec, MISSING_EVALUATION, missing, run_id, stamp, current, record)
        write_card(registry, build_card(report, refused.decision, refused.reason, spec.promotion.metric))
        return refused
    decision = decide_report(report, spec)
    decision.decided_at = stamp
    expected = current.version if current else None
    evaluated_against = report.incumbent_evaluation.model_version if report.incumbent_evaluation else None
    reason: Reason = R.PROMOTED if decision.promoted else (R.DRY_RUN if decision.passed else R.GATE_FAILED)
    verdict = approval(spec, run_id, annotations or {}) if decision.promoted and not already else "automatic"
    if verdict in ("waiting", "rejected"):
        decision.promoted = False
        if verdict == "waiting":
            reason = AWAITING_APPROVAL
            decision.summary = f"Awaiting approval: {decision.summary}"
            decision.reasons.append(
                f"promotion.approval is Manual: the candidate passed the gate and waits until someone who may patch "
                f"this RetrainJob sets the annotation {APPROVE_ANNOTATION}={run_id} (or {REJECT_ANNOTATION}={run_id})."
            )
        else:
            reason = APPROVAL_REJECTED
            decision.summary = f"Rejected by hand: {decision.summary}"
            decision.reasons.append(f"Rejected by hand: the annotation {REJECT_ANNOTATION} names {run_id}.")
    elif verdict == "approved":
        decision.reasons.append(f"Approved by hand: the annotation {APPROVE_ANNOTATION} names {run_id}.")
    if already and (not decision.promoted or evaluated_against != previous):
        decision.promoted = False
        decision.reasons.append(
            f"Not promoted: {run_id} is the incumbent, but not through this gate (the pointer's previous incumbent "
            f"is {previous or 'none'}, the report was evaluated against "
            f"{_short(evaluated_against or 'none')}"
            + ("" if decision.passed else ", and the candidate fails the gate")
            + "); the pointer was moved outside the operator: check the line's history and roll back."
        )
        decision.summary = "not promoted: incumbent set outside the gate"
        reason = R.INCUMBENT_CHANGED
    elif already:
        decision.reasons.append(f"{run_id} is already the incumbent (an earlier attempt promoted it).")
    elif evaluated_against != expected:
        decision.promoted = False
        decision.reasons.append(
            f"Not promoted: the candidate was evaluated against incumbent {_short(evaluated_against or 'none')}, "
            f"but the incumbent is {expected or 'none'} now; the decision was made against the old incumbent, "
            "so it is not applied."
        )
        decision.summary = "not promoted: incumbent changed"
        reason = R.INCUMBENT_CHANGED
    elif decision.promoted:
        alias = spec.promotion.alias  # set: the candidate moves this alias, the incumbent stays its baseline
        try:
            if alias:
                from kretrain.aliases import set_alias

                set_alias(
                    registry, spec.model, alias, run_id, reason=decision.summary or "passed the gate", actor=actor
                )
                decision.reasons.append(
                    f"Alias {alias!r} now names {run_id}; the incumbent stays {expected or 'none'}."
                )
            else:
                registry.promote(
                    spec.model, run_id, expected=expected, reason=decision.summary or "passed the gate", actor=actor
                )
        except IncumbentChanged as exc:  # AliasChanged too: another writer moved the alias during our write
            decision.promoted = False
            decision.reasons.append(
                f"Not promoted: the {f'alias {alias!r}' if alias else 'incumbent'} changed from "
                f"{expected if not alias else exc.expected or 'none'} to {exc.current or 'another version'} "
                "while the run was evaluated; the decision was made against the old incumbent, so it is not applied."
            )
            decision.summary = "not promoted: incumbent changed"
            reason = R.INCUMBENT_CHANGED
    comparison = compare(
        report.candidate_evaluation, report.incumbent_evaluation, spec.promotion.metric, report.intervals
    )
    write_card(registry, build_card(report, decision, reason, spec.promotion.metric))
    return Conclusion(decision, comparison, reason, run_id, expected, record, current)
