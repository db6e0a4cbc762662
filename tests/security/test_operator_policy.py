"""Operator policy (confused deputy, SSRF): a spec outside the admin's policy never becomes a Job or an S3 call."""

from __future__ import annotations

import time
from typing import Any

import pydantic
import pytest

from kretrain.api import RetrainJobSpec
from kretrain.operator import jobs, lifecycle, policy
from kretrain.operator.settings import OperatorSettings

TRAINER = "ghcr.io/kretrain/trainer:0.1.0"
OWN_ENDPOINT = "http://minio.storage.svc:9000"
DIGEST = "sha256:" + "ab" * 32
# The chart's default policy: nothing besides the operator's own image, Secret and endpoint; GPU taints only.
DEFAULT = OperatorSettings(
    registry="s3://models/registry", s3_endpoint=OWN_ENDPOINT, trainer_image=TRAINER, metrics_port=0
)


def spec(resources: dict[str, Any] | None = None, storage: dict[str, Any] | None = None) -> RetrainJobSpec:
    raw: dict[str, Any] = {"model": "traffic", "dataset": {"uri": "s3://data/traffic", "eras": ["q1", "q2"]}}
    if resources is not None:
        raw["resources"] = resources
    if storage is not None:
        raw["storage"] = storage
    return RetrainJobSpec.model_validate(raw)


def settings(**over: Any) -> OperatorSettings:
    return DEFAULT.model_copy(update=over)


