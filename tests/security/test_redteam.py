"""Red-team regressions for issue 13: bypasses found by attacking the gate, model-file checks, spec forms and
status text with the real code (SeaweedFS for the registry); each case failed before its fix."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from emulator import sim
from kretrain.api import CheckResult, ModelRef, RetrainJobSpec, RunReport
from kretrain.api.pod import STAGE_KEY_FILE
from kretrain.operator import bounds, jobs, lifecycle, policy
from kretrain.operator.settings import OperatorSettings
from kretrain.operator.status_patch import CONDITION_REASON
from kretrain.promotion import conclude
from kretrain.registry import Lineage, Registry
from kretrain.registry_records import VersionRecord
from kretrain.store import ObjectStore, join_uri
from kretrain.trainer.modelfiles import (
    ModelFileError,
    builtin_yaml,
    check_activation,
    check_model_yaml,
    read_model_yaml,
)

MODEL = "m"
RUN = "ns-run-1234abcd"
ERAS = ["e1", "e2"]
INCUMBENT = {"e1": 0.50, "e2": 0.50}
BETTER = {"e1": 0.60, "e2": 0.60}
SPEC_DOC = {
    "model": MODEL,
    "dataset": {"uri": "s3://data/set", "eras": ERAS},
    "promotion": {"minImprovement": {"absolute": 0.01}, "maxEraRegression": 0.02},
}
SPEC = RetrainJobSpec.model_validate(SPEC_DOC)
UNSAFE = ["\x1b", "\n", "\r", "\x00", "\x07", "\u0085", "\u2028", "\u2029", "\u202e", "\u200b", "\ufeff"]


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    return str(s3.new_bucket("redteam"))


@pytest.fixture
def registry(s3: Any, bucket: str) -> Registry:
    store = ObjectStore(endpoint_url=s3.endpoint, access_key=s3.server.access_key, secret_key=s3.server.secret_key)
    return Registry(store, f"s3://{bucket}/{uuid.uuid4().hex[:8]}")


# ---- 1. the trainer's own version record cannot point the promotion at other weights -------------------------
def _line(registry: Registry, tmp: Path) -> tuple[RunReport, dict[str, Any], ModelRef]:
    """Incumbent v2, an unpromoted old version v5, and run RUN registered honestly; (report, RUN's record, v5)."""
    sim.seed_incumbent(registry, MODEL, "v2", INCUMBENT, tmp)
    rep5 = sim.report("v5", MODEL, {}, {"e1": 0.9, "e2": 0.9}, None, None)
    v5 = registry.register(MODEL, "v5", sim.weights_file(tmp, "v5"), rep5, {}, Lineage(parent=None))
    report = sim.train(registry, MODEL, RUN, BETTER, INCUMBENT, tmp)
    return report, registry.version_info(MODEL, RUN).model_dump(mode="json", by_alias=True), v5


RecordForge = Callable[[dict[str, Any], ModelRef, Registry], dict[str, Any]]


def _points_at(uri: Callable[[Registry, ModelRef], str], sha: Callable[[dict[str, Any], ModelRef], str]) -> RecordForge:
    return lambda rec, v5, reg: {**rec, "uri": uri(reg, v5), "sha256": sha(rec, v5)}


def _own_folder(reg: Registry, rest: str) -> str:
    return f"{reg.version_uri(MODEL, RUN)}/{rest}"


# (id, how the trainer rewrites runs' version.json, expected reason). The report always names RUN with the
# record's sha256, so only the record's `uri` differs from an honest run.
RECORD_FORGERIES: list[tuple[str, RecordForge, str]] = [
    ("honest-record-is-promoted", lambda rec, v5, reg: rec, "Promoted"),
    ("uri-is-another-versions-weights", _points_at(lambda reg, v5: v5.uri, lambda rec, v5: v5.sha256),
     "ReportMismatch"),
    ("uri-in-another-bucket", _points_at(lambda reg, v5: "s3://evil-bucket/weights.pt", lambda rec, v5: rec["sha256"]),
     "ReportMismatch"),
    ("uri-traverses-to-another-version",
     _points_at(lambda reg, v5: _own_folder(reg, "../v5/" + v5.uri.rsplit("/", 1)[1]), lambda rec, v5: v5.sha256),
     "ReportMismatch"),
    ("uri-in-a-subfolder-of-the-version", _points_at(lambda reg, v5: _own_folder(reg, "x/w.pt"),
     lambda rec, v5: rec["sha256"]), "ReportMismatch"),
    ("uri-is-the-version-folder-itself", _points_at(lambda reg, v5: _own_folder(reg, ""), lambda rec, v5: rec["sha256"]),
     "ReportMismatch"),
    ("uri-is-a-prefix-lookalike-folder",
     _points_at(lambda reg, v5: reg.version_uri(MODEL, RUN) + "-x/w.pt", lambda rec, v5: rec["sha256"]),
     "ReportMismatch"),
    ("record-names-another-version", lambda rec, v5, reg: {**rec, "version": "v5"}, "ReportMismatch"),
    ("record-is-a-json-list", lambda rec, v5, reg: [rec], "ReportMismatch"),  # type: ignore[list-item,return-value]
]  # fmt: skip


@pytest.mark.parametrize(("forge", "reason"), [c[1:] for c in RECORD_FORGERIES], ids=[c[0] for c in RECORD_FORGERIES])
def test_the_candidate_is_only_the_runs_own_weights(
    registry: Registry, tmp_path: Path, forge: RecordForge, reason: str
) -> None:
    report, record, v5 = _line(registry, tmp_path)
    forged = forge(record, v5, registry)
    registry.store.put_bytes(join_uri(registry.version_uri(MODEL, RUN), "version.json"), json.dumps(forged).encode())
    sha = forged["sha256"] if isinstance(forged, dict) else record["sha256"]
    assert report.candidate is not None
    report = report.model_copy(update={"candidate": report.candidate.model_copy(update={"sha256": sha})})
    conclusion = conclude(registry, report, SPEC, actor="tests", run_id=RUN)  # no exception: Kopf would retry it
    assert conclusion.reason == reason, conclusion.decision.reasons
    now = registry.incumbent(MODEL)
    assert now is not None
    if reason == "Promoted":
        assert now.version == RUN and now.uri.startswith(registry.version_uri(MODEL, RUN) + "/")
    else:
        assert conclusion.failed and now.version == "v2"  # the pointer never names v5's (or foreign) weights
        assert all(h.version != RUN for h in registry.history(MODEL))


# ---- 2. model-file tricks ---------------------------------------------------------------------------------
HOSTILE_ACTIVATIONS = [
    ("code-in-the-inner-call", 'nn.SiLU(__import__("os").system("echo PWNED")).__class__(1)'),
    ("dunder-chain-after-the-call", "nn.ReLU(1).__class__.__base__.__subclasses__(1)"),
    ("method-of-the-class", "nn.SiLU.__call__()"),
    ("subscript-owner", "nn.modules['SiLU'](1)"),
    ("foreign-owner-named-nn", "foo.nn.SiLU()"),
    ("call-of-a-call", "nn.SiLU()()"),
    ("torch-owner-not-torch", "xtorch.nn.SiLU()"),
    ("lambda-argument", "nn.SiLU(lambda: 1)"),
]


@pytest.mark.parametrize("act", [a for _, a in HOSTILE_ACTIVATIONS], ids=[i for i, _ in HOSTILE_ACTIVATIONS])
def test_an_activation_that_is_not_a_plain_allowed_call_is_refused(act: str) -> None:
    with pytest.raises(ModelFileError, match="activation"):
        check_activation(act, "arch.yaml")
    doc = {"activation": act, "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": [[[0], 1, "Detect", ["nc"]]]}
    with pytest.raises(ModelFileError, match="activation"):
        read_model_yaml(yaml.safe_dump(doc).encode(), "arch.yaml")


@pytest.mark.parametrize("act", ["nn.SiLU()", "torch.nn.LeakyReLU(0.1, inplace=True)", " nn.Hardswish() "])
def test_plain_allowed_activations_still_pass(act: str) -> None:
    check_activation(act, "arch.yaml")


def _alias_bomb(width: int) -> bytes:
    """One layer whose args repeat a list `width`^2 times through YAML aliases (a few KiB of text)."""
    ints = ", ".join("1" for _ in range(width))
    rows = ", ".join("*a" for _ in range(width))
    args = ", ".join("*b" for _ in range(width))
    return (
        f"x: &a [{ints}]\ny: &b [{rows}]\nbackbone:\n  - [-1, 1, Conv, [{args}]]\nhead:\n  - [[0], 1, Detect, [nc]]\n"
    ).encode()


def _shared_refs(width: int) -> dict[str, Any]:
    """The same structure as a pickled .pt's embedded YAML would hold it (the pickle memo shares one list)."""
    inner = [1] * width
    middle = [inner] * width
    return {"backbone": [[-1, 1, "Conv", [middle] * width]], "head": [[[0], 1, "Detect", ["nc"]]]}


BOMBS: list[tuple[str, Callable[[], Any]]] = [
    ("yaml-alias-bomb", lambda: read_model_yaml(_alias_bomb(1500), "arch.yaml")),
    ("pickle-shared-reference-bomb", lambda: check_model_yaml(_shared_refs(3000), "base.pt (its embedded model YAML)")),
]


@pytest.mark.parametrize("run", [b for _, b in BOMBS], ids=[i for i, _ in BOMBS])
def test_repeated_references_in_a_model_yaml_are_bounded(run: Callable[[], Any]) -> None:
    started = time.monotonic()
    with pytest.raises(ModelFileError, match="argument values"):
        run()
    # before: billions of values walked (hours); 20 s leaves room for a loaded CI machine
    assert time.monotonic() - started < 20


def test_every_builtin_model_yaml_is_within_the_bounds() -> None:
    import ultralytics

    root = Path(ultralytics.__file__).parent / "cfg" / "models"
    found = sorted(root.rglob("*.yaml"))
    assert len(found) > 20
    for path in found:
        check_model_yaml(yaml.safe_load(path.read_text()), str(path))


# ---- 3. spec forms that only Python's `$` accepted (a trailing newline) ----------------------------------
PIN = "s3://bucket/k.pt@sha256:" + "a" * 64
TRAILING_NEWLINE_FORMS = [
    ("version-with-newline", "baseWeights", "v1\n"),
    ("builtin-name-as-version-with-newline", "baseWeights", "yolov8n.yaml\n"),
    ("pinned-digest-with-newline", "baseWeights", PIN + "\n"),
    ("architecture-with-newline", "architecture", "yolov8n.yaml\n"),
    ("architecture-pin-with-newline", "architecture", PIN.replace(".pt", ".yaml") + "\n"),
]


@pytest.mark.parametrize(("field", "value"), [c[1:] for c in TRAILING_NEWLINE_FORMS],
                         ids=[c[0] for c in TRAILING_NEWLINE_FORMS])  # fmt: skip
def test_a_trailing_newline_does_not_pass_admission(field: str, value: str) -> None:
    doc = {**SPEC_DOC, "strategy": {field: value}}
    with pytest.raises(ValidationError, match=f"strategy.{field}"):
        RetrainJobSpec.model_validate(doc)
    assert RetrainJobSpec.model_validate({**SPEC_DOC, "strategy": {field: value.rstrip()}})  # the plain form passes


@pytest.mark.parametrize("name", ["yolov8n.yaml\n", "yolov8n.yaml/../x.yaml", "*.yaml", "yolov8?.yaml"])
def test_builtin_lookup_takes_only_plain_names(name: str) -> None:
    with pytest.raises(ModelFileError, match="built-in"):
        builtin_yaml(name, "strategy.architecture")


# ---- 4. report text reaching status and events -------------------------------------------------------------
def _printable(text: str) -> bool:
    return not any(ch in text for ch in UNSAFE)


@pytest.mark.parametrize("char", UNSAFE, ids=[f"U+{ord(c):04X}" for c in UNSAFE])
def test_bounds_short_escapes_unsafe_characters(char: str) -> None:
    out = bounds.short(f"check{char}[2J failed", 50)
    assert _printable(out) and "check" in out and "failed" in out


SETTINGS = OperatorSettings(registry="s3://models/reg", metrics_port=0, kube_url="http://127.0.0.1:9")
NS, NAME, UID = "ns", "run", "12345678-aaaa"
OP_RUN = jobs.run_id(NS, NAME, UID)


def _body(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1},
        "spec": SPEC_DOC,
        "status": status,
    }


