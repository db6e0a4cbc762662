"""The operator↔pod contract: the trainer pod's environment and paths, one model for Job builder, local runner and pod."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kretrain.api.spec import VERSION_PATTERN

SPEC_DIR = "/etc/kretrain"
"""Mount path of the ConfigMap with the resolved spec (read-only)."""
SPEC_FILE = "spec.json"
"""File name of the resolved spec in SPEC_DIR (`kretrain train --spec /etc/kretrain/spec.json`)."""
STAGE_KEY_FILE = "stage.key"
"""File name of the run's stage key in SPEC_DIR (the ConfigMap): the HMAC key of the run's resume records."""
SCRATCH_DIR = "/scratch"
"""Mount path of the scratch emptyDir (KRETRAIN_WORKDIR in a pod)."""
CACHE_DIR = "/cache"
"""Mount path of the dataset cache volume (KRETRAIN_CACHE_DIR in a pod)."""
TMP_DIR = "/tmp"
"""Mount path of the tmp emptyDir: HOME and every library's config and cache (the root filesystem is read-only)."""
SHM_DIR = "/dev/shm"
"""Mount path of the memory-backed emptyDir for the data loader's shared memory."""
TERMINATION_LOG = "/dev/termination-log"
"""The container's terminationMessagePath (KRETRAIN_TERMINATION_LOG in a pod)."""
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
"""Credential variables: in a Job only `valueFrom.secretKeyRef` of the run's credentials Secret, never values."""

_OPERATOR = "operator (jobs.build_job)"
_LOCAL = "`kretrain run` (local.py)"
_BOTH = f"{_OPERATOR}; {_LOCAL}"


def _var(env: str, set_by: str, **kw: Any) -> Any:
    """A contract field read from and written to the environment variable `env`."""
    return Field(alias=env, json_schema_extra={"setBy": set_by}, **kw)


class PodContractError(ValueError):
    """The pod's environment does not satisfy the contract; the message names each variable and what is wrong."""