# (id, resources, storage, settings, field named in the error, rule fragment)
HOSTILE: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None, OperatorSettings, str, str]] = [
    # ---- images: the default policy allows exactly the operator's trainer image
    ("image-other-registry", {"image": "evil.io/x:1"}, None, DEFAULT, "spec.resources.image", "allowed image prefix"),
    ("image-tag-suffix", {"image": f"{TRAINER}-evil"}, None, DEFAULT, "spec.resources.image", "allowed image prefix"),
    (
        "image-repo-suffix",
        {"image": "ghcr.io/kretrain/trainer-evil:0.1.0"},
        None,
        DEFAULT,
        "spec.resources.image",
        "allowed image prefix",
    ),
    (
        "image-other-tag",
        {"image": "ghcr.io/kretrain/trainer:latest"},
        None,
        DEFAULT,
        "spec.resources.image",
        "allowed image prefix",
    ),
    (
        "image-digest-of-allowed-repo",
        {"image": f"ghcr.io/kretrain/trainer@{DIGEST}"},
        None,
        DEFAULT,
        "spec.resources.image",
        "allowed image prefix",
    ),
    (
        "image-allowed-tag-plus-digest",  # the runtime pulls the digest and ignores the tag
        {"image": f"{TRAINER}@{DIGEST}"},
        None,
        DEFAULT,
        "spec.resources.image",
        "allowed image prefix",
    ),
    (
        "image-lookalike-registry-host",
        {"image": "ghcr.io.evil.io/kretrain/trainer:0.1.0"},
        None,
        DEFAULT,
        "spec.resources.image",
        "allowed image prefix",
    ),
    (
        "image-path-traversal",
        {"image": "ghcr.io/kretrain/trainer/../evil:1"},
        None,
        settings(allowed_images=["ghcr.io/kretrain/trainer"]),
        "spec.resources.image",
        "well-formed image reference",
    ),
    (
        "image-trailing-newline",
        {"image": f"{TRAINER}\n"},
        None,
        DEFAULT,
        "spec.resources.image",
        "well-formed image reference",
    ),
    (
        "image-prefix-without-boundary",
        {"image": "ghcr.io/kretrain-evil/x:1"},
        None,
        settings(allowed_images=["ghcr.io/kretrain"]),
        "spec.resources.image",
        "allowed image prefix",
    ),
    (
        "image-repo-entry-other-repo",
        {"image": "ghcr.io/kretrain/trainer-evil:1"},
        None,
        settings(allowed_images=["ghcr.io/kretrain/trainer"]),
        "spec.resources.image",
        "allowed image prefix",
    ),
    (
        "image-digest-only-entry-tag",
        {"image": "ghcr.io/kretrain/trainer:0.2.0"},
        None,
        settings(allowed_images=["ghcr.io/kretrain/trainer@"]),
        "spec.resources.image",
        "allowed image prefix",
    ),
    # ---- credentials Secrets
    (
        "secret-of-another-app",
        None,
        {"credentialsSecret": "payments-db"},
        DEFAULT,
        "spec.storage.credentialsSecret",
        "not an allowed credentials Secret",
    ),
    (
        "secret-default-name-prefix",
        None,
        {"credentialsSecret": "kretrain-s3-admin"},
        DEFAULT,
        "spec.storage.credentialsSecret",
        "not an allowed credentials Secret",
    ),
    # ---- S3 endpoints: the operator signs with its own credentials only for its own endpoint
    (
        "endpoint-other-host",
        None,
        {"endpoint": "http://evil.example:9000"},
        DEFAULT,
        "spec.storage.endpoint",
        "not an allowed S3 endpoint",
    ),
    (
        "endpoint-same-host-other-port",
        None,
        {"endpoint": "http://minio.storage.svc:9001"},
        DEFAULT,
        "spec.storage.endpoint",
        "not an allowed S3 endpoint",
    ),
    (
        "endpoint-same-host-default-port",
        None,
        {"endpoint": "http://minio.storage.svc"},
        DEFAULT,
        "spec.storage.endpoint",
        "not an allowed S3 endpoint",
    ),
    (
        "endpoint-scheme-change",
        None,
        {"endpoint": "https://minio.storage.svc:9000"},
        DEFAULT,
        "spec.storage.endpoint",
        "not an allowed S3 endpoint",
    ),
    (
        "endpoint-lookalike-suffix",
        None,
        {"endpoint": "http://minio.storage.svc.evil.example:9000"},
        DEFAULT,
        "spec.storage.endpoint",
        "not an allowed S3 endpoint",
    ),
    (
        "endpoint-imds",
        None,
        {"endpoint": "http://169.254.169.254/latest/meta-data"},
        DEFAULT,
        "spec.storage.endpoint",
        "not an allowed S3 endpoint",
    ),
    (
        "endpoint-imds-decimal",
        None,
        {"endpoint": "http://2852039166"},
        DEFAULT,
        "spec.storage.endpoint",
        "not an allowed S3 endpoint",
    ),
    (
        "endpoint-loopback",
        None,
        {"endpoint": "http://127.0.0.1:8080"},
        DEFAULT,
        "spec.storage.endpoint",
        "not an allowed S3 endpoint",
    ),
    (
        "endpoint-when-operator-uses-aws",
        None,
        {"endpoint": "https://s3.amazonaws.com.evil.example"},
        settings(s3_endpoint=None),
        "spec.storage.endpoint",
        "allowed: none",
    ),
    # ---- registries: the operator reads reports and moves pointers there with its own credentials
    (
        "registry-another-teams-bucket",
        None,
        {"registry": "s3://payments-models/registry"},
        DEFAULT,
        "spec.storage.registry",
        "not under an allowed registry",
    ),
    (
        "registry-prefix-without-boundary",
        None,
        {"registry": "s3://models/registry-evil"},
        DEFAULT,
        "spec.storage.registry",
        "not under an allowed registry",
    ),
    (
        "registry-parent-of-allowed",
        None,
        {"registry": "s3://models"},
        DEFAULT,
        "spec.storage.registry",
        "not under an allowed registry",
    ),
    (
        "registry-dotdot-out-of-allowed",
        None,
        {"registry": "s3://mlx/team-a/../team-b"},
        settings(allowed_registries=["s3://mlx/team-a"]),
        "spec.storage.registry",
        "not under an allowed registry",
    ),
    (
        "registry-when-operator-has-none",
        None,
        {"registry": "s3://models/registry"},
        settings(registry=None),
        "spec.storage.registry",
        "allowed: none",
    ),
    # ---- priority classes: none by default
    (
        "priority-system-cluster-critical",
        {"priorityClassName": "system-cluster-critical"},
        None,
        DEFAULT,
        "spec.resources.priorityClassName",
        "not an allowed priority class",
    ),
    (
        "priority-system-node-critical",
        {"priorityClassName": "system-node-critical"},
        None,
        settings(allowed_priority_classes=["ml-batch"]),
        "spec.resources.priorityClassName",
        "allowed: ml-batch, unset",
    ),
    # ---- tolerations: only the GPU taint by default
    (
        "toleration-control-plane",
        {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]},
        None,
        DEFAULT,
        "spec.resources.tolerations[0].key",
        "not an allowed toleration key",
    ),
    (
        "toleration-master",
        {"tolerations": [{"key": "node-role.kubernetes.io/master", "effect": "NoSchedule", "operator": "Exists"}]},
        None,
        DEFAULT,
        "spec.resources.tolerations[0].key",
        "not an allowed toleration key",
    ),
    (
        "toleration-everything",
        {"tolerations": [{"operator": "Exists"}]},
        None,
        DEFAULT,
        "spec.resources.tolerations[0].key",
        "tolerates every taint",
    ),
    (
        "toleration-second-of-two",
        {
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists"},
                {"key": "dedicated", "value": "payments", "effect": "NoSchedule"},
            ]
        },
        None,
        DEFAULT,
        "spec.resources.tolerations[1].key",
        "not an allowed toleration key",
    ),
]