def test_hostile_check_text_reaches_events_and_status_escaped(registry: Registry, tmp_path: Path) -> None:
    sim.seed_incumbent(registry, MODEL, "v2", INCUMBENT, tmp_path)
    report = sim.train(registry, MODEL, OP_RUN, BETTER, INCUMBENT, tmp_path)
    hostile = CheckResult(name="x\x1b]0;owned\x07\u202e", passed=False, detail="\x1b[2J\nline\u2028two" * 50)
    report = report.model_copy(update={"checks": [*report.checks, hostile]})
    deps = lifecycle.Deps(settings=SETTINGS, kube=None, registry_for=lambda spec: registry,  # type: ignore[arg-type]
                          adopt=lambda objs: None, now=lambda: "2026-01-01T00:00:00Z")  # fmt: skip
    parsed = lifecycle.parse_spec(_body({}), SETTINGS)
    assert not isinstance(parsed, str)
    outcome = lifecycle.finish(_body({"jobName": jobs.job_name(OP_RUN)}), *parsed, report, deps)
    assert outcome.status["state"] == "Promoted"  # an advisory check: its failure is a reason, not a veto
    texts = [e.message for e in outcome.events] + [c["message"] for c in outcome.status["conditions"]]
    texts += outcome.status["decision"]["reasons"] + [c["name"] + c["detail"] for c in outcome.status["checks"]]
    assert any("owned" in t for t in texts)  # the text is shown ...
    assert all(_printable(t) for t in texts)  # ... but never as terminal escapes or line breaks


