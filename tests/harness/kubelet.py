"""A kubelet for the API emulator: runs each Job's container command as a local process, writes status back.

It does what a node (and the Job controller) would for the trainer's Job: runs an Indexed Job's indexes as
parallel pods (JOB_COMPLETION_INDEX, hostname `<job>-<index>`, the headless Service's DNS names resolving to this
host: harness.poddns), decides success and failure as the Job controller does (harness.jobcontrol: backoffLimit,
backoffLimitPerIndex, maxFailedIndexes, podFailurePolicy), resolves env from Secrets and ConfigMaps, materialises
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emulator import ApiStatusError, Client, job_path, path
from harness import jobcontrol, poddns, podsecurity
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
    """What the kubelet tracks per Job (an Indexed Job runs one pod per index at once)."""

    namespace: str
    name: str
    uid: str
    running: dict[int, PodRun] = field(default_factory=dict)
    """Index -> its pod now running."""
    last: dict[int, PodRun] = field(default_factory=dict)
    """Index -> its latest pod (running or ended)."""
    progress: jobcontrol.Progress = field(default_factory=jobcontrol.Progress)
    done: bool = False
    suspended: bool = False
    started: float | None = None
    attempts: list[str] = field(default_factory=list)
    ports: dict[int, int] = field(default_factory=dict)
    """containerPort -> the local port standing in for it (every pod here shares the host's loopback)."""

    @property
    def pod(self) -> PodRun | None:
        """The latest pod of index 0 (the only one of a NonIndexed Job)."""
        return self.last.get(0)

    @property
    def failures(self) -> int:
        return self.progress.failures


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
            for pod in state.running.values():
                if pod.proc.poll() is None:
                    self._kill(pod, "KubeletStopped")

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
        if spec.get("suspend"):
            for index, pod in list(state.running.items()):
                if pod.proc.poll() is None:
                    self._kill(pod, "Suspended")
                self._finish_pod(state, pod)
                del state.running[index]  # a suspended Job's pods are deleted, not failed
            if not state.suspended:
                state.suspended = True
                self._patch_job(state, {"active": 0, "conditions": [self._cond("Suspended", "JobSuspended", "")]})
            return
        if state.suspended:
            state.suspended = False
            self._patch_job(state, {"conditions": [self._cond("Suspended", "JobResumed", "", "False")]})
        deadline = spec.get("activeDeadlineSeconds")
        if deadline and state.started and time.monotonic() - state.started > deadline:
            self._fail_job(state, spec, ("DeadlineExceeded", "Job was active longer than specified deadline"))
            return
        changed = False
        for index, pod in sorted(state.running.items()):
            if pod.proc.poll() is None:
                continue
            changed = True
            del state.running[index]
            code = self._finish_pod(state, pod)
            if code == 0:
                state.progress.succeeded.add(index)
                verdict = jobcontrol.Verdict(False, jobcontrol.settled(spec, state.progress))
            else:
                action = jobcontrol.rule_action(spec, spec["template"]["spec"]["containers"][0]["name"], code, [])
                verdict = jobcontrol.pod_failed(spec, state.progress, index, action)
            if verdict.job_failed:
                self._fail_job(state, spec, verdict.job_failed)
                return
        if jobcontrol.complete(spec, state.progress):
            state.done = True
            self._patch_job(
                state,
                {**jobcontrol.status_counts(spec, state.progress, 0), "completionTime": _now(),
                 "conditions": [self._cond("SuccessCriteriaMet", "CompletionsReached", ""),
                                self._cond("Complete", "CompletionsReached", "")]},
            )  # fmt: skip
            return
        todo = [i for i in range(jobcontrol.completions(spec)) if i not in state.running
                and i not in state.progress.succeeded and i not in state.progress.failed_indexes]  # fmt: skip
        room = int(spec.get("parallelism", 1)) - len(state.running)
        for index in todo[: max(room, 0)]:
            self._start_pod(state, job, index)
            changed = True
        if changed:
            self._patch_job(state, {**jobcontrol.status_counts(spec, state.progress, len(state.running)),
                                    "startTime": _now()})  # fmt: skip

    def _fail_job(self, state: JobState, spec: dict[str, Any], why: tuple[str, str]) -> None:
        """The Job failed: its running pods are stopped (as the Job controller deletes them), then the status."""
        reason, message = why
        for pod in state.running.values():
            if pod.proc.poll() is None:
                self._kill(pod, reason)
            self._finish_pod(state, pod)
        state.running.clear()
        state.done = True
        self._patch_job(
            state,
            {**jobcontrol.status_counts(spec, state.progress, 0),
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
    def _value_from(self, namespace: str, source: dict[str, Any], fields: dict[str, str]) -> str | None:
        """An env value from a Secret, a ConfigMap or the pod's own fields (`fields`: fieldPath -> value)."""
        if "fieldRef" in source:
            return fields[source["fieldRef"]["fieldPath"]]  # KeyError: a field this harness does not give pods
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

    def _start_pod(self, state: JobState, job: dict[str, Any], index: int) -> None:
        template = job["spec"]["template"]
        pod_spec = dict(template["spec"])
        container = pod_spec["containers"][0]
        is_indexed = jobcontrol.indexed(job["spec"])
        pod_name = (
            f"{state.name}-{index}-{uuid.uuid4().hex[:5]}" if is_indexed else f"{state.name}-{uuid.uuid4().hex[:5]}"
        )
        extra_labels: dict[str, str] = {}
        if is_indexed:  # what the Job controller gives an Indexed Job's pod
            pod_spec["hostname"] = f"{state.name}-{index}"
            extra_labels["batch.kubernetes.io/job-completion-index"] = str(index)
        root = self.workdir / state.namespace / pod_name
        who = podsecurity.identity(pod_spec, container) if self.enforce else None
        if who is not None and who.uid == 0:
            who = None  # root in the pod: nothing to drop to
        root.mkdir(parents=True, exist_ok=True)  # a pod without volumes still has its folder (log, termination)
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

        image_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the image's PATH
        env = {"PATH": image_path, "LANG": "C.UTF-8", **self.extra_env}
        if is_indexed:
            env["JOB_COMPLETION_INDEX"] = str(index)
            env["HOSTNAME"] = pod_spec["hostname"]
        dns = self._dns(state, job)
        fields = {"metadata.name": pod_name, "metadata.namespace": state.namespace}
        if is_indexed:
            for where in ("annotations", "labels"):
                fields[f"metadata.{where}['batch.kubernetes.io/job-completion-index']"] = str(index)
        for item in container.get("env", []):
            value = item.get("value")
            if value is None and "valueFrom" in item:
                value = self._value_from(state.namespace, item["valueFrom"], fields)
            env[item["name"]] = dns(local(value or ""))
        if "/tmp" in mounts and "TMPDIR" not in env:
            env["TMPDIR"] = str(mounts["/tmp"])  # what mounting a volume at /tmp does for tempfile & co.
        command = [dns(local(a)) for a in container.get("command", []) + container.get("args", [])]
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
                "annotations": dict(extra_labels),
                "labels": {**template.get("metadata", {}).get("labels", {}), **extra_labels, "job-name": state.name,
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
        pod_run = PodRun(
            pod_name, proc, time.monotonic(), root, termination, runs_as=who, volumes=writable, since=since
        )
        state.running[index] = state.last[index] = pod_run
        state.attempts.append(pod_name)
        state.started = state.started or time.monotonic()
        self._patch_pod(state, pod_name, {"phase": "Running", "startTime": _now()})

    def _dns(self, state: JobState, job: dict[str, Any]) -> Callable[[str], str]:
        """The pod's view of cluster DNS (harness.poddns), with this Job's own local ports."""
        pod_spec = job["spec"]["template"]["spec"]
        for c in pod_spec["containers"]:
            for port in c.get("ports", []):
                state.ports.setdefault(int(port["containerPort"]), poddns.free_port())
        return poddns.resolver(state.name, state.namespace, pod_spec.get("subdomain"), state.ports)

    def _kill(self, pod: PodRun, why: str) -> None:
        pod.killed_for = why
        try:
            os.killpg(pod.proc.pid, signal.SIGTERM)
            pod.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(pod.proc.pid, signal.SIGKILL)
            pod.proc.wait()

    def _finish_pod(self, state: JobState, pod: PodRun) -> int:
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