@pytest.mark.parametrize(
    ("resources", "storage", "conf", "field", "rule"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_spec_is_refused_naming_field_and_rule(
    resources: dict[str, Any] | None, storage: dict[str, Any] | None, conf: OperatorSettings, field: str, rule: str
) -> None:
    raw = spec(resources, storage)
    found = policy.violations(jobs.fill_defaults(raw, conf), conf)
    assert [v.field for v in found] == [field]
    assert rule in str(found[0]) and str(found[0]).startswith(f"{field}: ")
    with pytest.raises(jobs.SpecError) as exc:
        jobs.resolve_spec(raw, conf)
    assert str(exc.value).startswith("outside the operator policy: ") and field in str(exc.value)
    # The lifecycle turns it into the permanent InvalidSpec failure, never a Job.
    parsed = lifecycle.parse_spec({"spec": raw.dump()}, conf)
    assert isinstance(parsed, str) and field in parsed and rule in parsed


# URL tricks where the host a naive check sees differs from the host the HTTP client connects to. The CRD
# pattern of spec.storage.endpoint refuses them at admission; the policy refuses them too (for a spec that
# never went through the API server's schema, and for the operator's own settings).
URL_TRICKS = {
    "endpoint-userinfo-ok-at-evil": "http://minio.storage.svc:9000@evil.example",
    "endpoint-userinfo-host-at-evil": "http://minio.storage.svc@evil.example:9000",
    "endpoint-fragment-trick": "http://evil.example#@minio.storage.svc:9000",
    "endpoint-backslash-trick": "http://evil.example\\@minio.storage.svc:9000",
    "endpoint-percent-encoded-host": "http://evil%2eexample:9000",
    "endpoint-query-trick": "http://evil.example?@minio.storage.svc:9000",
}


@pytest.mark.parametrize("endpoint", list(URL_TRICKS.values()), ids=list(URL_TRICKS))
def test_url_tricks_are_refused_at_admission_and_by_the_policy(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from kretrain.operator import handlers

    with pytest.raises(pydantic.ValidationError) as exc:
        spec(storage={"endpoint": endpoint})
    assert [e["loc"] for e in exc.value.errors()] == [("storage", "endpoint")]
    assert policy.endpoint_violation(endpoint, DEFAULT) == (
        "is not a plain http(s)://host[:port][/path] URL (no user info, query or fragment)"
    )
    monkeypatch.setattr(handlers, "_settings", DEFAULT)
    with pytest.raises(policy.PolicyError, match=r"spec\.storage\.endpoint"):
        handlers._registry(endpoint, "us-east-1", "s3://models/registry")


# (id, resources, storage, settings): specs the policy lets through, and the Job then carries exactly them.
ALLOWED: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None, OperatorSettings]] = [
    ("defaults-only", None, None, DEFAULT),
    ("own-image-spelled-out", {"image": TRAINER}, None, DEFAULT),
    ("own-secret-spelled-out", None, {"credentialsSecret": "kretrain-s3"}, DEFAULT),
    ("own-endpoint-normalised", None, {"endpoint": "http://MINIO.Storage.svc:9000/"}, DEFAULT),
    ("gpu-toleration", {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}, None, DEFAULT),
    ("node-selector-is-not-bounded", {"nodeSelector": {"pool": "gpu-a100"}}, None, DEFAULT),
    (
        "image-under-path-prefix",
        {"image": "ghcr.io/kretrain/trainer:0.2.0"},
        None,
        settings(allowed_images=["ghcr.io/kretrain/"]),
    ),
    (
        "image-repo-entry-any-tag",
        {"image": "ghcr.io/kretrain/trainer:0.2.0"},
        None,
        settings(allowed_images=["ghcr.io/kretrain/trainer"]),
    ),
    (
        "image-repo-entry-digest",
        {"image": f"ghcr.io/kretrain/trainer@{DIGEST}"},
        None,
        settings(allowed_images=["ghcr.io/kretrain/trainer"]),
    ),
    (
        "image-digest-only-entry",
        {"image": f"ghcr.io/kretrain/trainer@{DIGEST}"},
        None,
        settings(allowed_images=["ghcr.io/kretrain/trainer@"]),
    ),
    (
        "image-exact-extra",
        {"image": "registry.local:5000/ml/trainer:cuda"},
        None,
        settings(allowed_images=["registry.local:5000/ml/trainer:cuda"]),
    ),
    ("secret-in-list", None, {"credentialsSecret": "team-a-s3"}, settings(allowed_credentials_secrets=["team-a-s3"])),
    (
        "endpoint-in-list",
        None,
        {"endpoint": "https://s3.eu-central-1.amazonaws.com"},
        settings(allowed_s3_endpoints=["https://s3.eu-central-1.amazonaws.com:443"]),
    ),
    ("registry-default-named", None, {"registry": "s3://models/registry"}, DEFAULT),
    ("registry-under-default", None, {"registry": "s3://models/registry/team-a"}, DEFAULT),
    (
        "registry-in-list",
        None,
        {"registry": "s3://mlx/team-a/registry"},
        settings(allowed_registries=["s3://mlx/team-a/"]),
    ),
    ("priority-in-list", {"priorityClassName": "ml-batch"}, None, settings(allowed_priority_classes=["ml-batch"])),
    (
        "toleration-in-list",
        {"tolerations": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]},
        None,
        settings(allowed_toleration_keys=["dedicated"]),
    ),
]


