"""The operator concludes a run only on a report.json its own pods signed: the MAC under the run's stage key.

The operator makes each run's key (steps.create_run_objects) and puts it in the run's ConfigMap, which the run's
pods mount and the line's other trainers cannot read (trainer pods get no API token). A trainer of another run of
the same model line can write this run's `runs/<run>/` (its scoped S3 credentials cover the line's `runs/`), so
before concluding the operator reads the key back from the ConfigMap, checks that the ConfigMap is controlled by
this RetrainJob, and checks `report.json.hmac` over the exact bytes it then parses (kretrain.trainer.runkey).
A report without that MAC ends the run Failed (Reason.REPORT_UNSIGNED): nothing is promoted or written.
`kretrain run` (no operator, no key) does not come here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kretrain.api import RunReport
from kretrain.api.pod import STAGE_KEY_FILE
from kretrain.operator.steps import controlled_by
from kretrain.trainer import runkey

if TYPE_CHECKING:
    from kretrain.operator.steps import KubeApi
    from kretrain.registry import Registry


class UntrustedReport(Exception):
    """The run's report.json cannot be taken for the run's own: no key to check it with, or no valid MAC."""


def stage_key(configmap: Mapping[str, Any] | None, uid: str, name: str) -> bytes:
    """The stage key in the run's ConfigMap `name` as the API server returned it (None: it does not exist).

    UntrustedReport when it is gone, is not controlled by the RetrainJob of `uid` (an object someone else put
    under that name), or has no well-formed key (64 hex characters; a larger value is not looked at)."""
    if configmap is None:
        raise UntrustedReport(f"ConfigMap {name}, which holds the run's stage key, does not exist")
    if not controlled_by(configmap, uid):
        raise UntrustedReport(
            f"ConfigMap {name} is not controlled by this RetrainJob (uid {uid}): its key is not the run's"
        )
    data = configmap.get("data")
    value = data.get(STAGE_KEY_FILE) if isinstance(data, Mapping) else None
    if not isinstance(value, str):
        raise UntrustedReport(f"ConfigMap {name} has no {STAGE_KEY_FILE}")
    try:
        return runkey.parse_key(value, f"ConfigMap {name} {STAGE_KEY_FILE}")
    except runkey.RunKeyError as exc:
        raise UntrustedReport(str(exc)) from None


def read_signed_report(
    kube: KubeApi, registry: Registry, model: str, namespace: str, uid: str, run: str, jname: str
) -> RunReport | None:
    """The run's report.json once its MAC verifies under the key of ConfigMap `jname`; None when there is no
    report (the ConfigMap is read only then).

    Raises UntrustedReport (the run fails; the message names `runs/<run>/report.json`), KubeError when the
    ConfigMap could not be read (404 is UntrustedReport), and what Registry.read_run_report raises."""
    where = f"runs/{run}/report.json"

    def key() -> bytes:
        try:
            return stage_key(kube.get_configmap(namespace, jname), uid, jname)
        except UntrustedReport as exc:
            raise UntrustedReport(f"cannot check the MAC of {where}: {exc}") from None

    try:
        return registry.read_run_report(model, run, stage_key=key)
    except runkey.Unsigned as exc:
        raise UntrustedReport(f"{where} is not signed with the run's stage key ({exc})") from None
