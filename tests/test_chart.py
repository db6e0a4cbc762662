"""The Helm chart: lint, render, Kubernetes schema validation, values schema, CRD drift, security defaults."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from kretrain.crd import render_crd
from kretrain.operator import settings as operator_settings

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "kretrain"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
K8S_VERSIONS = ("1.28", "1.33")
RELEASE = "kretrain"
NAMESPACE = "kretrain-system"
NON_CORE_KINDS = {"ServiceMonitor", "ClusterKopfPeering", "KopfPeering"}


@pytest.fixture(scope="module")
def chart() -> Any:
    """The chart, loaded once."""
    loaded = helm_python.Chart.load(CHART)
    yield loaded
    loaded.close()


def full_values() -> dict[str, Any]:
    """The full-featured values file."""
    values: dict[str, Any] = yaml.safe_load(FULL_VALUES.read_text())
    return values


def render(chart: Any, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart's templates render (NOTES.txt excluded)."""
    out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    docs: list[dict[str, Any]] = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def crd_docs(chart: Any) -> list[dict[str, Any]]:
    """The CRDs shipped in the chart's crds/ folder."""
    return [d for crd in chart.crds for d in yaml.safe_load_all(crd["data"]) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single object of a kind."""
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator container of the Deployment."""
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The operator container's env by name."""
    return {e["name"]: e for e in container(docs).get("env", [])}


VALUE_SETS = {
    "defaults": dict,
    "full": full_values,
    "namespaced-single": lambda: {"watchNamespaces": ["team-a"]},
    "clusterwide-peering": lambda: {"replicaCount": 3, "metrics": {"serviceMonitor": {"enabled": True}}},
}


@pytest.mark.parametrize("name", ["defaults", "full"])
def test_lint_strict_passes(name: str) -> None:
    report = helm_python.lint(CHART, VALUE_SETS[name](), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == [], serious


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_rendered_manifest_validates(chart: Any, name: str, version: str) -> None:
    docs = render(chart, VALUE_SETS[name]()) + crd_docs(chart)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"} <= kinds
    peering_schemas = {
        c["spec"]["names"]["kind"]: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for c in crd_docs(chart)
        if c["spec"]["group"] == "kopf.dev"
    }
    for doc in docs:
        if doc["kind"] in ("ClusterKopfPeering", "KopfPeering"):
            assert doc["apiVersion"] == "kopf.dev/v1"
            jsonschema.validate(doc, peering_schemas[doc["kind"]])
        elif doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc, docs)
        else:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for {version} at {path}: {exc.message}")


def check_service_monitor(sm: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    """Structural check of a monitoring.coreos.com/v1 ServiceMonitor against the metrics Service."""
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(sm["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    services = by_kind(docs, "Service")
    selected = [
        s
        for s in services
        if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        and s["metadata"]["namespace"] in sm["spec"]["namespaceSelector"]["matchNames"]
    ]
    assert len(selected) == 1, "the ServiceMonitor must select exactly the metrics Service"
    port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
    for endpoint in sm["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", endpoint[key]), endpoint[key]


def test_kubernetes_validation_catches_a_bad_manifest(chart: Any) -> None:
    """The validation above is not vacuous: an unknown field and a wrong type fail it."""
    deployment = copy.deepcopy(one(render(chart), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.33", strict=True)
    deployment = copy.deepcopy(one(render(chart), "Deployment"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.28", strict=True)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCont": 2}, "replicaCont"),
        ({"config": {"registryUrl": "s3://models/registry"}}, "registryUrl"),
        ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
        ({"securityContext": {"readOnlyRootFileSystem": True}}, "readOnlyRootFileSystem"),
        ({"networkPolicy": {"egress": {"rule": []}}}, "rule"),
        ({"image": {"tags": "v1"}}, "tags"),
        ({"replicaCount": "2"}, "replicaCount"),
        ({"config": {"registryUri": "https://not-s3/x"}}, "registryUri"),
        ({"watchNamespaces": ["Bad_Namespace"]}, "watchNamespaces"),
    ],
)
def test_values_schema_rejects_typos_and_bad_values(chart: Any, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=where):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


# Subtrees that are Kubernetes types passed through verbatim; their inner shape is checked by the API server.
PASS_THROUGH = {
    "/properties/config/properties/extraEnv/items/properties/valueFrom",
    "/properties/affinity/properties/nodeAffinity",
    "/properties/affinity/properties/podAffinity",
    "/properties/affinity/properties/podAntiAffinity",
}


def test_values_schema_is_closed_at_every_level(chart: Any) -> None:
    """Every object in values.schema.json rejects unknown keys (or is a typed map, or a listed pass-through)."""
    open_objects: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and path not in PASS_THROUGH:
                extra = node.get("additionalProperties", True)
                typed_map = isinstance(extra, dict) and "properties" not in node
                if extra is not False and not typed_map:
                    open_objects.append(path or "/")
            for key, child in node.items():
                walk(child, f"{path}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{path}/{i}")

    schema = chart.schema
    walk(schema, "")
    assert open_objects == []
    # And every key of values.yaml is declared in the schema.
    assert set(chart.values) == set(schema["properties"])


def test_every_values_key_is_documented() -> None:
    """Each key of values.yaml has a comment right above it, except inside plain Kubernetes-typed blocks."""
    k8s_blocks = {
        "updateStrategy",
        "podSecurityContext",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
    }
    undocumented: list[str] = []
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            parents = [name for _, name in stack]
            if not (parents and parents[0] in k8s_blocks) and not previous.lstrip().startswith("#"):
                undocumented.append(".".join([*parents, match.group(2)]))
            stack.append((indent, match.group(2)))
        if line.strip():
            previous = line
    assert undocumented == []


def test_chart_crd_is_the_generated_crd(chart: Any) -> None:
    """The chart's CRDs are byte-for-byte crds/ and `kretrain crd` (RetrainJob and RetrainSchedule)."""
    chart_crd = (CHART / "crds" / "retrainjob.yaml").read_bytes()
    assert chart_crd == (ROOT / "crds" / "retrainjob.yaml").read_bytes(), "run `make crd`"
    assert chart_crd.decode() == render_crd(), "run `make crd`"
    schedule_crd = (CHART / "crds" / "retrainschedule.yaml").read_bytes()
    assert schedule_crd == (ROOT / "crds" / "retrainschedule.yaml").read_bytes(), "run `make crd`"
    assert schedule_crd.decode() == render_crd(schedule=True), "run `make crd`"
    loaded = {c["filename"].rsplit("/", 1)[-1] for c in chart.crds}
    assert loaded == {"retrainjob.yaml", "retrainschedule.yaml", "kopf-peering.yaml"}


def test_operator_pod_is_locked_down(chart: Any) -> None:
    docs = render(chart)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] in ports
    # Liveness is kopf's own endpoint (it answers only while kopf's loop runs), on the port passed to --liveness.
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["args"] == ["operator", "--liveness", f"http://0.0.0.0:{ports['health']}/healthz"]
    # Readiness is the operator's own server (KRETRAIN_METRICS_PORT), which answers /readyz.
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert env_of(docs)["KRETRAIN_METRICS_PORT"]["value"] == str(ports["http"])
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_operator_args_parse_with_the_real_cli(chart: Any, name: str) -> None:
    """The container's args are a valid `kretrain` command line (the image's entrypoint is `kretrain`)."""
    from kretrain.cli import build_parser

    c = container(render(chart, VALUE_SETS[name]()))
    args = build_parser().parse_args(c["args"])
    assert args.command == "operator"
    assert args.liveness.endswith("/healthz")
    assert args.verbose is (name == "full")


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_credentials_only_by_secret_reference(chart: Any, name: str) -> None:
    """S3 credentials reach the operator only through secretKeyRef; no literal credential values anywhere."""
    docs = render(chart, VALUE_SETS[name]())
    env = env_of(docs)
    assert not by_kind(docs, "Secret")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert set(env[key]) == {"name", "valueFrom"}
        assert "secretKeyRef" in env[key]["valueFrom"]
    literal = [e["name"] for e in env.values() if "value" in e and re.search(r"SECRET_ACCESS|ACCESS_KEY_ID", e["name"])]
    assert literal == []


def test_no_credentials_secret_means_no_credential_env(chart: Any) -> None:
    env = env_of(render(chart, {"s3Credentials": {"existingSecret": ""}}))
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def test_values_reach_the_operator_env(chart: Any) -> None:
    values = full_values()
    docs = render(chart, values)
    env = env_of(docs)
    assert env["KRETRAIN_REGISTRY"]["value"] == "s3://ml-models/registry"
    assert env["KRETRAIN_S3_ENDPOINT"]["value"] == "https://minio.storage.svc:9000"
    assert env["KRETRAIN_S3_REGION"]["value"] == "eu-central-1"
    assert env["KRETRAIN_NAMESPACES"]["value"] == "ml-training,ml-research"
    assert env["KRETRAIN_TRAINER_IMAGE"]["value"] == "registry.example.com/ml/kretrain-trainer:0.1.0-cuda"
    assert env["KRETRAIN_CREDENTIALS_SECRET"]["value"] == "kretrain-s3"
    assert env["KRETRAIN_TRAINER_SERVICE_ACCOUNT"]["value"] == "kretrain-trainer"
    assert env["KRETRAIN_TTL_SECONDS_AFTER_FINISHED"]["value"] == "86400"
    assert env["KRETRAIN_METRICS_PORT"]["value"] == "9100"
    assert {p["name"]: p["containerPort"] for p in container(docs)["ports"]} == {"http": 9100, "health": 9101}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "kretrain-operator-s3",
        "key": "secret-key",
    }
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    c = container(docs)
    assert c["image"] == "registry.example.com/ml/kretrain-operator@" + values["image"]["digest"]
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_default_images_follow_app_version(chart: Any) -> None:
    env = env_of(render(chart))
    app_version = chart.metadata["appVersion"]
    assert env["KRETRAIN_TRAINER_IMAGE"]["value"].endswith(f":{app_version}")
    assert container(render(chart))["image"].endswith(f":{app_version}")


def test_env_names_are_operator_settings(chart: Any) -> None:
    """Every KRETRAIN_* variable the chart sets is a setting the operator reads (kretrain/operator/settings.py)."""
    fields = settings_fields(operator_settings)
    chart_env = {n for n in env_of(render(chart, full_values())) if n.startswith("KRETRAIN_")}
    chart_env.discard("KRETRAIN_EXTRA_EXAMPLE")  # from extraEnv in the full values, not a chart setting
    assert chart_env - fields == set(), f"the operator has no setting for {sorted(chart_env - fields)}"


def settings_fields(module: Any) -> set[str]:
    """The env var names of the operator's pydantic-settings class."""
    from pydantic_settings import BaseSettings

    classes = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, BaseSettings) and v is not BaseSettings
    ]
    assert classes, "kretrain/operator/settings.py defines no BaseSettings class"
    names: set[str] = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            alias = field.validation_alias if isinstance(field.validation_alias, str) else None
            names.add((alias or f"{prefix}{name}").upper())
    return names