@pytest.mark.parametrize(("resources", "storage", "conf"), [a[1:] for a in ALLOWED], ids=[a[0] for a in ALLOWED])
def test_allowed_spec_resolves_and_reaches_the_job(
    resources: dict[str, Any] | None, storage: dict[str, Any] | None, conf: OperatorSettings
) -> None:
    raw = spec(resources, storage)
    resolved = jobs.resolve_spec(raw, conf)
    assert policy.violations(resolved, conf) == []
    job = jobs.build_job(
        name="n", namespace="ns", run="n", spec=resolved, incumbent_version=None, object_labels={}, settings=conf
    )
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == (resources or {}).get("image", conf.trainer_image)
    env = {e["name"]: e for e in container["env"]}
    secret = (storage or {}).get("credentialsSecret", conf.credentials_secret)
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == secret
    endpoint = (storage or {}).get("endpoint", conf.s3_endpoint)
    assert env["AWS_ENDPOINT_URL"]["value"] == endpoint
    assert pod.get("priorityClassName") == (resources or {}).get("priorityClassName")


def test_every_violation_is_reported_at_once() -> None:
    hostile = spec(
        {"image": "evil.io/x:1", "priorityClassName": "system-node-critical", "tolerations": [{"operator": "Exists"}]},
        {"credentialsSecret": "payments-db", "endpoint": "http://169.254.169.254"},
    )
    with pytest.raises(jobs.SpecError) as exc:
        jobs.resolve_spec(hostile, DEFAULT)
    message = str(exc.value)
    for field in (
        "spec.resources.image",
        "spec.storage.credentialsSecret",
        "spec.storage.endpoint",
        "spec.resources.priorityClassName",
        "spec.resources.tolerations[0].key",
    ):
        assert f"{field}: " in message
    assert message.count("; ") == 4
    assert (
        'spec.resources.image: "evil.io/x:1" is not under an allowed image prefix (allowed: ghcr.io/kretrain/trainer:0.1.0)'
        in message
    )


