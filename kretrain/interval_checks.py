"""A report's bootstrap intervals checked against its own point estimates (the trainer writes both)."""

from __future__ import annotations

from kretrain.api import Evaluation, RunReport
from kretrain.api.intervals import PairedBootstrap

TOLERANCE = 1e-6
"""Largest difference allowed between an era's or class cell's point estimate and the reported metrics (both
come from Ultralytics' ap_per_class on the same per-image statistics in the same order; they agree to ~1e-12)."""


def _name(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:61] + "...")


def _off(where: str, field: str, interval_value: float, reported: float) -> str | None:
    if abs(interval_value - reported) <= TOLERANCE:
        return None
    return (
        f"report.json's intervals give {where} {field} {interval_value:+.6f}, but its evaluations give "
        f"{reported:+.6f}: the intervals were not computed from the reported metrics."
    )


def interval_mismatch(report: RunReport) -> str | None:
    """Why the report's intervals contradict its evaluations (None: consistent, or not used by the gate).

    Only intervals the gate would use are checked (computed against the reported incumbent): each era's delta
    must equal candidate - incumbent of the gate metric, and each class cell's candidate, incumbent, delta and
    instance count must equal the evaluations' per-class AP50-95 and test instances (the bootstrap computes
    them on the same images in the same order). The pooled delta is not compared: the bootstrap joins the eras
    in sorted order, so tied confidences may sort differently than in the evaluation (up to ~1e-2 apart with
    many ties); the gate bounds the pooled lower bound by the evaluations' own delta instead
    (policy_guards.pooled_bounds).
    """
    ci, inc = report.intervals, report.incumbent_evaluation
    if ci is None or inc is None or ci.incumbent_version != inc.model_version:
        return None
    return _check(ci, report.candidate_evaluation, inc)


def _check(ci: PairedBootstrap, cand: Evaluation, inc: Evaluation) -> str | None:
    metric = ci.metric
    for era, interval in ci.eras.items():
        ce, ie = cand.eras.get(era), inc.eras.get(era)
        if ce is None or ie is None:
            return f"report.json's intervals name era {_name(era)}, which an evaluation lacks."
        where = f"era {_name(era)}"
        why = _off(where, f"{metric} delta", interval.delta, ce.get(metric) - ie.get(metric))
        if why:
            return why
        for cls, cell in interval.classes.items():
            c_ap, i_ap = ce.per_class.get(cls), ie.per_class.get(cls)
            at = f"class {_name(cls)} in {where}"
            if c_ap is None or i_ap is None:
                return f"report.json's intervals have a cell for {at}, which an evaluation has no AP50-95 for."
            why = (
                _off(at, "candidate AP50-95", cell.candidate, c_ap)
                or _off(at, "incumbent AP50-95", cell.incumbent, i_ap)
                or _off(at, "AP50-95 delta", cell.delta, c_ap - i_ap)
            )
            if why:
                return why
            counted = ce.class_instances.get(cls)
            if counted is not None and counted != cell.instances:
                return (
                    f"report.json's intervals count {cell.instances} test instances of {at}, but its evaluation "
                    f"counts {counted}."
                )
    return None
