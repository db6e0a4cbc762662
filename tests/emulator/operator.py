"""Run the real `kretrain operator` as a process against the emulator (start, stop, kill, logs)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

KRETRAIN = str(Path(sys.executable).with_name("kretrain"))
PRELOAD = (
    "import sys\n"
    "import kretrain.operator.handlers, kretrain.operator.schedule_handlers\n"
    "from kretrain.cli import main\n"
    "kretrain.operator.handlers.deps()\n"  # the Kubernetes client's typed APIs: the slowest import
    "if not sys.stdin.readline():\n"  # the test process went away before starting it
    "    sys.exit(0)\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
"""`kretrain <args>` (the console script's `kretrain.cli:main`) once a line arrives on stdin, its imports done
before: `OperatorProcess.prestart()`."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """`kretrain operator --standalone` pointed at an emulator URL; env adds/overrides KRETRAIN_* settings; args
    (after `kretrain`) replace the default command line (tests/emulator/replicas.py: the chart's)."""

    def __init__(
        self,
        kube_url: str,
        log: Path,
        namespaces: list[str],
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.kube_url, self.log, self.namespaces, self.args = kube_url, log, namespaces, args
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "KRETRAIN_KUBE_URL": kube_url,
            "KRETRAIN_METRICS_PORT": str(self.metrics_port),
            "KRETRAIN_POLL_INTERVAL": "0.5",
            "KRETRAIN_RETRY_DELAY": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.gated: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        default = ["operator", "--standalone"] + [f"--namespace={ns}" for ns in self.namespaces]
        return default if self.args is None else self.args

    def start(self) -> OperatorProcess:
        """Run the operator (at once when `prestart` loaded it)."""
        if self.gated is not None:
            proc, self.gated = self.gated, None
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            self.proc = proc
            return self
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start #{self.starts} =====\n".encode())
            self.proc = subprocess.Popen(
                [KRETRAIN, *self.command()], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def prestart(self) -> OperatorProcess:
        """Load the next process's modules now (several seconds on a busy machine) and hold it before `main`: the
        following `start()` then runs the same command line at once. Tests that start replicas one after the
        other (the peering tests) or restart them quickly (the chaos test) overlap the imports this way."""
        if self.gated is None:
            self.starts += 1
            with self.log.open("ab") as out:
                out.write(f"\n===== start #{self.starts} =====\n".encode())
                self.gated = subprocess.Popen(
                    [sys.executable, "-c", PRELOAD, *self.command()],
                    env=self.env,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the operator's /healthz answers (its startup handler ran)."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"operator not ready after {timeout}s\n{self.tail()}")

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (graceful) or SIGKILL (a crash); a prestarted process that never started is killed."""
        if self.gated is not None:
            self.gated.kill()
            self.gated.wait(10)
            self.gated = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