def test_operator_registry_refuses_an_endpoint_outside_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """handlers._registry (the only place the operator builds a store with its own credentials) checks too."""
    from kretrain.operator import handlers

    monkeypatch.setattr(handlers, "_settings", DEFAULT)
    handlers._registry.cache_clear()
    for endpoint in (
        "http://169.254.169.254",
        "http://minio.storage.svc:9000@evil.example",
        "http://evil.example:9000",
    ):
        with pytest.raises(policy.PolicyError, match=r"spec\.storage\.endpoint"):
            handlers._registry(endpoint, "us-east-1", "s3://models/registry")
    registry = handlers._registry(OWN_ENDPOINT + "/", "us-east-1", "s3://models/registry")
    assert registry is not None
    handlers._registry.cache_clear()


def test_policy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRETRAIN_ALLOWED_IMAGES", "ghcr.io/kretrain/, registry.local:5000/ml/trainer")
    monkeypatch.setenv("KRETRAIN_ALLOWED_CREDENTIALS_SECRETS", "team-a-s3,team-b-s3")
    monkeypatch.setenv("KRETRAIN_ALLOWED_S3_ENDPOINTS", "https://s3.eu-central-1.amazonaws.com")
    monkeypatch.setenv("KRETRAIN_ALLOWED_PRIORITY_CLASSES", "ml-batch")
    monkeypatch.setenv("KRETRAIN_ALLOWED_TOLERATION_KEYS", "")
    conf = OperatorSettings()
    assert conf.allowed_images == ["ghcr.io/kretrain/", "registry.local:5000/ml/trainer"]
    assert conf.allowed_credentials_secrets == ["team-a-s3", "team-b-s3"]
    assert conf.allowed_s3_endpoints == ["https://s3.eu-central-1.amazonaws.com"]
    assert conf.allowed_priority_classes == ["ml-batch"]
    assert conf.allowed_toleration_keys == []
    for name in ("KRETRAIN_ALLOWED_IMAGES", "KRETRAIN_ALLOWED_TOLERATION_KEYS"):
        monkeypatch.delenv(name)
    defaults = OperatorSettings()
    assert defaults.allowed_images == [] and defaults.allowed_toleration_keys == ["nvidia.com/gpu"]
    assert policy.allowed_images(defaults) == [defaults.trainer_image]


@pytest.mark.parametrize(
    "endpoint",
    ["http://ok@evil.example", "ftp://minio:21", "minio.storage.svc:9000", "http://evil.example/?x=1", "http://[::1"],
)
def test_a_malformed_policy_endpoint_fails_at_start(endpoint: str) -> None:
    with pytest.raises(ValueError, match="allowed_s3_endpoints"):
        OperatorSettings(allowed_s3_endpoints=[endpoint])


