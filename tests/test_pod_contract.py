"""The operator↔pod contract (kretrain/api/pod.py) and the one resolve_spec (kretrain/resolve.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kretrain.api import RetrainJobSpec
from kretrain.api.pod import CREDENTIAL_ENV, PATHS, TERMINATION_LOG, PodContract, PodContractError, contract_table
from kretrain.operator import jobs
from kretrain.operator.settings import OperatorSettings
from kretrain.resolve import SpecDefaults, SpecError, resolve_spec
from kretrain.trainer.local import local_defaults

ROOT = Path(__file__).resolve().parents[1]
BASE = {"KRETRAIN_RUN_ID": "ns-job-0123abcd"}


def job_env(incumbent: str | None = "v1", **storage: Any) -> list[dict[str, Any]]:
    settings = OperatorSettings(registry="s3://models/reg", s3_endpoint="http://s3.local:8333", metrics_port=0)
    raw = {"model": "m", "dataset": {"uri": "s3://data/x", "eras": ["a"]}, "storage": storage}
    spec = jobs.resolve_spec(RetrainJobSpec.model_validate(raw), settings)
    job = jobs.build_job(name="j", namespace="ns", run="ns-job-0123abcd", spec=spec, incumbent_version=incumbent,
                         object_labels={}, settings=settings)  # fmt: skip
    env: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def test_the_job_env_is_the_contract_plus_secret_refs_and_the_pod_reads_it_back() -> None:
    env = job_env()
    values = {e["name"]: e["value"] for e in env if "value" in e}
    refs = {e["name"]: e["valueFrom"] for e in env if "valueFrom" in e}
    assert refs == {k: {"secretKeyRef": {"name": "kretrain-s3", "key": k}} for k in CREDENTIAL_ENV}
    assert set(values) == set(PodContract.env_names()) and not set(values) & set(CREDENTIAL_ENV)
    pod = PodContract.from_env(values)
    assert pod == PodContract.in_cluster(
        run_id="ns-job-0123abcd", incumbent_version="v1", endpoint="http://s3.local:8333", region="us-east-1"
    )
    assert (pod.workdir, pod.cache_dir, pod.termination_log) == (Path("/scratch"), Path("/cache"),
                                                                 Path("/dev/termination-log"))  # fmt: skip
    assert pod.home == Path("/tmp") and pod.yolo_config_dir == Path("/tmp/ultralytics")
    assert PodContract.from_env(pod.to_env()) == pod  # round trip


def test_no_incumbent_is_an_empty_variable_not_a_missing_one() -> None:
    values = {e["name"]: e["value"] for e in job_env(incumbent=None) if "value" in e}
    assert values["KRETRAIN_INCUMBENT_VERSION"] == ""
    assert PodContract.from_env(values).incumbent_version == ""  # none: evaluate no incumbent
    assert PodContract.from_env(BASE).incumbent_version is None  # unset: the pod asks the registry


@pytest.mark.parametrize(
    ("environ", "overrides", "expected"),
    [
        (BASE, {}, {"workdir": Path("/scratch"), "cache_dir": Path("/cache"), "endpoint": None, "region": None}),
        (
            {**BASE, "KRETRAIN_WORKDIR": "/w", "KRETRAIN_CACHE_DIR": ""},
            {},
            {"workdir": Path("/w"), "cache_dir": Path("/cache")},
        ),
        ({**BASE, "KRETRAIN_WORKDIR": "/w"}, {"workdir": Path("/cli"), "cache_dir": None}, {"workdir": Path("/cli")}),
        ({}, {"run_id": "from-cli"}, {"run_id": "from-cli"}),
        ({**BASE, "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "UNRELATED": "x"}, {}, {"endpoint": "http://127.0.0.1:1"}),
    ],
    ids=["defaults", "empty-is-unset", "cli-wins", "run-id-from-cli", "other-vars-ignored"],
)
def test_from_env_defaults_and_overrides(
    environ: dict[str, str], overrides: dict[str, Any], expected: dict[str, Any]
) -> None:
    pod = PodContract.from_env(environ, **overrides)
    assert {k: getattr(pod, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "KRETRAIN_RUN_ID: not set"),
        ({"KRETRAIN_RUN_ID": ""}, "KRETRAIN_RUN_ID: not set"),
        ({"KRETRAIN_RUN_ID": "../other-run"}, "KRETRAIN_RUN_ID: String should match pattern"),
        ({"KRETRAIN_RUN_ID": "a" * 129}, "KRETRAIN_RUN_ID: String should match pattern"),
        ({"KRETRAIN_RUN_ID": "run\n1"}, "KRETRAIN_RUN_ID: String should match pattern"),
        ({**BASE, "KRETRAIN_INCUMBENT_VERSION": "v1/../../x"}, "KRETRAIN_INCUMBENT_VERSION: String should match"),
        ({"KRETRAIN_INCUMBENT_VERSION": " "}, "KRETRAIN_RUN_ID: not set; KRETRAIN_INCUMBENT_VERSION: String"),
    ],
    ids=["missing", "empty", "path-traversal", "too-long", "newline", "bad-incumbent", "every-problem-at-once"],
)
def test_from_env_names_each_bad_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(PodContractError) as exc:
        PodContract.from_env(environ)
    assert str(exc.value).startswith("pod environment: ") and message in str(exc.value)


def test_from_env_refuses_an_unknown_override() -> None:
    with pytest.raises(TypeError, match="unknown overrides"):
        PodContract.from_env(BASE, scratch=Path("/x"))


def test_the_contract_has_no_credential_and_forbids_extra_fields() -> None:
    assert not set(PodContract.env_names()) & set(CREDENTIAL_ENV)
    with pytest.raises(ValueError, match="Extra inputs"):
        PodContract(run_id="r", aws_secret_access_key="x")  # type: ignore[call-arg]


SPEC = {"model": "m", "dataset": {"uri": "s3://data/x", "eras": ["a"]}}
OPERATOR = OperatorSettings(
    registry="s3://ops/reg", s3_endpoint="http://op:8333", s3_region="eu-central-1", trainer_image="t:1",
    metrics_port=0,
).spec_defaults()  # fmt: skip
LOCAL = local_defaults({"KRETRAIN_REGISTRY": "s3://loc/reg", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
EXPLICIT = {"registry": "s3://own/reg", "endpoint": "http://own:1", "region": "ap-south-1", "credentialsSecret": "s"}


LOCAL_EU = local_defaults({"KRETRAIN_REGISTRY": "s3://loc/reg", "AWS_DEFAULT_REGION": "eu-west-1"})


@pytest.mark.parametrize(
    ("storage", "resources", "defaults", "expected"),
    [
        ({}, {}, OPERATOR, ("s3://ops/reg", "http://op:8333", "eu-central-1", "kretrain-s3", "t:1")),
        (EXPLICIT, {"image": "own:2"}, OPERATOR, ("s3://own/reg", "http://own:1", "ap-south-1", "s", "own:2")),
        ({}, {}, LOCAL, ("s3://loc/reg", "http://127.0.0.1:9", None, None, None)),
        ({}, {}, LOCAL_EU, ("s3://loc/reg", None, "eu-west-1", None, None)),
        (EXPLICIT, {}, LOCAL, ("s3://own/reg", "http://own:1", "ap-south-1", "s", None)),
        ({"registry": "s3://own/reg"}, {}, SpecDefaults(source="x"), ("s3://own/reg", None, None, None, None)),
    ],
    ids=["operator-fills", "explicit-wins-operator", "local-fills", "local-region", "explicit-wins-local",
         "no-defaults"],
)  # fmt: skip
def test_resolve_spec_fills_only_unset_fields(
    storage: dict[str, Any], resources: dict[str, Any], defaults: SpecDefaults, expected: tuple[Any, ...]
) -> None:
    spec = RetrainJobSpec.model_validate({**SPEC, "storage": storage, "resources": resources})
    out = resolve_spec(spec, defaults)
    s = out.storage
    assert (s.registry, s.endpoint, s.region, s.credentials_secret, out.resources.image) == expected
    assert resolve_spec(out, defaults) == out  # idempotent: a resolved spec stays as it is


def test_the_operator_region_reaches_the_pod_unless_the_spec_names_one() -> None:
    settings = OperatorSettings(registry="s3://models/reg", s3_region="eu-central-1", metrics_port=0)

    def region(storage: dict[str, Any]) -> str:
        spec = jobs.resolve_spec(RetrainJobSpec.model_validate({**SPEC, "storage": storage}), settings)
        job = jobs.build_job(name="j", namespace="ns", run="r", spec=spec, incumbent_version=None,
                             object_labels={}, settings=settings)  # fmt: skip
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert json.loads(jobs.spec_json(spec))["storage"]["region"] == env["AWS_DEFAULT_REGION"]  # spec == env
        return str(env["AWS_DEFAULT_REGION"])

    assert region({}) == "eu-central-1"
    assert region({"region": "ap-south-1"}) == "ap-south-1"


@pytest.mark.parametrize(
    ("defaults", "source"),
    [(SpecDefaults(source="the operator (KRETRAIN_REGISTRY)"), "the operator"), (local_defaults({}), "environment")],
    ids=["operator", "local"],
)
def test_resolve_spec_without_any_registry_names_field_and_source(defaults: SpecDefaults, source: str) -> None:
    with pytest.raises(SpecError, match=rf"^spec\.storage\.registry: unset, and .*{source}"):
        resolve_spec(RetrainJobSpec.model_validate(SPEC), defaults)


def test_a_default_that_breaks_a_field_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="registry"):
        SpecDefaults(source="x", registry="http://not-s3")


def test_docs_show_the_current_pod_contract_table() -> None:
    doc = (ROOT / "docs" / "internals.md").read_text()
    assert contract_table() in doc, "docs/internals.md: paste kretrain.api.pod.contract_table() under 'Pod contract'"
    for name in [*PodContract.env_names(), *CREDENTIAL_ENV]:
        assert f"| `{name}` |" in contract_table()


def test_the_job_mounts_are_the_contract_paths() -> None:
    settings = OperatorSettings(registry="s3://models/reg", metrics_port=0)
    spec = jobs.resolve_spec(RetrainJobSpec.model_validate(SPEC), settings)
    job = jobs.build_job(name="j", namespace="ns", run="r", spec=spec, incumbent_version=None, object_labels={},
                         settings=settings)  # fmt: skip
    container = job["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {path: volume for path, volume, _ in PATHS if volume != "-"}
    assert container["terminationMessagePath"] == TERMINATION_LOG


@pytest.mark.parametrize(
    ("environ", "argv", "message"),
    [
        ({}, [], "KRETRAIN_RUN_ID: not set"),
        ({"KRETRAIN_RUN_ID": "a/b"}, [], "KRETRAIN_RUN_ID: String should match pattern"),
        ({"KRETRAIN_RUN_ID": "ok", "KRETRAIN_INCUMBENT_VERSION": "../v"}, [], "KRETRAIN_INCUMBENT_VERSION"),
        ({}, ["--run-id", "../x"], "KRETRAIN_RUN_ID: String should match pattern"),
    ],
    ids=["no-run-id", "bad-run-id", "bad-incumbent", "bad-cli-run-id"],
)
def test_kretrain_train_refuses_a_bad_pod_env_before_reading_the_spec(
    environ: dict[str, str], argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:  # fmt: skip
    from kretrain.cli import main

    for name in PodContract.env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(["train", "--spec", str(tmp_path / "absent.json"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kretrain train: pod environment: ") and message in err
