"""Operator settings from the environment (prefix KRETRAIN_), via pydantic-settings."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kretrain.api.spec import S3_URI_PATTERN
from kretrain.operator.policy import PolicyError, canonical_endpoint
from kretrain.resolve import SpecDefaults


class OperatorSettings(BaseSettings):
    """How the operator reaches the API server, S3 and the registry, and what its Jobs look like.

    S3 credentials of the operator itself come only from its own environment (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, from a Secret in the Deployment); training pods get theirs from the
    Secret named in the RetrainJob (or `credentials_secret`).
    """

    model_config = SettingsConfigDict(env_prefix="KRETRAIN_", extra="ignore", use_attribute_docstrings=True)

    kube_url: str | None = None
    """API server URL to use without credentials (tests and the emulator); unset: in-cluster or kubeconfig."""
    registry: str | None = Field(default=None, pattern=S3_URI_PATTERN)
    """Default model registry (`s3://bucket/prefix`) for RetrainJobs whose spec names none."""
    s3_endpoint: str | None = None
    """Default S3 endpoint URL (unset: AWS_ENDPOINT_URL or AWS itself)."""
    s3_region: str = Field(default="us-east-1", pattern=r"^[a-z0-9\-]+$")
    """Default S3 region (SigV4 signs it): of RetrainJobs whose spec.storage.region is unset (their pods get it as
    AWS_DEFAULT_REGION) and of the operator's own calls to the default registry."""
    credentials_secret: str = "kretrain-s3"
    """Default Secret (in the RetrainJob's namespace) with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for pods."""
    namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Namespaces to watch (comma-separated in the environment); empty: the whole cluster."""
    trainer_image: str = "ghcr.io/kretrain/trainer:0.1.0"
    """Trainer image used when a RetrainJob names none."""
    trainer_service_account: str | None = None
    """ServiceAccount of training pods (unset: the namespace default; its token is never mounted)."""
    default_queue_name: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?$")
    """Kueue LocalQueue of RetrainJobs whose spec.resources.queueName is unset (unset: their Jobs are not queued)."""
    multinode: Literal["indexedjob", "trainjob", "auto"] = "indexedjob"
    """What trains a RetrainJob with resources.nodes > 1: `indexedjob` (an Indexed Job + headless Service, plain
    Kubernetes), `trainjob` (a Kubeflow Trainer TrainJob on the torch-distributed runtime), or `auto` (a TrainJob
    when the trainjobs.trainer.kubeflow.org CRD is installed, else an Indexed Job). nodes: 1 is always one Job."""
    ttl_seconds_after_finished: int | None = Field(default=7 * 86400, ge=0)
    """ttlSecondsAfterFinished of training Jobs (unset: kept until the RetrainJob is deleted)."""
    poll_interval: float = Field(default=15.0, gt=0)
    """Seconds between checks of each running RetrainJob's Job and progress.json."""
    retry_delay: float = Field(default=10.0, gt=0)
    """Seconds before a handler that is waiting (e.g. S3 unreachable) tries again."""
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the Prometheus /metrics and /healthz endpoint (0: disabled)."""
    peering: str | None = None
    """Kopf peering object name when running several replicas (unset with `--standalone`)."""
    peering_lifetime: int = Field(default=60, ge=2, le=3600)
    """Seconds a replica's peering record stays valid without a keep-alive (kopf renews it 5-10 s sooner, at
    least every second): how long a standby waits before taking over from an active replica that died without
    withdrawing (SIGKILL, node loss). A replica that stops gracefully withdraws at once."""
    finalizer: str = "kretrain.dev/finalizer"
    """Finalizer the operator puts on RetrainJobs (Kopf needs one to stop per-object timers)."""

    # ---- operator policy (the cluster admin's bounds on what a RetrainJob may ask for; kretrain/operator/policy.py)
    allowed_images: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Trainer images a RetrainJob may name besides `trainer_image` (comma-separated): an entry with a tag or
    digest allows exactly that reference; an entry ending in `/`, `:` or `@` allows what continues it; any
    other entry is a repository (or path) allowing itself followed by `/`, `:` or `@`. Empty: only
    `trainer_image`."""
    allowed_credentials_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Secret names a RetrainJob may name in spec.storage.credentialsSecret besides `credentials_secret`
    (comma-separated, exact names). Empty: only `credentials_secret`."""
    allowed_s3_endpoints: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """S3 endpoint URLs a RetrainJob may name in spec.storage.endpoint besides `s3_endpoint` (comma-separated;
    compared exactly after normalising scheme, host, port and path). Empty: only `s3_endpoint`."""
    allowed_registries: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Registry prefixes (`s3://bucket[/prefix]`, comma-separated) a RetrainJob may name in
    spec.storage.registry besides `registry`: the operator reads reports and moves incumbent pointers there
    with its own credentials. A registry is allowed when it equals an entry or lies under it (at a `/`).
    Empty: only `registry`."""
    allowed_datasets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Dataset prefixes (`s3://bucket[/prefix]`, comma-separated) a RetrainSchedule may list with the operator's
    own credentials (equal to an entry or under it at a `/`). Empty: any prefix those credentials may list;
    set it (or scope the credentials) so that a schedule's author cannot read folder names elsewhere."""
    allowed_priority_classes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """PriorityClass names a RetrainJob may name in spec.resources.priorityClassName (comma-separated).
    Empty: none (the field must stay unset)."""
    allowed_toleration_keys: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["nvidia.com/gpu"])
    """Taint keys a RetrainJob's tolerations may name (comma-separated; empty string in the environment:
    none). A toleration without a key (it tolerates every taint) is never allowed."""

    allowed_webhook_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Webhook origins (`http(s)://host[:port]`, comma-separated) a RetrainJob may name in
    spec.serving.webhook.url: scheme, host and port compared exactly after normalising (default ports filled in).
    Empty: no webhook at all."""
    allowed_webhook_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Secret names (comma-separated, exact) a RetrainJob may name in spec.serving.webhook.secretRef: the operator
    reads the HMAC key from that Secret in the RetrainJob's namespace (its RBAC grants `get` on these names only).
    Empty: no webhook at all."""
    notify_retry_delay: float = Field(default=10.0, gt=0, le=3600)
    """Seconds before the second attempt to tell the serving side; each later one doubles (up to an hour)."""

    @field_validator(
        "namespaces",
        "allowed_images",
        "allowed_credentials_secrets",
        "allowed_s3_endpoints",
        "allowed_registries",
        "allowed_datasets",
        "allowed_priority_classes",
        "allowed_toleration_keys",
        "allowed_webhook_hosts",
        "allowed_webhook_secrets",
        mode="before",
    )
    @classmethod
    def _split(cls, value: object) -> object:
        """Accept comma-separated lists from the environment (`KRETRAIN_NAMESPACES=a,b`)."""
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _policy_endpoints_parse(self) -> OperatorSettings:
        """Every endpoint of the policy is a plain URL (a typo fails at start, not at the first RetrainJob)."""
        named = [("s3_endpoint", self.s3_endpoint)] if self.s3_endpoint else []
        for name, url in [*named, *(("allowed_s3_endpoints", u) for u in self.allowed_s3_endpoints)]:
            try:
                canonical_endpoint(url)
            except PolicyError as exc:
                raise ValueError(f"{name}: {url!r} {exc}") from None
        for url in self.allowed_webhook_hosts:
            try:
                if canonical_endpoint(url)[3]:
                    raise PolicyError("has a path (an entry is an origin: http(s)://host[:port])")
            except PolicyError as exc:
                raise ValueError(f"allowed_webhook_hosts: {url!r} {exc}") from None
        return self

    def spec_defaults(self) -> SpecDefaults:
        """What fills a RetrainJob's unset storage fields and image (kretrain.resolve.resolve_spec)."""
        return SpecDefaults(
            source="the operator (KRETRAIN_REGISTRY)",
            registry=self.registry,
            endpoint=self.s3_endpoint,
            region=self.s3_region,
            credentials_secret=self.credentials_secret,
            image=self.trainer_image,
        )


@lru_cache(maxsize=1)
def get_settings() -> OperatorSettings:
    """The settings of this process (read once)."""
    return OperatorSettings()
