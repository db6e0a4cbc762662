"""A kubelet for the API emulator: runs each Job's container command as a local process, writes status back.

It does what a node would for the trainer's Job: resolves env from Secrets and ConfigMaps, materialises
volumes as local folders (a ConfigMap volume gets its files), maps the container's paths onto them, runs
the command from the installed package (no image is pulled), enforces activeDeadlineSeconds, retries up
to backoffLimit, honours spec.suspend, and writes Pod and Job status (with the termination message) as
a real cluster would. It enforces the pod's securityContext when it can (root with setpriv; see
harness.podsecurity): the command runs as runAsUser/runAsGroup with only the writable volumes writable, TMPDIR on the
volume mounted at /tmp, and anything the user wrote elsewhere is a violation (Kubelet.violations; leaving the
`with` block raises on any).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emulator import ApiStatusError, Client, job_path, path
from harness import podsecurity
from harness.podsecurity import Identity

HOST_INSTALL = tuple(sorted({sys.prefix, sys.base_prefix, str(Path(__file__).resolve().parents[2])}))
"""What stands in for the image: the interpreter, the venv and the checkout. Their paths are never mapped onto a
volume, even when the checkout lies under a mount path such as /tmp (CI clones into any folder)."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodRun:
    """One attempt (pod) of a Job."""

    name: str
    proc: subprocess.Popen[bytes]
    started: float
    root: Path
    termination_log: Path
    killed_for: str | None = None
    runs_as: Identity | None = None
    """Who the command runs as (None: as this process, the securityContext not enforced)."""
    volumes: list[Path] = field(default_factory=list)
    """The pod's writable volume folders."""
    since: float = 0.0
    """Wall-clock start (writes elsewhere are looked for from then on)."""


@dataclass
class JobState:
    """What the kubelet tracks per Job."""

    namespace: str
    name: str
    uid: str
    failures: int = 0
    pod: PodRun | None = None
    done: bool = False
    suspended: bool = False
    started: float | None = None
    attempts: list[str] = field(default_factory=list)


