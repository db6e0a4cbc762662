"""The operator concludes a run only on a report.json its pods signed with the run's stage key (the key in the
run's ConfigMap, controlled by the RetrainJob): another trainer of the line can write `runs/<run>/report.json`
but not its MAC, so a forged report fails the run (ReportUnsigned) and the pointer does not move.

Pure cases (the key's ConfigMap), the registry's check on real SeaweedFS, the lifecycle with a stand-in API and a
real registry (retry vs fail on the ConfigMap's read), and the real operator against the emulator."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import path, sim
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, conditions, operator_for, running_cluster, settled, started
from kretrain.api.conditions import Cond, Reason
from kretrain.api.pod import STAGE_KEY_FILE
from kretrain.operator import jobs, lifecycle
from kretrain.operator.kube import KubeError
from kretrain.operator.report_trust import UntrustedReport, stage_key
from kretrain.operator.settings import OperatorSettings
from kretrain.registry import Registry
from kretrain.store import ObjectStore
from kretrain.trainer import runkey

UID = "0123abcd-4567-89ef"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NS, NAME, MODEL = "ns", "rtj", "m"
RUN = jobs.run_id(NS, NAME, UID)
JOB = jobs.job_name(RUN)
INCUMBENT = {"e1": 0.50, "e2": 0.50}
BETTER = {"e1": 0.60, "e2": 0.60}
WORSE = {"e1": 0.40, "e2": 0.40}


def owner(uid: str = UID, controller: Any = True) -> dict[str, Any]:
    ref = {"apiVersion": "kretrain.dev/v1alpha1", "kind": "RetrainJob", "name": NAME, "uid": uid}
    return ref if controller is None else {**ref, "controller": controller}


def configmap(refs: Any = None, data: Any = None) -> dict[str, Any]:
    """The run's ConfigMap as the API server returns it (the RetrainJob's controller reference, KEY)."""
    return {
        "metadata": {"name": JOB, "namespace": NS, "ownerReferences": [owner()] if refs is None else refs},
        "data": {"spec.json": "{}", STAGE_KEY_FILE: KEY.hex()} if data is None else data,
    }


# ---- the key's ConfigMap: what is trusted (pure) -------------------------------------------------------------
CONFIGMAPS: list[tuple[str, dict[str, Any] | None, bytes | str]] = [
    ("ours", configmap(), KEY),
    ("key-with-a-newline", configmap(data={STAGE_KEY_FILE: KEY.hex() + "\n"}), KEY),
    ("ours-among-other-owners", configmap(refs=[owner("x", False), owner()]), KEY),
    ("gone", None, "does not exist"),
    ("no-owner-references", configmap(refs=[]), "not controlled by this RetrainJob"),
    ("owner-references-not-a-list", configmap(refs={"uid": UID}), "not controlled by this RetrainJob"),
    ("another-retrainjobs", configmap(refs=[owner("ffffffff-other")]), "not controlled by this RetrainJob"),
    ("ours-but-not-controller", configmap(refs=[owner(controller=False)]), "not controlled by this RetrainJob"),
    ("ours-controller-unset", configmap(refs=[owner(controller=None)]), "not controlled by this RetrainJob"),
    ("controller-truthy-string", configmap(refs=[owner(controller="true")]), "not controlled by this RetrainJob"),
    ("no-data", configmap(data={}), f"has no {STAGE_KEY_FILE}"),
    ("data-not-a-map", configmap(data=["x"]), f"has no {STAGE_KEY_FILE}"),
    ("key-not-a-string", configmap(data={STAGE_KEY_FILE: 7}), f"has no {STAGE_KEY_FILE}"),
    ("key-short", configmap(data={STAGE_KEY_FILE: "ab" * 31}), "64 lowercase hex"),
    ("key-upper", configmap(data={STAGE_KEY_FILE: KEY.hex().upper()}), "64 lowercase hex"),
    ("key-empty", configmap(data={STAGE_KEY_FILE: ""}), "64 lowercase hex"),
    ("key-oversized", configmap(data={STAGE_KEY_FILE: KEY.hex() + " " * runkey.MAX_KEY_BYTES}), "64 lowercase hex"),
    ("key-huge", configmap(data={STAGE_KEY_FILE: "a" * 1_000_000}), "64 lowercase hex"),
]


@pytest.mark.parametrize(("cm", "expected"), [c[1:] for c in CONFIGMAPS], ids=[c[0] for c in CONFIGMAPS])
def test_the_stage_key_is_taken_only_from_the_retrainjobs_own_configmap(
    cm: dict[str, Any] | None, expected: bytes | str
) -> None:
    if isinstance(expected, bytes):
        assert stage_key(cm, UID, JOB) == expected
        return
    with pytest.raises(UntrustedReport, match=expected) as err:
        stage_key(cm, UID, JOB)
    assert JOB in str(err.value) and len(str(err.value)) < 300


# ---- the registry's check: the MAC of the exact bytes, before they are parsed (real SeaweedFS) ----------------
@pytest.fixture
def registry(s3: Any) -> Registry:
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    return Registry(store, f"s3://{s3.new_bucket('trust')}/{uuid.uuid4().hex[:8]}")


def _forge(registry: Registry, data: bytes) -> None:
    registry.store.put_bytes(registry.run_report_uri(MODEL, RUN), data)


def test_a_report_counts_only_with_the_mac_of_its_bytes(registry: Registry, tmp_path: Path) -> None:
    honest = sim.train(registry, MODEL, RUN, BETTER, None, tmp_path, key=KEY)
    uri = registry.run_report_uri(MODEL, RUN)
    honest_bytes = registry.store.get_bytes(uri)
    assert registry.read_run_report(MODEL, RUN, stage_key=lambda: KEY) == honest
    with pytest.raises(runkey.Unsigned, match=f"runs/{RUN}/report.json"):
        registry.read_run_report(MODEL, RUN, stage_key=lambda: OTHER_KEY)
    # The same document in other bytes (what the MAC binds is what is parsed, not a re-serialization of it).
    _forge(registry, json.dumps(honest.dump()).encode())
    with pytest.raises(runkey.Unsigned):
        registry.read_run_report(MODEL, RUN, stage_key=lambda: KEY)
    # A forged report that is not even JSON is refused as unsigned, never parsed (no InvalidRunRecord retries).
    _forge(registry, b"{not json")
    with pytest.raises(runkey.Unsigned):
        registry.read_run_report(MODEL, RUN, stage_key=lambda: KEY)
    # No .hmac, and a .hmac too large to be one.
    _forge(registry, honest_bytes)  # its MAC was left in place: the honest report counts again
    assert registry.read_run_report(MODEL, RUN, stage_key=lambda: KEY) == honest
    registry.store.put_bytes(uri + runkey.MAC_SUFFIX, b"a" * (runkey.MAX_MAC_BYTES + 1))
    with pytest.raises(runkey.Unsigned):
        registry.read_run_report(MODEL, RUN, stage_key=lambda: KEY)
    registry.store.delete(uri + runkey.MAC_SUFFIX)
    with pytest.raises(runkey.Unsigned):
        registry.read_run_report(MODEL, RUN, stage_key=lambda: KEY)
    # Without a key (`kretrain run` on a workstation) nothing is signed or required, as before.
    assert registry.read_run_report(MODEL, RUN) == honest


def test_no_report_asks_for_no_key(registry: Registry) -> None:
    def never() -> bytes:
        raise AssertionError("the key was read although there is no report")

    assert registry.read_run_report(MODEL, RUN, stage_key=never) is None


# ---- the lifecycle: a stand-in API server, the real registry ---------------------------------------------------
SETTINGS = OperatorSettings(registry="s3://models/reg", metrics_port=0, kube_url="http://127.0.0.1:9")
SPEC_DOC = {
    "model": MODEL,
    "dataset": {"uri": "s3://data/set", "eras": ["e1", "e2"]},
    "promotion": {"minImprovement": {"absolute": 0.01}, "maxEraRegression": 0.02},
}


class Succeeded:
    """The run's Job has succeeded; its ConfigMap is `cm`, or reading it raises `error`."""

    def __init__(self, cm: dict[str, Any] | None = None, error: KubeError | None = None) -> None:
        self.cm, self.error, self.reads = cm, error, 0

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        conds = [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}]
        return {"metadata": {"name": name, "ownerReferences": [owner()]}, "spec": {}, "status": {"conditions": conds}}

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        assert (namespace, name) == (NS, JOB)
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.cm


