"""A trainer pod under the scoped S3 credentials docs/install.md recommends: read+list the dataset and its model
line, write only `<line>/runs/` and `<line>/versions/`. It trains, registers its version and never needs any
other write (every request it makes is recorded through a proxy); the operator's conclude (admin credentials)
promotes it; the trainer's credentials cannot move the pointer, the history or an alias, nor probe or promote."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from test_entrypoint import CLASSES, Pod, tiny_eras, tiny_spec

from harness.s3proxy import FaultProxy
from kretrain.aliases import get_alias, set_alias
from kretrain.api import RetrainJobSpec
from kretrain.condprobe import probe_conditional_writes
from kretrain.promotion import conclude
from kretrain.registry import Registry
from kretrain.s3server import LocalS3Server, S3Identity
from kretrain.store import AccessDenied, ObjectStore, PreconditionFailed
from kretrain.trainer.synthetic import generate_dataset, upload_dataset

pytestmark = pytest.mark.slow

BUCKET, MODEL, RUN = "scoped", "shapes", "scoped-1"
LINE = f"{BUCKET}/registry/{MODEL}"
# What docs/install.md ("Scope the trainer's S3 credentials") gives the trainer, in SeaweedFS's spelling.
TRAINER = S3Identity(
    name="trainer",
    access_key="trainer",
    secret_key="trainer-secret",
    actions=(
        f"Read:{BUCKET}/data/*", f"List:{BUCKET}/data/*", f"Read:{LINE}/*", f"List:{LINE}/*",
        f"Write:{LINE}/runs/*", f"Write:{LINE}/versions/*",
    ),
)  # fmt: skip


# A bare `*` after a folder name: SeaweedFS matches a plain string prefix, so this also covers `runsX/`.
LOOSE = S3Identity("loose", "loose", "loose-secret", actions=(f"Write:{LINE}/runs*",))


class RecordingProxy(FaultProxy):
    """The fault proxy with no faults queued: forwards every request unchanged and records it."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.seen: list[tuple[str, str, int]] = []  # (method, bucket/key?query, status)

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        status, answer_headers, payload = super()._forward(method, path, headers, body)
        with self._lock:
            self.seen.append((method, path, status))
        return status, answer_headers, payload


@dataclass
class _TrainerSide:
    """What `Pod` needs of its `s3`: the admin's keys for its own store, the trainer's env for the pod."""

    server: LocalS3Server
    endpoint: str
    proxy: str

    def env(self) -> dict[str, str]:
        return {**self.server.env(TRAINER), "AWS_ENDPOINT_URL": self.proxy}


@dataclass
class Scoped:
    server: LocalS3Server
    proxy: RecordingProxy
    admin: Registry
    trainer: Registry
    spec: RetrainJobSpec
    seconds: float


