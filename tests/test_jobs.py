"""The pure Job builder: names, the trainer pod contract, pod security and scheduling; valid for Kubernetes 1.32."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from kretrain.api import RetrainJobSpec
from kretrain.operator import jobs
from kretrain.operator.settings import OperatorSettings

SETTINGS = OperatorSettings(
    registry="s3://models/registry",
    s3_endpoint="http://s3.local:8333",
    trainer_image="trainer:test",
    metrics_port=0,
    allowed_images=["img:2"],
    allowed_credentials_secrets=["mine"],
    allowed_registries=["s3://own/reg"],
    allowed_priority_classes=["training"],
)


def make_spec(**over: Any) -> RetrainJobSpec:
    raw: dict[str, Any] = {
        "model": "traffic",
        "dataset": {"uri": "s3://data/traffic", "eras": ["q1", "q2"]},
        "resources": {
            "gpus": 2,
            "cpu": "8",
            "memory": "32Gi",
            "shmSize": "8Gi",
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "training",
        },
        "activeDeadlineSeconds": 3600,
        "backoffLimit": 4,
    }
    raw.update(over)
    return RetrainJobSpec.model_validate(raw)


def build(spec: RetrainJobSpec, incumbent: str | None = "v1", settings: OperatorSettings = SETTINGS) -> dict[str, Any]:
    resolved = jobs.resolve_spec(spec, settings)
    return jobs.build_job(
        name="ns-rtj-0123abcd",
        namespace="ns",
        run="ns-rtj-0123abcd",
        spec=resolved,
        incumbent_version=incumbent,
        object_labels=jobs.labels("uid-1", "ns-rtj-0123abcd"),
        settings=settings,
    )


def container(job: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return c


def env(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


@pytest.mark.parametrize(
    ("namespace", "name", "uid", "expected"),
    [
        ("ml", "traffic-full", "0123456789abcdef", "ml-traffic-full-01234567"),
        ("a", "b", "ffffffff-0000", "a-b-ffffffff"),
    ],
)
def test_run_id_is_namespace_name_uid8(namespace: str, name: str, uid: str, expected: str) -> None:
    assert jobs.run_id(namespace, name, uid) == expected
    assert jobs.job_name(expected) == expected


def test_long_names_are_shortened_deterministically_and_stay_distinct() -> None:
    name = "x" * 200
    run_a, run_b = jobs.run_id("ns", name, "aaaaaaaa-1"), jobs.run_id("ns", name, "bbbbbbbb-1")
    assert len(run_a) <= 128 and run_a != run_b
    job_a, job_b = jobs.job_name(run_a), jobs.job_name(run_b)
    assert len(job_a) <= 63 and len(job_b) <= 63 and job_a != job_b
    assert job_a == jobs.job_name(jobs.run_id("ns", name, "aaaaaaaa-1"))
    assert job_a[-1].isalnum()


def test_resolve_spec_fills_operator_defaults_and_keeps_explicit_values() -> None:
    resolved = jobs.resolve_spec(make_spec(), SETTINGS)
    assert resolved.storage.registry == "s3://models/registry"
    assert resolved.storage.endpoint == "http://s3.local:8333"
    assert resolved.storage.credentials_secret == "kretrain-s3"
    assert resolved.resources.image == "trainer:test"
    own = make_spec(storage={"registry": "s3://own/reg", "credentialsSecret": "mine"}, resources={"image": "img:2"})
    resolved = jobs.resolve_spec(own, SETTINGS)
    assert (resolved.storage.registry, resolved.storage.credentials_secret) == ("s3://own/reg", "mine")
    assert resolved.resources.image == "img:2"


def test_resolve_spec_without_any_registry_names_the_field() -> None:
    with pytest.raises(jobs.SpecError, match=r"spec\.storage\.registry"):
        jobs.resolve_spec(make_spec(), OperatorSettings(metrics_port=0))


def test_job_follows_the_trainer_pod_contract() -> None:
    job = build(make_spec())
    c = container(job)
    assert c["command"] == ["kretrain", "train", "--spec", "/etc/kretrain/spec.json"]
    e = env(job)
    assert e["KRETRAIN_RUN_ID"] == "ns-rtj-0123abcd"
    assert e["KRETRAIN_INCUMBENT_VERSION"] == "v1"
    assert e["KRETRAIN_WORKDIR"] == "/scratch" and e["KRETRAIN_CACHE_DIR"] == "/cache"
    assert e["KRETRAIN_TERMINATION_LOG"] == "/dev/termination-log"
    assert e["AWS_ENDPOINT_URL"] == "http://s3.local:8333"
    assert e["AWS_DEFAULT_REGION"] == "us-east-1"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert e[key] == {"secretKeyRef": {"name": "kretrain-s3", "key": key}}
    assert env(build(make_spec(), incumbent=None))["KRETRAIN_INCUMBENT_VERSION"] == ""
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {
        "/etc/kretrain": "spec",
        "/scratch": "scratch",
        "/cache": "cache",
        "/tmp": "tmp",
        "/dev/shm": "dshm",
    }
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["spec"]["configMap"]["name"] == job["metadata"]["name"]
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert {n: v["emptyDir"] for n, v in volumes.items() if n in ("scratch", "cache", "tmp")} == {
        "scratch": {"sizeLimit": "20Gi"},
        "cache": {"sizeLimit": "50Gi"},
        "tmp": {"sizeLimit": "2Gi"},
    }
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_pod_is_locked_down() -> None:
    job = build(make_spec())
    pod = job["spec"]["template"]["spec"]
    sc = container(job)["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 1000 and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert (
        pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert not any("AWS_SECRET" in json.dumps(e.get("value", "")) for e in container(job)["env"])


def test_scheduling_resources_and_job_knobs() -> None:
    job = build(make_spec())
    pod = job["spec"]["template"]["spec"]
    res = container(job)["resources"]
    assert res["limits"] == {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "73Gi", "nvidia.com/gpu": "2"}
    assert res["requests"] == {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "73Gi"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "training"
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["suspend"]) == (4, 3600, False)
    assert spec["ttlSecondsAfterFinished"] == SETTINGS.ttl_seconds_after_finished
    assert build(make_spec(suspend=True))["spec"]["suspend"] is True
    cpu_only = build(make_spec(resources={"gpus": 0}))
    assert "nvidia.com/gpu" not in container(cpu_only)["resources"]["limits"]
    assert "nodeSelector" not in cpu_only["spec"]["template"]["spec"]


def test_labels_select_the_job_and_fit_label_limits() -> None:
    job = build(make_spec())
    labels = job["metadata"]["labels"]
    assert labels[jobs.LABEL_UID] == "uid-1" and jobs.selector("uid-1") == f"{jobs.LABEL_UID}=uid-1"
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert all(len(v) <= 63 for v in labels.values())


@pytest.mark.parametrize("spec", [make_spec(), make_spec(resources={"gpus": 0}), make_spec(suspend=True)])
def test_job_and_configmap_are_valid_kubernetes_1_32(spec: RetrainJobSpec) -> None:
    job = build(spec)
    kubernetes_validate.validate(job, "1.32", strict=True)
    cm = jobs.build_configmap(
        "ns-rtj-0123abcd", "ns", jobs.resolve_spec(spec, SETTINGS), jobs.labels("u", "n"), "k" * 64
    )
    kubernetes_validate.validate(cm, "1.32", strict=True)


def test_configmap_holds_the_resolved_spec_the_trainer_parses() -> None:
    resolved = jobs.resolve_spec(make_spec(), SETTINGS)
    cm = jobs.build_configmap("n", "ns", resolved, {}, "k" * 64)
    parsed = RetrainJobSpec.model_validate(json.loads(cm["data"]["spec.json"]))
    assert parsed == resolved
    assert parsed.storage.endpoint == "http://s3.local:8333" and parsed.storage.registry == "s3://models/registry"