def poll(kube: Succeeded, registry: Registry) -> lifecycle.Outcome:
    deps = lifecycle.Deps(settings=SETTINGS, kube=kube, registry_for=lambda spec: registry,  # type: ignore[arg-type]
                          adopt=lambda objs: None, now=lambda: "2026-01-01T00:00:00Z")  # fmt: skip
    body = {
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1},
        "spec": SPEC_DOC,
        "status": {"jobName": JOB, "runId": RUN, "state": "Training"},
    }
    return lifecycle.poll(body, deps)


def test_a_signed_report_is_concluded(registry: Registry, tmp_path: Path) -> None:
    sim.seed_incumbent(registry, MODEL, "seed-1", INCUMBENT, tmp_path)
    sim.train(registry, MODEL, RUN, BETTER, INCUMBENT, tmp_path, key=KEY)
    outcome = poll(Succeeded(configmap()), registry)
    assert outcome.state == "Promoted", outcome.status
    assert registry.incumbent(MODEL).version == RUN  # type: ignore[union-attr]


UNTRUSTED: list[tuple[str, dict[str, Any] | None, bytes | None, str]] = [
    ("unsigned-report", configmap(), None, "is not signed with the run's stage key"),
    ("signed-with-another-runs-key", configmap(), OTHER_KEY, "is not signed with the run's stage key"),
    ("configmap-gone", None, KEY, "does not exist"),
    ("configmap-not-ours", configmap(refs=[owner("ffffffff-other")]), KEY, "not controlled by this RetrainJob"),
    ("configmap-without-key", configmap(data={"spec.json": "{}"}), KEY, f"has no {STAGE_KEY_FILE}"),
]