def test_clusterwide_vs_namespaced_rbac(chart: Any) -> None:
    clusterwide = render(chart)
    assert not by_kind(clusterwide, "Role") and not by_kind(clusterwide, "RoleBinding")
    resources = {r for rule in one(clusterwide, "ClusterRole")["rules"] for r in rule["resources"]}
    assert "retrainjobs" in resources

    docs = render(chart, {"watchNamespaces": ["team-a", "team-b"]})
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "kretrain", "namespace": NAMESPACE}]
    cluster_resources = {r for rule in one(docs, "ClusterRole")["rules"] for r in rule["resources"]}
    assert cluster_resources == {"namespaces", "customresourcedefinitions"}


def test_rbac_can_be_disabled(chart: Any) -> None:
    kinds = {d["kind"] for d in render(chart, {"rbac": {"create": False}})}
    assert kinds.isdisjoint({"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})


def test_existing_service_account_needs_a_name(chart: Any) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=r"serviceAccount\.name"):
        render(chart, {"serviceAccount": {"create": False}})
    docs = render(chart, {"serviceAccount": {"create": False, "name": "ops"}})
    assert not by_kind(docs, "ServiceAccount")
    assert one(docs, "ClusterRoleBinding")["subjects"][0]["name"] == "ops"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, []),
        ({"replicaCount": 2}, [("ClusterKopfPeering", None)]),
        ({"replicaCount": 2, "watchNamespaces": ["a", "b"]}, [("KopfPeering", "a"), ("KopfPeering", "b")]),
        ({"replicaCount": 1, "watchNamespaces": ["a"]}, []),
    ],
)
def test_peering_objects_only_with_several_replicas(
    chart: Any, values: dict[str, Any], expected: list[tuple[str, str | None]]
) -> None:
    docs = render(chart, values)
    peerings = [
        (d["kind"], d["metadata"].get("namespace")) for d in docs if d["kind"] in ("ClusterKopfPeering", "KopfPeering")
    ]
    assert peerings == expected
    for d in docs:
        if d["kind"] in ("ClusterKopfPeering", "KopfPeering"):
            assert d["metadata"]["name"] == "kretrain"


