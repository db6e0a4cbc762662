"""Timers write their own status patch: a failed write is a retried handler, not a timer Kopf stops for good."""

from __future__ import annotations

import kopf

from kretrain.operator.kube import Kube, KubeError


def write_status(kube: Kube, plural: str, body: kopf.Body, patch: kopf.Patch, retry_delay: float) -> None:
    """Send what a timer put into `patch.status` now, as one merge patch of the status subresource, and leave
    Kopf's patch empty.

    Kopf applies a timer's patch after the handler returns; a write that fails there past Kopf's own retries
    (a 409 Conflict, an API outage longer than its backoffs) ends that object's timer until the operator
    restarts, so a RetrainJob would never be decided. Written here, the failure is the handler's: a retryable
    one (0, 408, 409 Conflict, 429, 5xx) raises TemporaryError and the timer tries again after `retry_delay`; any other
    (403: RBAC, 422: a status the schema refuses) PermanentError, which a timer logs and tries again at its
    next interval. A 404 (the object is gone) writes nothing.
    """
    status = dict(patch.get("status") or {})
    unexpected = sorted(set(patch) - {"status"})
    patch.clear()
    if unexpected:  # timers write only the status; anything else in the patch is a bug in the handler
        raise RuntimeError(f"a timer's patch may hold only status, not {', '.join(unexpected)}")
    if not status:
        return
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    try:
        kube.patch_status(plural, namespace, name, status)
    except KubeError as exc:
        if exc.status == 404:
            return
        message = f"cannot write the status of {plural} {namespace}/{name}: {exc}"
        if exc.retryable:
            raise kopf.TemporaryError(message, delay=retry_delay) from exc
        raise kopf.PermanentError(message) from exc