@pytest.mark.parametrize(("cm", "signer", "fragment"), [c[1:] for c in UNTRUSTED], ids=[c[0] for c in UNTRUSTED])
def test_an_untrusted_report_fails_the_run_and_promotes_nothing(
    registry: Registry, tmp_path: Path, cm: dict[str, Any] | None, signer: bytes | None, fragment: str
) -> None:
    sim.seed_incumbent(registry, MODEL, "seed-1", INCUMBENT, tmp_path)
    sim.train(registry, MODEL, RUN, BETTER, INCUMBENT, tmp_path, key=signer)  # passes the gate if it were trusted
    history = registry.history(MODEL)
    outcome = poll(Succeeded(cm), registry)
    assert outcome.state == "Failed" and outcome.retry is None
    [failed] = [c for c in outcome.status["conditions"] if c["type"] == Cond.FAILED]
    assert failed["reason"] == Reason.REPORT_UNSIGNED
    assert f"runs/{RUN}/report.json" in failed["message"] and fragment in failed["message"], failed["message"]
    assert "decision" not in outcome.status and outcome.decision_reason == Reason.REPORT_UNSIGNED
    assert registry.incumbent(MODEL).version == "seed-1"  # type: ignore[union-attr]
    assert registry.history(MODEL) == history  # nothing written to the line


@pytest.mark.parametrize(
    ("error", "quick"),
    [(KubeError(503, "ServiceUnavailable", "down"), True), (KubeError(0, "ConnectionError", "refused"), True),
     (KubeError(429, "TooManyRequests", "slow down"), True), (KubeError(403, "Forbidden", "no get on configmaps"), False)],
    ids=["unavailable", "unreachable", "throttled", "forbidden"],
)  # fmt: skip
def test_an_unreadable_configmap_is_tried_again(
    registry: Registry, tmp_path: Path, error: KubeError, quick: bool
) -> None:
    sim.train(registry, MODEL, RUN, BETTER, None, tmp_path, key=KEY)
    kube = Succeeded(error=error)
    outcome = poll(kube, registry)
    assert kube.reads == 1 and outcome.retry and f"ConfigMap {JOB}" in outcome.retry and outcome.status == {}
    assert outcome.retry_delay == (None if quick else lifecycle.REFUSED_RETRY_DELAY)
    assert registry.incumbent(MODEL) is None
    # Once the API server answers, the same run concludes.
    assert poll(Succeeded(configmap()), registry).state == "Promoted"


# ---- the real operator against the emulator, the real registry -------------------------------------------------
E2E_NS = "forged"
E2E_INCUMBENT = {"e1": 0.50, "e2": 0.50, "e3": 0.40}
E2E_BETTER = {"e1": 0.60, "e2": 0.60, "e3": 0.60}
E2E_WORSE = {"e1": 0.30, "e2": 0.30, "e3": 0.30}