class PodContract(BaseModel):
    """What the trainer pod gets besides the spec file: one environment variable per field (docs/internals.md).

    `to_env()` gives the variables the Job builder and the local runner set; `from_env()` reads them in the pod.
    Credentials are not part of it: they reach the pod only as `secretKeyRef`s (CREDENTIAL_ENV).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True, frozen=True)

    run_id: str = _var("KRETRAIN_RUN_ID", f"{_BOTH}; `kretrain train --run-id`", pattern=VERSION_PATTERN)
    """The run id, which is also the registry version the run registers (`<namespace>-<name>-<uid8>` from the
    operator, `local-<timestamp>-<pid>` from `kretrain run`)."""
    incumbent_version: str | None = _var(
        "KRETRAIN_INCUMBENT_VERSION", _BOTH, default=None, pattern=VERSION_PATTERN.replace("^", "^$|^", 1)
    )
    """The incumbent when the run was created, evaluated beside the candidate: a version, empty for none;
    unset: the pod asks the registry."""
    workdir: Path = _var("KRETRAIN_WORKDIR", f"{_BOTH}; `kretrain train --workdir`", default=Path(SCRATCH_DIR))
    """Scratch folder: prepared data, Ultralytics outputs, checks, evaluation."""
    cache_dir: Path = _var("KRETRAIN_CACHE_DIR", f"{_BOTH}; `kretrain train --cache-dir`", default=Path(CACHE_DIR))
    """Local mirror of the dataset (kept across runs when the volume is)."""
    termination_log: Path = _var("KRETRAIN_TERMINATION_LOG", _BOTH, default=Path(TERMINATION_LOG))
    """Where the pod writes its one-paragraph summary (JSON) on exit: the container's terminationMessagePath."""
    endpoint: str | None = _var("AWS_ENDPOINT_URL", _BOTH, default=None)
    """S3 endpoint URL (= the resolved spec.storage.endpoint; unset: AWS itself)."""
    region: str | None = _var("AWS_DEFAULT_REGION", _OPERATOR, default=None)
    """S3 region the requests are signed for (= the resolved spec.storage.region; SigV4 signs the region)."""
    home: Path | None = _var("HOME", _OPERATOR, default=None)
    """Home folder, on the writable tmp volume in a pod (unset: the process's own)."""
    yolo_config_dir: Path | None = _var("YOLO_CONFIG_DIR", _OPERATOR, default=None)
    """Ultralytics' settings folder (unset: `<workdir>/yolo-config`)."""
    mpl_config_dir: Path | None = _var("MPLCONFIGDIR", _OPERATOR, default=None)
    """Matplotlib's config and font cache (unset: under YOLO_CONFIG_DIR)."""
    stage_key_file: Path | None = _var("KRETRAIN_STAGE_KEY_FILE", _OPERATOR, default=None)
    """The run's stage key (random, from the run's ConfigMap): the pod signs its checkpoint record and stages
    with it and ignores ones it does not sign (kretrain.trainer.runkey; unset: records are not signed)."""

    @classmethod
    def env_names(cls) -> list[str]:
        """The contract's variable names, in field order."""
        return [str(f.alias) for f in cls.model_fields.values()]

    @classmethod
    def in_cluster(
        cls, *, run_id: str, incumbent_version: str | None, endpoint: str | None, region: str
    ) -> PodContract:
        """The contract of a training Job: the volumes' mount paths, HOME and library configs on /tmp."""
        return cls(
            run_id=run_id,
            incumbent_version=incumbent_version or "",
            endpoint=endpoint or None,
            region=region,
            home=Path(TMP_DIR),
            yolo_config_dir=Path(TMP_DIR) / "ultralytics",
            mpl_config_dir=Path(TMP_DIR) / "matplotlib",
            stage_key_file=Path(SPEC_DIR) / STAGE_KEY_FILE,
        )

    def to_env(self) -> dict[str, str]:
        """The variables to set (unset fields are left out; an empty incumbent is kept: it means none)."""
        return {str(k): str(v) for k, v in self.model_dump(by_alias=True, exclude_none=True).items()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> PodContract:
        """Read the contract from an environment; `overrides` (command-line values, not None) win.

        An empty variable counts as unset, except KRETRAIN_INCUMBENT_VERSION (empty: no incumbent).
        Raises PodContractError naming each missing or invalid variable.
        """
        fields = cls.model_fields
        raw: dict[str, Any] = {}
        for name, field in fields.items():
            value = environ.get(str(field.alias))
            if value is not None and (value != "" or name == "incumbent_version"):
                raw[name] = value
        raw.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise TypeError(f"PodContract.from_env: unknown overrides {unknown}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                name = str(err["loc"][0]) if err["loc"] else ""
                env = fields[name].alias if name in fields else name
                problems.append(f"{env}: {'not set' if err['type'] == 'missing' else err['msg']}")
            raise PodContractError("pod environment: " + "; ".join(problems)) from None


PATHS = (
    (
        SPEC_DIR,
        "spec",
        f"the run's ConfigMap: the resolved spec ({SPEC_FILE}) and stage key ({STAGE_KEY_FILE}), read-only",
    ),
    (SCRATCH_DIR, "scratch", "emptyDir (spec.resources.scratchSize): KRETRAIN_WORKDIR"),
    (CACHE_DIR, "cache", "the dataset cache volume (an emptyDir of spec.resources.cacheSize): KRETRAIN_CACHE_DIR"),
    (TMP_DIR, "tmp", "emptyDir (spec.resources.tmpSize): HOME, YOLO_CONFIG_DIR, MPLCONFIGDIR"),
    (SHM_DIR, "dshm", "memory-backed emptyDir (spec.resources.shmSize): the data loader's shared memory"),
    (TERMINATION_LOG, "-", "terminationMessagePath (FallbackToLogsOnError): KRETRAIN_TERMINATION_LOG"),
)
"""The pod's paths: (mount path, volume name, what it holds); everything else is the read-only root filesystem."""


def contract_table() -> str:
    """The pod contract as Markdown (docs/internals.md, "Pod contract"): every variable with its meaning, who
    sets it, what a Job sets and the pod's default; then the paths."""
    job = PodContract.model_construct(
        run_id="<run id>", incumbent_version="<incumbent, or empty>", endpoint="<spec.storage.endpoint>",
        region="<spec.storage.region>", home=Path(TMP_DIR), yolo_config_dir=Path(TMP_DIR) / "ultralytics",
        mpl_config_dir=Path(TMP_DIR) / "matplotlib", stage_key_file=Path(SPEC_DIR) / STAGE_KEY_FILE,
    ).to_env()  # fmt: skip
    rows = ["| Variable | Meaning | Set by | In a Job | Pod default |", "|---|---|---|---|---|"]
    for field in PodContract.model_fields.values():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        meaning = " ".join((field.description or "").split())
        default = "required" if field.is_required() else ("unset" if field.default is None else f"`{field.default}`")
        rows.append(
            f"| `{field.alias}` | {meaning} | {extra.get('setBy', '')} | `{job[str(field.alias)]}` | {default} |"
        )
    for key in CREDENTIAL_ENV:
        rows.append(
            f"| `{key}` | S3 credential of the run (never in the spec, never a value in the Job) | operator: "
            "`secretKeyRef` to spec.storage.credentialsSecret; `kretrain run`: the caller's environment | "
            f"`secretKeyRef` {key} | required |"
        )
    rows += ["", "| Path | Volume | Holds |", "|---|---|---|"]
    rows += [f"| `{path}` | {volume} | {meaning} |" for path, volume, meaning in PATHS]
    return "\n".join(rows)