class FailedJobKube:
    """The API server's view of one failed Job whose condition (any writer of jobs/status) and pod are hostile."""

    def __init__(self, reason: str, message: str, termination: str) -> None:
        cond = {"type": "Failed", "status": "True", "reason": reason, "message": message}
        owner = {"uid": UID, "controller": True}  # the operator's own Job (kopf.append_owner_reference)
        self.job = {"metadata": {"name": jobs.job_name(OP_RUN), "ownerReferences": [owner]}, "spec": {},
                    "status": {"conditions": [cond]}}  # fmt: skip
        self.pod = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
                    "status": {"containerStatuses": [{"name": "trainer", "state": {"terminated": {
                        "message": termination, "exitCode": 1}}}]}}  # fmt: skip

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        return self.job

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return [self.pod]


JOB_FAILURES = [
    ("reason-with-a-space", "Backoff Limit", "m", "t", "JobFailed"),
    ("reason-with-a-newline", "Deadline\nExceeded", "m", "t", "JobFailed"),
    ("reason-non-ascii-letter", "Échec", "m", "t", "JobFailed"),
    ("reason-too-long", "A" * 2000, "m", "t", "JobFailed"),
    ("reason-ends-with-colon", "Failed:", "m", "t", "JobFailed"),
    ("honest-reason-is-kept", "BackoffLimitExceeded", "m", "t", "BackoffLimitExceeded"),
    ("huge-job-message", "DeadlineExceeded", "x" * 200_000, "t", "DeadlineExceeded"),
    ("termination-message-with-escapes", "BackoffLimitExceeded", "m", "\x1b[2Jowned\r\n" * 400,
     "BackoffLimitExceeded"),
]  # fmt: skip