def test_metrics_service_and_monitor(chart: Any) -> None:
    docs = render(chart, {"metrics": {"serviceMonitor": {"enabled": True}}})
    service = one(docs, "Service")
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container(docs)["ports"]}
    check_service_monitor(one(docs, "ServiceMonitor"), docs)

    off = render(chart, {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})
    assert not by_kind(off, "Service") and not by_kind(off, "ServiceMonitor")
    assert env_of(off)["KRETRAIN_METRICS_PORT"]["value"] == "8080", "/healthz is still served"
    assert not by_kind(render(chart), "ServiceMonitor")


def test_network_policy(chart: Any) -> None:
    assert not by_kind(render(chart), "NetworkPolicy")
    docs = render(chart, full_values())
    [policy] = [d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"] == "kretrain-operator"]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    named_ports = {p["name"] for p in container(docs)["ports"]}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in named_ports
    assert policy["spec"]["ingress"] == [
        {
            "ports": [{"port": "http", "protocol": "TCP"}, {"port": "health", "protocol": "TCP"}],
            "from": full_values()["networkPolicy"]["ingressFrom"],
        }
    ]
    assert {"port": 53, "protocol": "UDP"} in policy["spec"]["egress"][0]["ports"]


def test_replicas_and_strategy(chart: Any) -> None:
    docs = render(chart, full_values())
    spec = one(docs, "Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert one(render(chart), "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def trainer_pod_labels() -> dict[str, str]:
    """The labels the operator puts on a trainer pod (kretrain/operator/jobs.py labels())."""
    from kretrain.operator import jobs

    return jobs.labels("0123-uid", "ns-rtj-0123abcd")


def test_trainer_network_policy_selects_trainer_pods_only(chart: Any) -> None:
    assert not [d for d in by_kind(render(chart), "NetworkPolicy") if d["metadata"]["name"].endswith("-trainer")]
    values = full_values()
    docs = render(chart, values)
    trainer = [d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"] == "kretrain-operator-trainer"]
    assert sorted(p["metadata"]["namespace"] for p in trainer) == sorted(values["watchNamespaces"])
    operator_pod = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for policy in trainer:
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= trainer_pod_labels().items(), "must select the pods the operator creates"
        assert not selector.items() <= operator_pod.items(), "must not select the operator itself"
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert "ingress" not in policy["spec"], "trainer pods take no connections"
        dns, *s3_rules, extra = policy["spec"]["egress"]
        assert dns["to"] == values["trainerNetworkPolicy"]["dns"]
        assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        assert s3_rules == [
            {"to": [{"ipBlock": {"cidr": "10.0.12.0/24"}}], "ports": [{"port": 9000, "protocol": "TCP"}]},
            {
                "to": [{"ipBlock": {"cidr": "52.219.0.0/16", "except": ["52.219.1.0/24"]}}],
                "ports": [{"port": 443, "protocol": "TCP"}],
            },
        ]
        assert [extra] == values["trainerNetworkPolicy"]["extraEgress"]
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(policy, version, strict=True)


def test_trainer_network_policy_defaults_and_namespaces(chart: Any) -> None:
    docs = render(chart, {"watchNamespaces": ["team-a"], "trainerNetworkPolicy": {"enabled": True}})
    [policy] = by_kind(docs, "NetworkPolicy")
    assert policy["metadata"]["namespace"] == "team-a"
    assert policy["spec"]["egress"] == [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
        }
    ], "by default only DNS: no S3 address is guessed"
    kubernetes_validate.validate(policy, "1.33", strict=True)
    explicit = render(chart, {"trainerNetworkPolicy": {"enabled": True, "namespaces": ["ml-a", "ml-b"]}})
    assert sorted(p["metadata"]["namespace"] for p in by_kind(explicit, "NetworkPolicy")) == ["ml-a", "ml-b"]
    with pytest.raises(helm_python.HelmRenderError, match=r"trainerNetworkPolicy\.namespaces"):
        render(chart, {"trainerNetworkPolicy": {"enabled": True}})


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"trainerNetworkPolicy": {"s3": [{"cidr": "s3.amazonaws.com", "ports": [443]}]}}, "cidr"),
        ({"trainerNetworkPolicy": {"s3": [{"cidr": "10.0.0.0/8"}]}}, "ports"),
        ({"trainerNetworkPolicy": {"s3": [{"cidr": "10.0.0.0/8", "ports": [0]}]}}, "ports"),
        ({"policy": {"allowedImages": ["ghcr.io/a,evil.io/b"]}}, "allowedImages"),
        ({"policy": {"allowedS3Endpoints": ["http://ok@evil.example"]}}, "allowedS3Endpoints"),
        ({"policy": {"allowedCredentialsSecrets": ["Bad_Name"]}}, "allowedCredentialsSecrets"),
        ({"policy": {"allowedRegistries": ["s3://ml/a,s3://evil/b"]}}, "allowedRegistries"),
        ({"policy": {"allowedRegistries": ["https://evil.example/reg"]}}, "allowedRegistries"),
        ({"policy": {"allowedDatasets": ["s3://a-data/x,s3://b-data"]}}, "allowedDatasets"),
        ({"policy": {"allowedPriorityClass": ["x"]}}, "allowedPriorityClass"),
    ],
)
def test_policy_values_are_checked(chart: Any, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=where):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


