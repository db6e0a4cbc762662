"""How kretrain.operator.kube authenticates: the pod's service account (TLS verified against its CA, the bound token
re-read as it rotates) or a kubeconfig, both through the official client's configuration loaders."""

from __future__ import annotations

import datetime
import ipaddress
import types
from pathlib import Path

import pytest
import yaml
from kubernetes.config import incluster_config, kube_config

from emulator.recorder import recording_server
from kretrain.operator.kube import Kube
from kretrain.operator.settings import OperatorSettings

NS = "team-a"


# ---- the service account: TLS against its CA, the token re-read as it rotates -------------------------------
def _self_signed(tmp: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp / "ca.crt", tmp / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


def test_in_cluster_token_is_refreshed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a pod: HTTPS verified against the service account's CA, and the bound token re-read once the client's
    refresh period has passed (kubelet rotates it), with no restart."""
    cert, key = _self_signed(tmp_path)
    token = tmp_path / "token"
    token.write_text("first")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", cert)
    later = types.SimpleNamespace(offset=datetime.timedelta(0))

    class Clock(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Clock:
            return datetime.datetime.now(tz) + later.offset  # type: ignore[return-value]

    monkeypatch.setattr(
        incluster_config, "datetime", types.SimpleNamespace(datetime=Clock, timedelta=datetime.timedelta)
    )
    with recording_server(tls=(cert, key)) as rec:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", rec.url.rsplit(":", 1)[1])
        kube = Kube(OperatorSettings())
        kube.find_jobs(NS, "a=b")
        token.write_text("second")
        kube.find_jobs(NS, "a=b")  # within the refresh period: the token read at start
        later.offset = datetime.timedelta(minutes=2)
        kube.find_jobs(NS, "a=b")
    assert [s.headers["Authorization"] for s in rec.sent] == ["bearer first", "bearer first", "bearer second"]


def test_kubeconfig_outside_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No service account: the kubeconfig's current context, its user's token sent on every call."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with recording_server() as rec:
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "dev",
            "clusters": [{"name": "c", "cluster": {"server": rec.url}}],
            "users": [{"name": "u", "user": {"token": "from-kubeconfig"}}],
            "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
        }  # fmt: skip
        (tmp_path / "config").write_text(yaml.safe_dump(kubeconfig))
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "config"))  # $KUBECONFIG
        Kube(OperatorSettings()).get_job(NS, "j")
    assert [(s.raw_path, s.headers["Authorization"]) for s in rec.sent] == [
        (f"/apis/batch/v1/namespaces/{NS}/jobs/j", "Bearer from-kubeconfig")
    ]