@pytest.mark.parametrize(("reason", "message", "termination", "expected"), [c[1:] for c in JOB_FAILURES],
                         ids=[c[0] for c in JOB_FAILURES])  # fmt: skip
def test_a_failed_jobs_text_cannot_make_the_status_patch_unacceptable(
    reason: str, message: str, termination: str, expected: str
) -> None:
    deps = lifecycle.Deps(settings=SETTINGS, kube=FailedJobKube(reason, message, termination),
                          registry_for=lambda spec: None, adopt=lambda objs: None,  # type: ignore[arg-type,return-value]
                          now=lambda: "2026-01-01T00:00:00Z")  # fmt: skip
    outcome = lifecycle.poll(_body({"jobName": jobs.job_name(OP_RUN), "state": "Training"}), deps)
    assert outcome.status["state"] == "Failed"
    [failed] = [c for c in outcome.status["conditions"] if c["type"] == "Failed"]
    # What the CRD (conditions[].reason pattern, message maxLength 32768) and etcd accept: a status patch the
    # API server refused would leave the run Training, polled and refused again forever.
    assert failed["reason"] == expected and CONDITION_REASON.fullmatch(failed["reason"])
    assert len(failed["message"]) <= bounds.MAX_CONDITION_MESSAGE and _printable(failed["message"])
    assert all(CONDITION_REASON.fullmatch(e.reason) and _printable(e.message) for e in outcome.events)
    assert bounds.size(outcome.status) < bounds.MAX_STATUS_BYTES