def _store(server: LocalS3Server, identity: S3Identity | None = None) -> ObjectStore:
    env = server.env(identity)
    return ObjectStore(server.endpoint, "us-east-1", env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


@dataclass
class Server:
    server: LocalS3Server
    proxy: RecordingProxy
    root: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """SeaweedFS with the admin, TRAINER and LOOSE identities, the bucket and the tiny dataset; the proxy in front."""
    root = tmp_path_factory.mktemp("scoped")
    with LocalS3Server(root / "s3", identities=[TRAINER, LOOSE]) as s3, RecordingProxy(s3.endpoint) as proxy:
        admin = _store(s3)
        admin.client.create_bucket(Bucket=BUCKET)
        generate_dataset(root / "dataset", tiny_eras(images=24), CLASSES)
        upload_dataset(root / "dataset", admin, f"s3://{BUCKET}/data")
        yield Server(s3, proxy, root)


@pytest.fixture(scope="module")
def scoped(server: Server) -> Scoped:
    """One training pod run under TRAINER's credentials, its requests recorded by the proxy."""
    s3, proxy = server.server, server.proxy
    pod = Pod(_TrainerSide(s3, s3.endpoint, proxy.endpoint), server.root, BUCKET)  # type: ignore[arg-type]
    raw = tiny_spec(BUCKET, proxy.endpoint, epochs=1, imgsz=32, checkpointIntervalSeconds=0)  # last.pt too
    raw["promotion"] = {"requiredChecks": ["finiteLoss"]}  # a 1-epoch model: the gate must pass on checks alone
    raw["export"] = {"formats": []}  # ONNX export doubles the run's CPU time; its artifacts go to versions/<run>/
    t0 = time.monotonic()
    assert pod.run(RUN, raw, incumbent="") == 0, pod.log(RUN)
    seconds = time.monotonic() - t0
    registry_uri = f"s3://{BUCKET}/registry"
    return Scoped(s3, proxy, Registry(_store(s3), registry_uri), Registry(_store(s3, TRAINER), registry_uri),
                  RetrainJobSpec.model_validate(raw), seconds)  # fmt: skip


def _key(path: str) -> str:
    """`bucket/key` of a path-style request path (query dropped)."""
    return unquote(urlsplit(path).path).lstrip("/")


def test_trainer_under_scoped_credentials_registers_and_writes_only_its_run(scoped: Scoped) -> None:
    seen = scoped.proxy.seen
    assert seen, "the pod sent nothing through the proxy"
    denied = [(m, p, s) for m, p, s in seen if s == 403]
    assert not denied, f"the trainer needed permissions beyond the scoped ones: {denied}"
    writes = sorted({(m, _key(p)) for m, p, _ in seen if m in ("PUT", "POST", "DELETE")})
    own = (f"{LINE}/runs/{RUN}/", f"{LINE}/versions/{RUN}/")
    assert writes and all(k.startswith(own) for _, k in writes), writes
    # The folders it wrote (for the record: docs/install.md lists them).
    folders = sorted({"/".join(k.split("/")[3 : 6 if "/runs/" in k else 5]) for _, k in writes})
    print(f"trainer writes ({scoped.seconds:.1f} s run, {len(seen)} requests):", folders)
    print("\n".join(f"  {m} {k}" for m, k in writes))
    assert {f"runs/{RUN}/last.pt", f"runs/{RUN}/last.pt.sha256", f"runs/{RUN}/report.json"} <= set(folders), folders
    assert any(k.endswith(f"/versions/{RUN}/version.json") for _, k in writes), writes
    reads = {_key(p) for m, p, _ in seen if m in ("GET", "HEAD")}
    assert all(k.startswith((f"{BUCKET}/data/", f"{LINE}/")) or k == BUCKET for k in reads), sorted(reads)
    # registered, not promoted: the pointer is the operator's
    report = scoped.admin.read_run_report(MODEL, RUN)
    assert report is not None and report.candidate is not None and report.candidate.version == RUN
    assert scoped.admin.version_info(MODEL, RUN).sha256 == report.candidate.sha256
    assert scoped.admin.incumbent(MODEL) is None


def test_operator_promotes_and_the_trainer_cannot_touch_pointer_history_or_aliases(scoped: Scoped) -> None:
    admin, trainer = scoped.admin, scoped.trainer
    report = admin.read_run_report(MODEL, RUN)
    assert report is not None
    outcome = conclude(admin, report, scoped.spec, actor="operator", run_id=RUN)
    assert outcome.reason == "Promoted", outcome
    ref = admin.incumbent(MODEL)
    assert ref is not None and ref.version == RUN
    set_alias(admin, MODEL, "prod", RUN, expected=None, reason="serve it", actor="operator")

    line = f"s3://{LINE}"
    pointer = f"{line}/incumbent.json"
    protected = [pointer, f"{line}/history/00000001.json", f"{line}/history/00000002.json",
                 f"{line}/aliases/prod.json", f"{line}/aliases/canary.json", f"{line}/alias-history/prod/00000002.json",
                 f"{line}/.kretrain-probe/x.txt", f"s3://{BUCKET}/registry/.kretrain-probe/x.txt",
                 f"s3://{BUCKET}/registry/other-line/runs/r/x.json", f"s3://{BUCKET}/data/era1/labels/new.txt"]  # fmt: skip
    before = {uri: admin.store.head(uri) for uri in protected}
    assert before[pointer] is not None and before[f"{line}/aliases/prod.json"] is not None
    ts = trainer.store
    for uri in protected:
        for attempt in (lambda u=uri: ts.put_bytes(u, b"{}"), lambda u=uri: ts.delete(u)):
            with pytest.raises(AccessDenied) as denied:
                attempt()
            assert uri in str(denied.value), denied.value
        with pytest.raises(AccessDenied):  # a conditional write is refused for the permission, not lost as a race
            ts.put_if_absent(uri, b"{}")
    etag = before[pointer].etag  # type: ignore[union-attr]
    with pytest.raises(AccessDenied):
        ts.compare_and_swap(pointer, b"{}", etag)
    # the promotion path itself: its conditional-write probe and the pointer's writes are operator-only
    with pytest.raises(AccessDenied):
        probe_conditional_writes(ts, f"s3://{BUCKET}/registry")
    with pytest.raises(AccessDenied):
        trainer.promote(MODEL, RUN, expected=RUN, reason="self-promotion", actor="trainer")
    with pytest.raises(AccessDenied):
        set_alias(trainer, MODEL, "prod", RUN, reason="self-service", actor="trainer")
    assert {uri: admin.store.head(uri) for uri in protected} == before
    assert [h.version for h in admin.history(MODEL)] == [RUN]
    alias = get_alias(admin, MODEL, "prod")
    assert alias is not None and alias.version == RUN and alias.actor == "operator"


def test_what_the_scoped_trainer_can_still_write(scoped: Scoped) -> None:
    """The boundary docs/install.md states: any run's folder and any version folder of the same line.

    A version is committed once (If-None-Match on version.json): a squatted run id makes that run's own register
    fail with VersionExists. But `Write` (like s3:PutObject) also allows a plain PUT over a committed version.json,
    and SeaweedFS's `Write` allows DELETE: the incumbent pointer keeps its own copy of the sha256 and weights URI."""
    ts, line, admin = scoped.trainer.store, f"s3://{LINE}", scoped.admin
    ts.put_bytes(f"{line}/runs/someone-else/progress.json", b"{}")
    ts.put_if_absent(f"{line}/versions/future-run/version.json", b"{}")
    committed = f"{line}/versions/{RUN}/version.json"
    with pytest.raises(PreconditionFailed):  # a registered version is not replaced by a conditional write
        ts.put_if_absent(committed, b"{}")
    original = admin.store.get_bytes(committed)
    ts.put_bytes(committed, b"{}")  # ... but an unconditional PUT is a write like any other
    assert admin.store.get_bytes(committed) == b"{}"
    pointer = admin.incumbent_pointer(MODEL)
    assert pointer is not None and pointer.version == RUN and pointer.sha256 == json.loads(original)["sha256"]
    admin.store.put_bytes(committed, original)
    for uri in (f"{line}/runs/someone-else/progress.json", f"{line}/versions/future-run/version.json"):
        ts.delete(uri)
        assert not admin.store.exists(uri)


def test_scoped_action_without_star_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trailing"):
        S3Identity("x", "x", "y", actions=(f"Write:{LINE}/runs/",))
    with pytest.raises(ValueError, match="distinct"):
        LocalS3Server(tmp_path, identities=[S3Identity("x", "kretrain", "y", actions=("Read",))])


def _client(s3: LocalS3Server, identity: S3Identity | None = None) -> Any:
    env = s3.env(identity)
    config = Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1})
    return boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1", config=config)  # fmt: skip


