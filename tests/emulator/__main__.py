"""Run the emulator as a process: `python -P tests/emulator [--port N] [--crd FILE]...`; prints the URL."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from emulator import Client, EmulatorServer


def main() -> int:
    parser = argparse.ArgumentParser(description="Kubernetes API emulator for kretrain tests")
    parser.add_argument("--port", type=int, default=0, help="port (0: a free one)")
    parser.add_argument("--crd", type=Path, action="append", default=[], help="CRD YAML to create at start")
    parser.add_argument("--namespace", action="append", default=[], help="namespace to create at start")
    args = parser.parse_args()
    server = EmulatorServer()
    url = server.start(args.port)
    client = Client(url)
    for ns in args.namespace:
        client.ensure_namespace(ns)
    for crd in args.crd:
        for doc in yaml.safe_load_all(crd.read_text()):
            client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", doc)
    print(url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