# ---- 5. image policy: `entry:<port>/...` is another registry host, not a tag -----------------------------------
IMAGE_CASES = [
    ("host-entry-other-port", "registry.corp", "registry.corp:8443/evil/trainer:1", False),
    ("bare-name-entry-becomes-a-host", "trainer", "trainer:5000/evil", False),
    ("tag-entry-becomes-a-host", "trainer:", "trainer:5000/evil:1", False),
    ("localhost-entry-other-port", "localhost", "localhost:5000/evil", False),
    ("repository-entry-other-port", "ghcr.io", "ghcr.io:1234/kretrain/trainer", False),
    ("tag-of-a-bare-name-is-allowed", "trainer", "trainer:v2", True),
    ("tag-entry-allows-a-tag", "trainer:", "trainer:v2", True),
    ("repository-entry-allows-a-tag", "ghcr.io/kretrain/trainer", "ghcr.io/kretrain/trainer:0.2.0", True),
    ("host-port-prefix-entry", "registry.corp:8443/", "registry.corp:8443/team/trainer:1", True),
]


@pytest.mark.parametrize(("entry", "image", "allowed"), [c[1:] for c in IMAGE_CASES], ids=[c[0] for c in IMAGE_CASES])
def test_an_image_entry_does_not_allow_the_same_name_as_a_registry_host(entry: str, image: str, allowed: bool) -> None:
    settings = OperatorSettings(registry="s3://models/reg", metrics_port=0, allowed_images=[entry])
    spec = RetrainJobSpec.model_validate({**SPEC_DOC, "resources": {"image": image}})
    found = [v for v in policy.violations(spec, settings) if v.field == "spec.resources.image"]
    assert (not found) == allowed, found


# ---- 6. reports of runs finishing together are concluded one at a time ---------------------------------------
STAGE_KEY = bytes(range(32))
"""The stage key of every run here: in its ConfigMap (SucceededJobs) and signing its report (sim.train)."""


class SucceededJobs:
    """Every Job the operator asks for has succeeded; each run's ConfigMap is the RetrainJob's (`uids`: the owner of
    each Job name, the run of `_body` by default) and holds STAGE_KEY."""

    def __init__(self, uids: dict[str, str] | None = None) -> None:
        self.uids = uids or {jobs.job_name(OP_RUN): UID}

    def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        conds = [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}]
        owner = {"uid": self.uids[name], "controller": True}
        return {"metadata": {"name": name, "ownerReferences": [owner]}, "spec": {}, "status": {"conditions": conds}}

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        owner = {
            "apiVersion": "kretrain.dev/v1alpha1",
            "kind": "RetrainJob",
            "uid": self.uids[name],
            "controller": True,
        }
        return {"metadata": {"name": name, "ownerReferences": [owner]}, "data": {STAGE_KEY_FILE: STAGE_KEY.hex()}}


class SlowReports:
    """The real registry, but reading a report takes a while (as a 16 MiB one does) and each step is logged."""

    def __init__(self, registry: Registry, log: list[tuple[str, str]]) -> None:
        self.registry, self.log = registry, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)

    def read_run_report(self, model: str, run_id: str, **kwargs: Any) -> RunReport | None:
        self.log.append(("read", model))
        time.sleep(0.3)
        return self.registry.read_run_report(model, run_id, **kwargs)

    def version_info(self, model: str, version: str) -> VersionRecord:
        self.log.append(("concluded", model))
        return self.registry.version_info(model, version)


