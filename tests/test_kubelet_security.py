"""The kubelet harness enforces the pod's securityContext: the command runs as runAsUser/runAsGroup (fsGroup as its
group), can write only its writable volumes (HOME and TMPDIR on the /tmp volume), and a write anywhere else the
user could reach is reported as a violation."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import Client, EmulatorServer, job_path, path
from harness import podsecurity
from harness.kubelet import Kubelet

pytestmark = pytest.mark.skipif(not podsecurity.can_enforce(), reason="needs root, Linux and setpriv")

NS = "podsec"
ROOT = Path(__file__).resolve().parent.parent
TAG = uuid.uuid4().hex[:8]
LEAKS = [Path(f"/var/tmp/kubelet-leak-{TAG}"), Path(f"/tmp/kubelet-leak-{TAG}")]

OWN_VOLUMES = """
import os, sys, tempfile
assert (os.getuid(), os.getgid(), os.getgroups()) == (1000, 1000, [2000]), (os.getuid(), os.getgid(), os.getgroups())
open(os.path.join(sys.argv[1], "out"), "w").write("x")
open(os.path.join(os.environ["HOME"], ".rc"), "w").write("x")
fd, name = tempfile.mkstemp()
assert name.startswith(os.environ["HOME"]), name  # TMPDIR: the volume mounted at /tmp
print(open(sys.argv[2]).read())
"""

CASES = [
    # id, code, Job succeeds, violation (a path that must be reported) or None; case i runs as uid 1000 + i
    ("writes-only-its-volumes", OWN_VOLUMES, True, None),
    ("writes-var-tmp", f"open('{LEAKS[0]}', 'w').write('x')", True, str(LEAKS[0])),
    ("writes-the-hosts-tmp", f"open('{LEAKS[1]}', 'w').write('x')", True, str(LEAKS[1])),
    ("writes-a-config-map-volume", "import sys; open(sys.argv[2], 'w').write('x')", False, None),
    ("writes-its-working-folder", "open('leak', 'w').write('x')", False, None),
    ("writes-the-repository", f"open('{ROOT}/kubelet-leak-{TAG}', 'w').write('x')", False, None),
    ("root-is-refused", "import os; os.setuid(0)", False, None),
]


def job(name: str, code: str, uid: int) -> dict[str, Any]:
    """A Job like the trainer's (securityContext, volumes, HOME on /tmp) running `code` as `uid`."""
    ctx = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": 1000}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {**ctx, "fsGroup": 2000},
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "none",
                            "command": [sys.executable, "-c", code, "/scratch", "/etc/spec/spec.json"],
                            "env": [{"name": "HOME", "value": "/tmp"}],
                            "securityContext": {**ctx, "readOnlyRootFilesystem": True},
                            "volumeMounts": [
                                {"name": "spec", "mountPath": "/etc/spec", "readOnly": True},
                                {"name": "scratch", "mountPath": "/scratch"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "spec", "configMap": {"name": "spec"}},
                        {"name": "scratch", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                }
            },
        },
    }


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Kubelet]]:
    """Every case's Job run to its end by one enforcing kubelet."""
    with EmulatorServer() as server:
        client = Client(server.url)
        client.ensure_namespace(NS)
        client.create(
            path("", "v1", "configmaps", NS),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "spec"}, "data": {"spec.json": "{}"}},
        )
        kubelet = Kubelet(client, tmp_path_factory.mktemp("node"), poll=0.05).start()
        try:
            for i, (name, code, _, _) in enumerate(CASES):  # one uid each: a write elsewhere names its pod
                client.create(job_path(NS), job(name, code, 1000 + i))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(_done(client, c[0]) for c in CASES):
                time.sleep(0.1)
            yield client, kubelet
        finally:
            kubelet.stop()
            kubelet.cleanup()
            for leak in [*LEAKS, ROOT / f"kubelet-leak-{TAG}"]:
                leak.unlink(missing_ok=True)


def _done(client: Client, name: str) -> str | None:
    for c in (client.get(job_path(NS, name)).get("status") or {}).get("conditions") or []:
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return str(c["type"])
    return None


@pytest.mark.parametrize(("name", "succeeds", "violation"), [(c[0], *c[2:]) for c in CASES], ids=[c[0] for c in CASES])
def test_pod_runs_as_its_user_and_writes_only_its_volumes(
    ran: tuple[Client, Kubelet], name: str, succeeds: bool, violation: str | None
) -> None:
    client, kubelet = ran
    assert _done(client, name) == ("Complete" if succeeds else "Failed"), kubelet.errors
    [state] = [s for s in kubelet.jobs.values() if s.name == name]
    [pod] = state.attempts
    assert kubelet.ran_as[pod].uid == 1000 + [c[0] for c in CASES].index(name)
    found = [v.split(": ", 1)[1] for v in kubelet.violations if v.startswith(f"{pod}: ")]
    assert found == ([violation] if violation else []), kubelet.violations
    assert not (ROOT / f"kubelet-leak-{TAG}").exists()


def test_the_written_files_belong_to_the_pods_user(ran: tuple[Client, Kubelet]) -> None:
    _, kubelet = ran
    [state] = [s for s in kubelet.jobs.values() if s.name == "writes-only-its-volumes"]
    assert state.pod is not None
    out = state.pod.root / "volumes" / "scratch" / "out"
    assert (out.stat().st_uid, out.stat().st_gid) == (1000, 2000)  # fsGroup: the volume's setgid group
    assert (state.pod.root / "container.log").read_text().strip().endswith("{}")