POLICY_ENV = (
    "KRETRAIN_ALLOWED_IMAGES",
    "KRETRAIN_ALLOWED_CREDENTIALS_SECRETS",
    "KRETRAIN_ALLOWED_S3_ENDPOINTS",
    "KRETRAIN_ALLOWED_REGISTRIES",
    "KRETRAIN_ALLOWED_DATASETS",
    "KRETRAIN_ALLOWED_PRIORITY_CLASSES",
    "KRETRAIN_ALLOWED_TOLERATION_KEYS",
)


def settings_from(docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The OperatorSettings the operator reads from the rendered Deployment's literal env."""
    from kretrain.operator.settings import OperatorSettings

    for name in list(__import__("os").environ):
        if name.startswith("KRETRAIN_"):
            monkeypatch.delenv(name)
    for name, entry in env_of(docs).items():
        if name.startswith("KRETRAIN_") and "value" in entry:
            monkeypatch.setenv(name, entry["value"])
    return OperatorSettings()


def test_default_policy_is_the_operators_own_image_secret_and_endpoint(
    chart: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kretrain.operator import policy

    docs = render(chart, {"config": {"s3Endpoint": "https://minio.storage.svc:9000"}})
    env = env_of(docs)
    assert {n: env[n]["value"] for n in POLICY_ENV} == {
        "KRETRAIN_ALLOWED_IMAGES": "",
        "KRETRAIN_ALLOWED_CREDENTIALS_SECRETS": "",
        "KRETRAIN_ALLOWED_S3_ENDPOINTS": "",
        "KRETRAIN_ALLOWED_REGISTRIES": "",
        "KRETRAIN_ALLOWED_DATASETS": "",
        "KRETRAIN_ALLOWED_PRIORITY_CLASSES": "",
        "KRETRAIN_ALLOWED_TOLERATION_KEYS": "nvidia.com/gpu",
    }
    settings = settings_from(docs, monkeypatch)
    assert policy.allowed_images(settings) == [env["KRETRAIN_TRAINER_IMAGE"]["value"]]
    assert policy.allowed_endpoints(settings) == ["https://minio.storage.svc:9000"]
    assert settings.allowed_credentials_secrets == [] and settings.credentials_secret == "kretrain-s3"
    assert settings.allowed_priority_classes == [] and settings.allowed_toleration_keys == ["nvidia.com/gpu"]


def test_policy_values_reach_the_operator_settings(chart: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    values = full_values()
    settings = settings_from(render(chart, values), monkeypatch)
    wanted = values["policy"]
    assert settings.allowed_images == wanted["allowedImages"]
    assert settings.allowed_credentials_secrets == wanted["allowedCredentialsSecrets"]
    assert settings.allowed_s3_endpoints == wanted["allowedS3Endpoints"]
    assert settings.allowed_registries == wanted["allowedRegistries"]
    assert settings.allowed_datasets == wanted["allowedDatasets"]
    assert settings.allowed_priority_classes == wanted["allowedPriorityClasses"]
    assert settings.allowed_toleration_keys == wanted["allowedTolerationKeys"]
    assert settings.allowed_webhook_hosts == wanted["allowedWebhookHosts"]
    assert settings.allowed_webhook_secrets == wanted["allowedWebhookSecrets"]


@pytest.mark.parametrize("multi_node", [False, True], ids=["single-pod-runs", "multi-node-runs"])
def test_trainer_network_policy_multi_node_allows_trainer_pods_to_each_other(chart: Any, multi_node: bool) -> None:
    """trainerNetworkPolicy.multiNode (resources.nodes > 1): TCP between the training pods, nothing else added."""
    values = {"watchNamespaces": ["team-a"], "trainerNetworkPolicy": {"enabled": True, "multiNode": multi_node}}
    [policy] = [
        d for d in by_kind(render(chart, values), "NetworkPolicy") if d["metadata"]["name"].endswith("-trainer")
    ]
    peers = [{"podSelector": {"matchLabels": policy["spec"]["podSelector"]["matchLabels"]}}]
    assert policy["spec"].get("ingress") == ([{"from": peers}] if multi_node else None)
    assert ({"to": peers} in policy["spec"]["egress"]) is multi_node
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= trainer_pod_labels().items()
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(policy, version, strict=True)
