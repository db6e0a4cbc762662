"""What can be checked of the images without building them: sources, base images, users, entrypoints, settings."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kretrain.api.pod import PodContract
from kretrain.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"operator": ROOT / "operator" / "Dockerfile", "trainer": ROOT / "trainer" / "Dockerfile"}


@dataclass
class Stage:
    """One FROM stage of a Dockerfile."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """Arguments of every instruction with this keyword."""
        return [args for kw, args in self.instructions if kw == keyword]


def parse(path: Path) -> list[Stage]:
    """A Dockerfile as stages of (KEYWORD, arguments), continuations joined, comments dropped, ARGs in FROM resolved."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, f"{path}: dangling line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            stages.append(Stage(base=base, name=parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
        else:
            assert stages, f"{path}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def exec_form(args: str) -> list[str]:
    """The JSON exec form of ENTRYPOINT/CMD (shell form is not allowed: signals would not reach kretrain)."""
    assert args.startswith("["), f"use the exec form, got {args!r}"
    return [str(x) for x in json.loads(args)]


def dockerignore() -> list[str]:
    """Patterns of .dockerignore."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def ignored(rel: str) -> bool:
    """Whether .dockerignore drops this path (or a parent) from the build context."""
    parts = Path(rel).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/"))
        for p in prefixes
        for pat in dockerignore()
    )


def torch_pin() -> str:
    """The torch version pinned in constraints.txt."""
    match = re.search(r"^torch==([0-9.]+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert match, "constraints.txt pins no torch version"
    return match.group(1)


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_copy_sources_exist_in_the_build_context(image: str) -> None:
    for stage in parse(DOCKERFILES[image]):
        for args in stage.all("COPY"):
            words = shlex.split(args)
            if any(w.startswith("--from=") for w in words):
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            assert sources, f"COPY without source: {args}"
            for src in sources:
                path = ROOT / src
                assert path.exists(), f"{image}/Dockerfile copies {src}, which does not exist"
                assert not ignored(src.rstrip("/")), f"{src} is excluded by .dockerignore"
                if path.is_dir():
                    assert any(path.iterdir()), f"{src} is empty"


@pytest.mark.parametrize(("image", "command"), [("operator", "operator"), ("trainer", "train")])
def test_entrypoint_is_a_registered_kretrain_command(image: str, command: str) -> None:
    final = parse(DOCKERFILES[image])[-1]
    entrypoint = exec_form(final.all("ENTRYPOINT")[-1])
    cmd = exec_form(final.all("CMD")[-1])
    assert entrypoint == ["kretrain"]
    assert cmd[0] == command
    args = build_parser().parse_args(cmd)  # exits (SystemExit) on an unknown command or option
    assert args.command == command


def test_trainer_command_matches_the_operator_job() -> None:
    """The trainer image's default command is what the operator's Job runs."""
    from kretrain.operator import jobs

    final = parse(DOCKERFILES["trainer"])[-1]
    command = exec_form(final.all("ENTRYPOINT")[-1]) + exec_form(final.all("CMD")[-1])
    assert command == ["kretrain", "train", "--spec", f"{jobs.SPEC_DIR}/{jobs.SPEC_FILE}"]
    assert command == ["kretrain", "train", "--spec", "/etc/kretrain/spec.json"]


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_runs_as_non_root(image: str) -> None:
    final = parse(DOCKERFILES[image])[-1]
    users = final.all("USER")
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) == 1000, "numeric non-root uid (runAsNonRoot can check it)"
    # USER is the last instruction that changes who runs; nothing after it runs as root.
    after = final.instructions[[kw for kw, _ in final.instructions].index("USER") :]
    assert not any(kw == "RUN" for kw, _ in after), "RUN after USER would need root"


@pytest.mark.parametrize(("image", "extra"), [("operator", "operator"), ("trainer", "trainer")])
def test_pip_install_uses_constraints_and_only_its_extra(image: str, extra: str) -> None:
    final = parse(DOCKERFILES[image])[-1]
    installs = [r for r in final.all("RUN") if "pip install" in r]
    assert len(installs) == 1
    words = shlex.split(installs[0].split("&&")[0])
    c = words.index("-c")
    assert words[c + 1].endswith("constraints.txt")
    copies = [shlex.split(a) for a in final.all("COPY")]
    assert any(w[0] == "constraints.txt" and w[-1] == words[c + 1] for w in copies), "constraints.txt copied there"
    targets = [w for w in words if "kretrain" in w and "[" in w]
    assert targets == ["$(ls /wheels/kretrain-*.whl)[" + extra + "]"]
    assert "-e" not in words and "--editable" not in words
    # The wheel is built in a stage of its own from the package sources (kretrain/: no folder shadows the
    # standard library, so plain `python` works there).
    build = parse(DOCKERFILES[image])[0]
    assert any("python -m pip wheel" in r for r in build.all("RUN"))
    assert [shlex.split(a)[0] for a in build.all("COPY") if "kretrain/" in a] == ["kretrain/"]


def test_base_images() -> None:
    operator = parse(DOCKERFILES["operator"])
    assert operator[-1].base == "python:3.11-slim"
    trainer = parse(DOCKERFILES["trainer"])
    match = re.fullmatch(r"pytorch/pytorch:([0-9.]+)-cuda[0-9.]+-cudnn[0-9]+-runtime", trainer[-1].base)
    assert match, f"trainer base should be a CUDA PyTorch runtime image, got {trainer[-1].base}"
    assert match.group(1) == torch_pin(), "the base image's torch must be the version pinned in constraints.txt"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"


def env_of(stage: Stage) -> dict[str, str]:
    """ENV key=value pairs of a stage."""
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def test_trainer_is_set_up_for_offline_ultralytics() -> None:
    final = parse(DOCKERFILES["trainer"])[-1]
    env = env_of(final)
    assert env["YOLO_OFFLINE"] == "1"
    assert env["YOLO_AUTOINSTALL"] == "false"
    # The same writable locations the operator gives the training container (read-only root, /tmp emptyDir).
    job_env = PodContract.in_cluster(run_id="r", incumbent_version=None, endpoint=None, region="us-east-1").to_env()
    for key in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR", "HOME"):
        assert env[key] == job_env[key], key
        assert env[key].startswith("/tmp")
    runs = " ".join(final.all("RUN"))
    assert "DejaVuSans.ttf" in runs
    assert "${YOLO_CONFIG_DIR}/Ultralytics/Arial.ttf" in runs


def test_every_python_package_is_in_the_wheel() -> None:
    """The images install a wheel, not the source tree: every package folder is found by pyproject's package
    discovery, and no Python code lives outside kretrain/ (a top-level `operator` package would shadow the stdlib)."""
    from setuptools import find_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    declared = set(find_packages(str(ROOT), include=find["include"]))
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "kretrain").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found and found == declared, f"packages the wheel would miss: {found - declared}"
    assert {"kretrain.operator", "kretrain.trainer", "kretrain.trainer.data"} <= declared
    for folder in ("operator", "trainer"):
        assert not list((ROOT / folder).rglob("*.py")), f"{folder}/ must hold no Python code (it would shadow or split)"


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    for path in (".git", ".venv", "tests", "runs", "model.pt", "kretrain/__pycache__"):
        assert ignored(path), path
    for path in ("kretrain", "operator", "trainer", "pyproject.toml", "constraints.txt", "README.md"):
        assert not ignored(path), path


# Top-level modules each image lacks: the operator image has no trainer extra, the trainer image no operator extra.
MISSING_IN_IMAGE = {
    "operator": ["torch", "torchvision", "ultralytics", "numpy", "PIL", "matplotlib", "cv2"],
    "trainer": ["kopf", "kubernetes", "prometheus_client"],
}
CLI_PROBE = """
import importlib.abc, json, sys
blocked = set(json.loads(sys.argv[1]))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
from kretrain.api.pod import PodContract
from kretrain.cli import build_parser
parser = build_parser()
args = parser.parse_args(json.loads(sys.argv[2]))
print(args.command)
"""


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_cli_starts_without_the_other_images_extra(image: str) -> None:
    """`kretrain` with only this image's extra installed: the CLI builds and the image's command parses."""
    final = parse(DOCKERFILES[image])[-1]
    cmd = exec_form(final.all("CMD")[-1])
    result = subprocess.run(
        [sys.executable, "-P", "-c", CLI_PROBE, json.dumps(MISSING_IN_IMAGE[image]), json.dumps(cmd)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT / "tests",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == cmd[0]