def _status(call: Any) -> int:
    try:
        answer = call()
    except ClientError as exc:
        return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    return int(answer["ResponseMetadata"]["HTTPStatusCode"])


def test_seaweedfs_path_scoping_semantics(server: Server) -> None:
    """What S3Identity's docstring and docs/install.md say SeaweedFS's path-scoped actions do, measured."""
    admin, t, loose = _client(server.server), _client(server.server, TRAINER), _client(server.server, LOOSE)
    runs, pointer = f"registry/{MODEL}/runs/semantics", f"registry/{MODEL}/incumbent.json"
    for key in (f"registry/{MODEL}/runsX/a", f"{runs}/a", "other/x"):
        admin.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    # `.../runs/*` is the folder only; a bare `*` is a string prefix and reaches the sibling `runsX/`
    assert _status(lambda: t.put_object(Bucket=BUCKET, Key=f"registry/{MODEL}/runsX/b", Body=b"y")) == 403
    assert _status(lambda: loose.put_object(Bucket=BUCKET, Key=f"registry/{MODEL}/runsX/b", Body=b"y")) == 200
    # Write covers DELETE (single and batch), conditional PUT and multipart, only inside its prefix
    assert _status(lambda: t.delete_object(Bucket=BUCKET, Key=f"{runs}/a")) == 204
    batch = t.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": pointer}, {"Key": f"{runs}/b"}]})
    assert [e["Key"] for e in batch.get("Errors", [])] == [pointer] and batch["Errors"][0]["Code"] == "AccessDenied"
    assert _status(lambda: t.put_object(Bucket=BUCKET, Key=f"{runs}/c", Body=b"1", IfNoneMatch="*")) == 200
    assert _status(lambda: t.put_object(Bucket=BUCKET, Key=f"{runs}/c", Body=b"2", IfNoneMatch="*")) == 412
    upload = t.create_multipart_upload(Bucket=BUCKET, Key=f"{runs}/big")
    part = t.upload_part(Bucket=BUCKET, Key=f"{runs}/big", UploadId=upload["UploadId"], PartNumber=1, Body=b"p" * 64)
    done = {"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]}
    t.complete_multipart_upload(Bucket=BUCKET, Key=f"{runs}/big", UploadId=upload["UploadId"], MultipartUpload=done)
    assert _status(lambda: t.create_multipart_upload(Bucket=BUCKET, Key=pointer)) == 403
    # a copy needs Write on the destination and Read on the source
    source = {"Bucket": BUCKET, "Key": "data/classes.yaml"}
    assert _status(lambda: t.copy_object(Bucket=BUCKET, Key=f"{runs}/copy", CopySource=source)) == 200
    other = {"Bucket": BUCKET, "Key": "other/x"}
    assert _status(lambda: t.copy_object(Bucket=BUCKET, Key=f"{runs}/copy2", CopySource=other)) == 403
    # tagging and bucket administration are other actions; `..` in a key is refused outright
    tags = {"TagSet": [{"Key": "a", "Value": "b"}]}
    assert _status(lambda: t.put_object_tagging(Bucket=BUCKET, Key=f"{runs}/c", Tagging=tags)) == 403
    assert _status(lambda: t.create_bucket(Bucket="trainer-made")) == 403
    assert _status(lambda: t.put_object(Bucket=BUCKET, Key=f"registry/{MODEL}/runs/../x.json", Body=b"y")) == 400
    # List: the Prefix parameter must lie under the grant; HEAD of a missing key is 404 only under Read
    assert _status(lambda: t.list_objects_v2(Bucket=BUCKET, Prefix="data/")) == 200
    assert _status(lambda: t.list_objects_v2(Bucket=BUCKET, Prefix="data")) == 403
    assert _status(lambda: t.list_objects_v2(Bucket=BUCKET, Prefix="")) == 403
    assert _status(lambda: t.head_object(Bucket=BUCKET, Key=f"{runs}/missing")) == 404
    assert _status(lambda: t.head_object(Bucket=BUCKET, Key="other/missing")) == 403
    # the admin of a server with extra identities keeps every right
    assert _status(lambda: admin.delete_object(Bucket=BUCKET, Key="other/x")) == 204