def test_two_finished_runs_are_not_parsed_at_the_same_time(registry: Registry, tmp_path: Path) -> None:
    import threading

    log: list[tuple[str, str]] = []
    slow = SlowReports(registry, log)
    runs = {model: (uid, jobs.run_id(NS, model, uid)) for model, uid in (("m1", "aaaaaaaa-1"), ("m2", "bbbbbbbb-2"))}
    kube = SucceededJobs({jobs.job_name(run): uid for uid, run in runs.values()})
    deps = lifecycle.Deps(settings=SETTINGS, kube=kube, registry_for=lambda spec: slow,  # type: ignore[arg-type]
                          adopt=lambda objs: None, now=lambda: "2026-01-01T00:00:00Z")  # fmt: skip
    bodies = []
    for model, (uid, run) in runs.items():
        sim.train(registry, model, run, BETTER, None, tmp_path, key=STAGE_KEY)
        spec = {**SPEC_DOC, "model": model}
        bodies.append({"metadata": {"name": model, "namespace": NS, "uid": uid, "generation": 1}, "spec": spec,
                       "status": {"jobName": jobs.job_name(run), "runId": run, "state": "Training"}})  # fmt: skip
    outcomes: list[lifecycle.Outcome] = []
    threads = [threading.Thread(target=lambda b=b: outcomes.append(lifecycle.poll(b, deps))) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.state or "" for o in outcomes) == ["Promoted", "Promoted"]
    first, second = log[0][1], log[2][1]
    # Each report is concluded before the next one is read: at most one parsed report in memory.
    assert log == [("read", first), ("concluded", first), ("read", second), ("concluded", second)]


# ---- 7. the same through the real operator and the API emulator (which validates the status against the CRD) ---
E2E_JOB_FAILURES = [
    ("job-reason-with-a-space", "Backoff Limit", "\x1b[2Jowned\r\nfake: line", "JobFailed"),
    ("job-reason-non-ascii", "Échec", "ok", "JobFailed"),
]