@pytest.fixture(scope="module")
def cluster(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(s3, tmp_path_factory.mktemp("weights"), [E2E_NS]) as c:
        yield c


@pytest.fixture(scope="module")
def operator(cluster: Cluster, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = operator_for(cluster, s3, tmp_path_factory.mktemp("op") / "operator.log", [E2E_NS])
    op.start().wait_ready()
    yield op
    op.stop()
    assert "Traceback" not in op.log.read_text(), op.tail(200)


def _forged_report(cluster: Cluster, model: str, run: str) -> bytes:
    """What a trainer of another run of the line writes over `run`'s report: valid JSON, bound to the run id and
    the registered candidate (so conclude's own binding checks pass), with numbers that pass the gate."""
    honest = cluster.registry.read_run_report(model, run)
    assert honest is not None
    forged = honest.model_copy(update={"candidate_evaluation": sim.evaluation(E2E_BETTER)})
    return cluster.registry.write_run_report(model, run, forged)


FORGERIES = ["no-mac", "mac-of-the-honest-report", "replaced-configmap"]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_report_fails_the_run_through_the_real_operator(
    cluster: Cluster, operator: OperatorProcess, forgery: str
) -> None:
    model, name = f"m-{forgery}", f"victim-{forgery}"
    sim.seed_incumbent(cluster.registry, model, "seed-1", E2E_INCUMBENT, cluster.tmp)
    cluster.create_rtj(E2E_NS, name, model)
    status = started(cluster, operator, E2E_NS, name)
    run, jname = status["runId"], status["jobName"]
    cluster.train(model, run, E2E_WORSE, E2E_INCUMBENT)  # the honest run: rejected on its own numbers
    uri = cluster.registry.run_report_uri(model, run)
    if forgery == "no-mac":
        _forged_report(cluster, model, run)
        cluster.registry.store.delete(uri + runkey.MAC_SUFFIX)
    elif forgery == "mac-of-the-honest-report":
        _forged_report(cluster, model, run)
    else:  # someone with rights in the namespace puts a ConfigMap of their own (and key) under the run's name
        cm_path = path("", "v1", "configmaps", E2E_NS, jname)
        theirs = cluster.client.get(cm_path)
        cluster.client.delete(cm_path)
        theirs["metadata"] = {"name": jname, "namespace": E2E_NS, "labels": theirs["metadata"].get("labels", {})}
        theirs["data"][STAGE_KEY_FILE] = OTHER_KEY.hex()
        cluster.client.create(path("", "v1", "configmaps", E2E_NS), theirs)
        sim.sign_report(cluster.registry, model, run, _forged_report(cluster, model, run), OTHER_KEY)
    history = cluster.registry.history(model)
    sim.complete_job(cluster.client, E2E_NS, jname)
    status = settled(cluster, operator, E2E_NS, name)
    failed = conditions(status)[Cond.FAILED]
    assert status["state"] == "Failed" and failed["reason"] == Reason.REPORT_UNSIGNED, status
    assert f"runs/{run}/report.json" in failed["message"]
    assert ("not controlled by this RetrainJob" in failed["message"]) is (forgery == "replaced-configmap")
    assert "decision" not in status
    assert cluster.registry.incumbent(model).version == "seed-1"  # type: ignore[union-attr]
    assert cluster.promotions(model, run) == 0 and cluster.registry.history(model) == history
    assert ("Warning", Reason.REPORT_UNSIGNED) in {(t, r) for t, r, _ in cluster.events(E2E_NS)}


def test_the_honest_run_still_promotes_through_the_real_operator(cluster: Cluster, operator: OperatorProcess) -> None:
    model, name = "m-honest", "honest"
    sim.seed_incumbent(cluster.registry, model, "seed-1", E2E_INCUMBENT, cluster.tmp)
    cluster.create_rtj(E2E_NS, name, model)
    status = started(cluster, operator, E2E_NS, name)
    cluster.train(model, status["runId"], E2E_BETTER, E2E_INCUMBENT)  # signed with the key of the run's ConfigMap
    sim.complete_job(cluster.client, E2E_NS, status["jobName"])
    status = settled(cluster, operator, E2E_NS, name)
    assert status["state"] == "Promoted", status
    assert cluster.registry.incumbent(model).version == status["runId"]  # type: ignore[union-attr]