class Kubelet:
    """Polls the emulator for Jobs and runs them; `start()` / `stop()` from a test."""

    def __init__(
        self,
        client: Client,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        poll: float = 0.3,
        enforce: bool | None = None,
    ):
        """`enforce`: run pods as their securityContext's user (None: whenever podsecurity.can_enforce())."""
        self.client = client
        self.enforce = podsecurity.can_enforce() if enforce is None else enforce
        if self.enforce and not podsecurity.can_enforce():
            raise RuntimeError("enforcing the pod's securityContext needs root, Linux and setpriv")
        self.workdir = podsecurity.new_tree() if self.enforce else workdir
        self.violations: list[str] = []
        """Writes outside a pod's writable volumes (pod name: path), found when its command ended."""
        self.ran_as: dict[str, Identity] = {}
        """Pod name -> the user its command ran as (enforced pods only)."""
        self.extra_env = extra_env or {}
        self.poll = poll
        self.jobs: dict[str, JobState] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Kubelet:
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)
        for state in self.jobs.values():
            if state.pod and state.pod.proc.poll() is None:
                self._kill(state.pod, "KubeletStopped")

    def __enter__(self) -> Kubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.enforce:
            self.cleanup()  # the harness's own tree under the temp folder
        if self.violations and exc[0] is None:
            raise AssertionError("pods wrote outside their writable volumes: " + "; ".join(self.violations))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for job in self.client.list(path("batch", "v1", "jobs")):
                    self._sync(job)
            except Exception as exc:  # keep playing the node; tests read self.errors
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll)

    # ---- one Job ---------------------------------------------------------------------------------
    def _sync(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job["spec"]
        state = self.jobs.setdefault(meta["uid"], JobState(meta["namespace"], meta["name"], meta["uid"]))
        if state.done:
            return
        pod = state.pod
        if spec.get("suspend"):
            if pod and pod.proc.poll() is None:
                self._kill(pod, "Suspended")
                self._finish_pod(state, pod, suspended=True)
            if not state.suspended:
                state.suspended = True
                self._patch_job(state, {"active": 0, "conditions": [self._cond("Suspended", "JobSuspended", "")]})
            return
        if state.suspended:
            state.suspended = False
            self._patch_job(state, {"conditions": [self._cond("Suspended", "JobResumed", "", "False")]})
        if pod is None:
            self._start_pod(state, job)
            return
        deadline = spec.get("activeDeadlineSeconds")
        if deadline and state.started and time.monotonic() - state.started > deadline and pod.proc.poll() is None:
            self._kill(pod, "DeadlineExceeded")
        if pod.proc.poll() is None:
            return
        code = self._finish_pod(state, pod)
        if code == 0:
            state.done = True
            self._patch_job(
                state,
                {"active": 0, "succeeded": 1, "completionTime": _now(),
                 "conditions": [self._cond("SuccessCriteriaMet", "CompletionsReached", ""),
                                self._cond("Complete", "CompletionsReached", "")]},
            )  # fmt: skip
            return
        state.failures += 1
        if pod.killed_for == "DeadlineExceeded":
            self._fail_job(state, "DeadlineExceeded", "Job was active longer than specified deadline")
        elif state.failures > int(spec.get("backoffLimit", 6)):
            self._fail_job(state, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        else:
            self._patch_job(state, {"active": 0, "failed": state.failures})
            self._start_pod(state, job)

    def _fail_job(self, state: JobState, reason: str, message: str) -> None:
        state.done = True
        self._patch_job(
            state,
            {"active": 0, "failed": state.failures,
             "conditions": [self._cond("FailureTarget", reason, message), self._cond("Failed", reason, message)]},
        )  # fmt: skip

    @staticmethod
    def _cond(kind: str, reason: str, message: str, status: str = "True") -> dict[str, Any]:
        now = _now()
        return {"type": kind, "status": status, "reason": reason, "message": message,
                "lastProbeTime": now, "lastTransitionTime": now}  # fmt: skip

    def _patch_job(self, state: JobState, status: dict[str, Any]) -> None:
        try:
            self.client.patch(job_path(state.namespace, state.name, "status"), {"status": status})
        except ApiStatusError as exc:
            if exc.code != 404:  # the Job was deleted meanwhile
                raise

    # ---- pods ------------------------------------------------------------------------------------
    def _value_from(self, namespace: str, source: dict[str, Any]) -> str | None:
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = self.client.get(path("", "v1", "secrets", namespace, ref["name"]))
            if ref["key"] in secret.get("stringData", {}):
                return str(secret["stringData"][ref["key"]])
            return base64.b64decode(secret["data"][ref["key"]]).decode()
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return str(self.client.get(path("", "v1", "configmaps", namespace, ref["name"]))["data"][ref["key"]])
        return None

    def _materialise(
        self, namespace: str, pod_spec: dict[str, Any], root: Path, who: Identity | None
    ) -> tuple[dict[str, Path], list[Path]]:
        """Local folders for the pod's volumes (ConfigMap items written out): (volume name -> folder, the writable
        ones). Enforced (`who`): writable volumes belong to the pod's user, the rest of the pod folder to root."""
        folders, writable = {}, []
        for volume in pod_spec.get("volumes", []):
            folder = root / "volumes" / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                data = self.client.get(path("", "v1", "configmaps", namespace, volume["configMap"]["name"]))["data"]
                items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    (folder / item["path"]).write_text(data[item["key"]])
            folders[volume["name"]] = folder
            if podsecurity.writable(volume):
                writable.append(folder)
        if who is not None:
            podsecurity.read_only(root)
            for folder in writable:
                podsecurity.own(folder, who)
        return folders, writable

    def _start_pod(self, state: JobState, job: dict[str, Any]) -> None:
        template = job["spec"]["template"]
        pod_spec = template["spec"]
        container = pod_spec["containers"][0]
        pod_name = f"{state.name}-{uuid.uuid4().hex[:5]}"
        root = self.workdir / state.namespace / pod_name
        who = podsecurity.identity(pod_spec, container) if self.enforce else None
        if who is not None and who.uid == 0:
            who = None  # root in the pod: nothing to drop to
        folders, writable = self._materialise(state.namespace, pod_spec, root, who)
        mounts = {m["mountPath"]: folders[m["name"]] for m in container.get("volumeMounts", [])}
        termination = root / "termination-log"
        mounts[container.get("terminationMessagePath", "/dev/termination-log")] = termination
        if who is not None:
            termination.touch()
            os.chown(termination, who.uid, who.gid)

        def local(value: str) -> str:
            if any(value == k or value.startswith(k + "/") for k in HOST_INSTALL):
                return value  # the image's own files (the interpreter, the package), wherever the checkout lies
            for mount, folder in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
                if value == mount or value.startswith(mount + "/"):
                    return str(folder) + value[len(mount) :]
            return value

        env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", **self.extra_env}
        for item in container.get("env", []):
            value = item.get("value")
            if value is None and "valueFrom" in item:
                value = self._value_from(state.namespace, item["valueFrom"])
            env[item["name"]] = local(value or "")
        if "/tmp" in mounts and "TMPDIR" not in env:
            env["TMPDIR"] = str(mounts["/tmp"])  # what mounting a volume at /tmp does for tempfile & co.
        command = [local(a) for a in container.get("command", []) + container.get("args", [])]
        if command and command[0] == "kretrain":
            command[0] = str(Path(sys.executable).parent / "kretrain")  # the installed package, not an image
        if who is not None:
            command = podsecurity.wrap(command, who)
            self.ran_as[pod_name] = who
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": state.namespace,
                "labels": {**template.get("metadata", {}).get("labels", {}), "job-name": state.name,
                           "batch.kubernetes.io/job-name": state.name, "controller-uid": state.uid},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": state.name, "uid": state.uid,
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": pod_spec,
        }  # fmt: skip
        self.client.create(path("", "v1", "pods", state.namespace), pod)
        log = (root / "container.log").open("wb")
        since = time.time() - 1.0  # ctime granularity
        proc = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        state.pod = PodRun(
            pod_name, proc, time.monotonic(), root, termination, runs_as=who, volumes=writable, since=since
        )
        state.attempts.append(pod_name)
        state.started = state.started or time.monotonic()
        self._patch_pod(state, pod_name, {"phase": "Running", "startTime": _now()})
        self._patch_job(state, {"active": 1, "startTime": _now(), "failed": state.failures})

    def _kill(self, pod: PodRun, why: str) -> None:
        pod.killed_for = why
        try:
            os.killpg(pod.proc.pid, signal.SIGTERM)
            pod.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(pod.proc.pid, signal.SIGKILL)
            pod.proc.wait()

    def _finish_pod(self, state: JobState, pod: PodRun, suspended: bool = False) -> int:
        code = pod.proc.wait()
        if pod.runs_as is not None:
            elsewhere = podsecurity.written_elsewhere(pod.runs_as, pod.since)
            elsewhere += podsecurity.written_in_pod_folder(pod.root, pod.volumes, pod.runs_as)
            self.violations += [f"{pod.name}: {p}" for p in elsewhere]
        message = pod.termination_log.read_text()[:4096] if pod.termination_log.exists() else ""
        if not message and code != 0:  # terminationMessagePolicy: FallbackToLogsOnError
            log = pod.root / "container.log"
            message = log.read_bytes()[-2048:].decode(errors="replace") if log.exists() else ""
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "message": message,
                      "finishedAt": _now()}  # fmt: skip
        self._patch_pod(
            state, pod.name,
            {"phase": "Succeeded" if code == 0 else "Failed",
             "containerStatuses": [{"name": "trainer", "ready": False, "restartCount": 0,
                                    "state": {"terminated": terminated}}]},
        )  # fmt: skip
        state.pod = None if suspended else pod
        return code

    def _patch_pod(self, state: JobState, name: str, status: dict[str, Any]) -> None:
        try:
            self.client.patch(path("", "v1", "pods", state.namespace, name, "status"), {"status": status})
        except ApiStatusError as exc:
            if exc.code != 404:
                raise

    def cleanup(self) -> None:
        """Remove the pods' local folders."""
        shutil.rmtree(self.workdir, ignore_errors=True)