@pytest.fixture(scope="module")
def redteam_cluster(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from emulator.scenario import running_cluster

    with running_cluster(s3, tmp_path_factory.mktemp("weights"), ["redteam"]) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def redteam_operator(redteam_cluster: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from emulator.scenario import operator_for

    op = operator_for(redteam_cluster, s3, tmp_path_factory.mktemp("op") / "operator.log", ["redteam"])
    op.start().wait_ready()
    yield op
    op.stop()
    assert "Traceback" not in op.log.read_text(), op.tail(200)


@pytest.mark.parametrize(("reason", "termination", "expected"), [c[1:] for c in E2E_JOB_FAILURES],
                         ids=[c[0] for c in E2E_JOB_FAILURES])  # fmt: skip
def test_a_hostile_job_failure_settles_through_the_real_operator(
    redteam_cluster: Any, redteam_operator: Any, reason: str, termination: str, expected: str
) -> None:
    from emulator.scenario import conditions, settled, started

    name = f"run-{uuid.uuid4().hex[:6]}"
    redteam_cluster.create_rtj("redteam", name, f"m-{name}")
    job = started(redteam_cluster, redteam_operator, "redteam", name)["jobName"]
    sim.fail_job(redteam_cluster.client, "redteam", job, reason, "Job has reached the specified backoff limit",
                 termination)  # fmt: skip
    # Before: the operator's status patch carried the Job's reason, the API server refused it (422) on every poll
    # and the run stayed Training for ever.
    status = settled(redteam_cluster, redteam_operator, "redteam", name)
    failed = conditions(status)["Failed"]
    assert status["state"] == "Failed" and failed["reason"] == expected
    assert _printable(failed["message"])
    assert termination == "ok" or "owned" in failed["message"]


# ---- 8. a forged status.decision does not stop a finished run from being concluded ---------------------------
FORGED_DECISIONS = [
    ("not-promoted", {"promoted": False, "passed": False, "mode": "auto", "summary": "forged", "reasons": ["x"]}),
    ("promoted", {"promoted": True, "passed": True, "mode": "auto", "summary": "forged", "reasons": []}),
    ("any-truthy-value", {"x": 1}),
]


@pytest.mark.parametrize("decision", [d for _, d in FORGED_DECISIONS], ids=[i for i, _ in FORGED_DECISIONS])
def test_a_forged_status_decision_does_not_stall_the_run(
    registry: Registry, tmp_path: Path, decision: dict[str, Any]
) -> None:
    sim.train(registry, MODEL, OP_RUN, BETTER, None, tmp_path, key=STAGE_KEY)
    deps = lifecycle.Deps(settings=SETTINGS, kube=SucceededJobs(), registry_for=lambda spec: registry,  # type: ignore[arg-type]
                          adopt=lambda objs: None, now=lambda: "2026-01-01T00:00:00Z")  # fmt: skip
    status = {"jobName": jobs.job_name(OP_RUN), "runId": OP_RUN, "state": "Training", "decision": decision}
    outcome = lifecycle.poll(_body(status), deps)
    # Before: finish() returned nothing for a status with any decision, so the run stayed Training for ever
    # (and its report was downloaded and parsed again on every poll).
    assert outcome.state == "Promoted" and outcome.status["decision"]["summary"] != "forged"
    now = registry.incumbent(MODEL)
    assert now is not None and now.version == OP_RUN


# ---- 9. endpoint and registry forms that must not slip through the policy (held; kept as regressions) ----------
OWN_ENDPOINT = "http://s3.internal:8333"
ENDPOINT_FORMS = [
    ("userinfo-points-elsewhere", "http://s3.internal:8333@evil.example", False),
    ("ipv4-mapped-ipv6", "http://[::ffff:127.0.0.1]:8333", False),
    ("trailing-dot-host", "http://s3.internal.:8333", False),
    ("other-port", "http://s3.internal:8334", False),
    ("dot-dot-path", "http://s3.internal:8333/..", False),
    ("percent-escaped-host", "http://s3%2einternal:8333", False),
    ("backslash", "http://s3.internal:8333\\@evil", False),
    ("https-instead-of-http", "https://s3.internal:8333", False),
    ("uppercase-host-is-the-same-endpoint", "http://S3.INTERNAL:8333", True),
    ("trailing-slash-is-the-same-endpoint", "http://s3.internal:8333/", True),
]


@pytest.mark.parametrize(("endpoint", "allowed"), [c[1:] for c in ENDPOINT_FORMS], ids=[c[0] for c in ENDPOINT_FORMS])
def test_endpoint_forms_against_the_policy(endpoint: str, allowed: bool) -> None:
    settings = OperatorSettings(registry="s3://models/reg", metrics_port=0, s3_endpoint=OWN_ENDPOINT)
    assert (policy.endpoint_violation(endpoint, settings) is None) == allowed


REGISTRY_FORMS = [
    ("dot-dot-out-of-the-prefix", "s3://models/reg/../other", False),
    ("dot-segment", "s3://models/reg/./x", False),
    ("double-slash", "s3://models/reg//x", False),
    ("prefix-lookalike", "s3://models/reg-other", False),
    ("other-bucket", "s3://models2/reg", False),
    ("under-the-prefix", "s3://models/reg/team-a", True),
]


@pytest.mark.parametrize(("uri", "allowed"), [c[1:] for c in REGISTRY_FORMS], ids=[c[0] for c in REGISTRY_FORMS])
def test_registry_forms_against_the_policy(uri: str, allowed: bool) -> None:
    assert policy.uri_under(uri, "s3://models/reg") == allowed


# ---- 10. a data contributor cannot hand Ultralytics a label file the validator never read ----------------------
NESTED_IMAGES = [
    ("second-images-folder", "images/x/images/y.png", "images/x/labels/y.txt"),
    ("images-folder-deeper", "images/a/b/images/c/y.png", "images/a/b/labels/c/y.txt"),
]


@pytest.mark.parametrize(("key", "shadow"), [c[1:] for c in NESTED_IMAGES], ids=[c[0] for c in NESTED_IMAGES])
def test_an_image_whose_label_ultralytics_reads_elsewhere_is_excluded(key: str, shadow: str, tmp_path: Path) -> None:
    from PIL import Image
    from ultralytics.data.utils import img2label_paths

    from kretrain.trainer.data.prepare import prepare_pulled
    from kretrain.trainer.data.pull import scan_local
    from kretrain.trainer.data.validation import label_key_for

    root = tmp_path / "ds"
    (root / "e1" / "images").mkdir(parents=True)
    (root / "classes.yaml").write_text("names: [thing]\n")
    for i in range(8):
        Image.new("RGB", (32, 32), (i * 30, 0, 0)).save(root / "e1" / "images" / f"{i}.png")
        (root / "e1" / "labels").mkdir(exist_ok=True)
        (root / "e1" / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "e1" / key).parent.mkdir(parents=True)
    Image.new("RGB", (32, 32), (0, 99, 0)).save(root / "e1" / key)
    (root / "e1" / label_key_for(key)).parent.mkdir(parents=True)
    (root / "e1" / label_key_for(key)).write_text("0 0.5 0.5 0.2 0.2\n")  # what the validator checks
    (root / "e1" / shadow).parent.mkdir(parents=True)
    (root / "e1" / shadow).write_text("0 0.5 0.5 0.2 0.2\n" * 20_000)  # what Ultralytics would read: never checked
    spec = RetrainJobSpec.model_validate(
        {"model": "shapes", "dataset": {"uri": "s3://datasets/shapes", "eras": ["e1"], "maxBadFraction": 0.5}}
    )
    prepared = prepare_pulled(spec, scan_local(root, ["e1"]), tmp_path / "work", workers=1, chart=False)
    report = json.loads(prepared.report_path.read_text())
    assert [(f["code"], f["excluded"]) for f in report["findings"] if key in f["key"]] == [("unsafe_key", True)]
    files = [prepared.train_list, prepared.val_list, *prepared.test_lists.values()]
    lines = [line for f in files for line in Path(f).read_text().strip().splitlines()]
    assert len(lines) == 8 and not any(line.endswith(key) for line in lines)
    # Every listed image's label, by Ultralytics' own rule, is the file the validator read.
    for image, label in zip(lines, img2label_paths(lines), strict=True):
        era_key = image.split("/e1/", 1)[1]
        assert label.endswith("/e1/" + label_key_for(era_key))


# ---- 11. a data contributor's <labels folder>.cache is never unpickled by Ultralytics ---------------------------
class _Payload:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "code ran"))