def test_image_check_is_linear_on_long_hostile_input() -> None:
    started = time.perf_counter()
    for image in ("a" + "-a" * 250 + "!", "a." * 250 + "/", "a/" * 255 + ":"):
        assert not policy.image_allowed(image, "ghcr.io/kretrain/")
    assert time.perf_counter() - started < 0.5


class _JobsKube:
    """One namespace's Jobs, as the API server lists them; records every suspend patch."""

    def __init__(self, jobs_: list[dict[str, Any]]) -> None:
        self.jobs, self.patches = jobs_, []  # type: ignore[var-annotated]

    def find_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return self.jobs

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((namespace, name, patch))
        return {}


@pytest.mark.parametrize(
    ("job_status", "suspended"),
    [({}, True), ({"conditions": [{"type": "Complete", "status": "True"}]}, False)],
    ids=["running-job-suspended", "finished-job-left-alone"],
)
def test_a_run_outside_a_tightened_policy_fails_and_its_job_stops(job_status: dict[str, Any], suspended: bool) -> None:
    """The admin removed an image from the policy while a run used it: on resume the run fails, its Job stops."""
    ns, name, uid = "ns", "rtj", "0123abcd-0000"
    own_job = jobs.job_name(jobs.run_id(ns, name, uid))
    other = {"metadata": {"name": "someone-elses-job"}, "spec": {}, "status": {}}
    ours = [{"uid": uid, "controller": True}]  # the operator's own Job (kopf.append_owner_reference)
    kube = _JobsKube(
        [{"metadata": {"name": own_job, "ownerReferences": ours}, "spec": {}, "status": job_status}, other]
    )
    deps = lifecycle.Deps(settings=DEFAULT, kube=kube, registry_for=lambda s: None, adopt=lambda o: None)  # type: ignore[arg-type,return-value]
    body = {
        "metadata": {"name": name, "namespace": ns, "uid": uid, "generation": 1},
        "spec": spec({"image": "evil.io/x:1"}).dump(),
        "status": {"state": "Training", "jobName": own_job, "runId": jobs.run_id(ns, name, uid)},
    }
    outcome = lifecycle.start(body, deps)
    assert outcome.status["state"] == "Failed" and outcome.permanent_error is not None
    assert "spec.resources.image" in outcome.permanent_error
    assert kube.patches == ([(ns, own_job, {"spec": {"suspend": True}})] if suspended else [])
    assert (f"Job {own_job} suspended" in outcome.permanent_error) is suspended


@pytest.mark.parametrize(
    ("uri", "allowed", "refused"),
    [
        ("s3://payments-data/eras", ["s3://ml-data/team-a"], True),
        ("s3://ml-data/team-a-evil", ["s3://ml-data/team-a"], True),
        ("s3://ml-data", ["s3://ml-data/team-a"], True),
        ("s3://ml-data/team-a/../team-b", ["s3://ml-data/team-a"], True),
        ("s3://ml-data/team-a", ["s3://ml-data/team-a"], False),
        ("s3://ml-data/team-a/traffic", ["s3://ml-data/team-a/"], False),
        ("s3://anything/at-all", [], False),  # no list: the operator's credentials are the bound
    ],
    ids=["other-bucket", "prefix-without-boundary", "parent", "dotdot-out", "equal", "under", "no-list"],
)
def test_a_schedule_lists_only_allowed_datasets(uri: str, allowed: list[str], refused: bool) -> None:
    """A RetrainSchedule's dataset is listed with the operator's own credentials: policy.allowedDatasets bounds it."""
    from kretrain.operator.schedule_scan import ScanError, poll_dataset

    conf = settings(allowed_datasets=allowed)
    assert (policy.dataset_violation(uri, conf) is not None) is refused
    if refused:
        with pytest.raises(ScanError, match=r"spec\.template\.dataset\.uri .*not under an allowed dataset prefix"):
            poll_dataset(uri, conf)
    else:
        poll_dataset(uri, conf)