CACHE_KEYS = [
    ("era-labels-cache", "", "labels.cache"),
    ("subfolder-labels-cache", "sub/", "labels/sub.cache"),
]


@pytest.mark.parametrize(("sub", "cache_key"), [c[1:] for c in CACHE_KEYS], ids=[c[0] for c in CACHE_KEYS])
def test_a_labels_cache_in_the_dataset_runs_no_code(sub: str, cache_key: str, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image
    from ultralytics.data.dataset import YOLODataset

    from kretrain.trainer.data.prepare import prepare_pulled
    from kretrain.trainer.data.pull import scan_local

    root = tmp_path / "ds"
    (root / "e1" / "images" / sub).mkdir(parents=True)
    (root / "e1" / "labels" / sub).mkdir(parents=True)
    (root / "classes.yaml").write_text("names: [thing]\n")
    for i in range(20):
        Image.new("RGB", (32, 32), (i * 12, 0, 0)).save(root / "e1" / "images" / sub / f"{i}.png")
        (root / "e1" / "labels" / sub / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    marker = tmp_path / "pwned"
    with (root / "e1" / cache_key).open("wb") as f:  # where Ultralytics looks: <labels folder>.cache
        np.save(f, np.array(_Payload(marker), dtype=object), allow_pickle=True)
    spec = RetrainJobSpec.model_validate(
        {"model": "shapes", "dataset": {"uri": "s3://datasets/shapes", "eras": ["e1"], "maxBadFraction": 0.5}}
    )
    prepared = prepare_pulled(spec, scan_local(root, ["e1"]), tmp_path / "work", workers=1, chart=False)
    report = json.loads(prepared.report_path.read_text())
    hits = [(f["code"], f["excluded"]) for f in report["findings"] if f["key"] == ascii(cache_key)]
    assert hits == [("unsafe_key", True)], report["findings"]
    assert not (root / "e1" / cache_key).exists()
    YOLODataset(img_path=str(prepared.train_list), data={"names": {0: "thing"}, "nc": 1, "channels": 3}, imgsz=32)
    assert not marker.exists()  # before: Ultralytics' np.load(allow_pickle=True) ran the payload
