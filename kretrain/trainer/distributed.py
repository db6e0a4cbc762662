"""Training under torchrun: world size and ranks from the launcher, data once per node, rank 0 finishes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import Field

from kretrain.api.base import ApiModel

NODE_DATA_FILE = "node-data.json"
"""Written by a node's local rank 0 once the data is pulled and validated; the node's other ranks read it."""
SHARD_LOG_ENV = "KRETRAIN_SHARD_LOG"
"""Set to 1 to list each rank's sample indices in its per-epoch `shard` log line (tests, debugging)."""
PG_TIMEOUT = timedelta(minutes=30)
"""Collective timeout: a rank that died makes the others fail within this, never a silent partial run."""


class DistributedError(RuntimeError):
    """The launcher's environment is inconsistent (the message names the variable)."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a torchrun launch (all 1/0/0 when not launched by torchrun)."""

    world_size: int = 1
    """WORLD_SIZE: processes over all nodes."""
    rank: int = 0
    """RANK: this process over all nodes."""
    local_rank: int = 0
    """LOCAL_RANK: this process on its node (its GPU index)."""
    local_world_size: int = 1
    """LOCAL_WORLD_SIZE: processes on this node."""

    @property
    def active(self) -> bool:
        """More than one process: a process group is needed."""
        return self.world_size > 1

    @property
    def node_leader(self) -> bool:
        """Local rank 0: pulls and validates the node's data."""
        return self.local_rank == 0

    @property
    def leader(self) -> bool:
        """Global rank 0: the only one that evaluates, checks, exports and registers."""
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DistEnv:
        """Read torchrun's variables; DistributedError names the one that is missing or out of range."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()
        values: dict[str, int] = {}
        for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            raw = env.get(name, "1" if name == "LOCAL_WORLD_SIZE" else "")
            try:
                values[name] = int(raw)
            except ValueError:
                raise DistributedError(f"{name}={raw!r} is not an integer (set by torchrun)") from None
        ws, rank, lr, lws = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"]
        if ws < 1:
            raise DistributedError(f"WORLD_SIZE={ws} must be >= 1")
        if not 0 <= rank < ws:
            raise DistributedError(f"RANK={rank} must be in [0, WORLD_SIZE={ws})")
        if not 1 <= lws <= ws:
            raise DistributedError(f"LOCAL_WORLD_SIZE={lws} must be in [1, WORLD_SIZE={ws}]")
        if not 0 <= lr < lws:
            raise DistributedError(f"LOCAL_RANK={lr} must be in [0, LOCAL_WORLD_SIZE={lws})")
        if ws > 1:
            for name in ("MASTER_ADDR", "MASTER_PORT"):
                if not env.get(name):
                    raise DistributedError(f"{name} is not set: launch with torchrun (c10d rendezvous)")
        return cls(world_size=ws, rank=rank, local_rank=lr, local_world_size=lws)


def init_process_group(env: DistEnv, cuda: bool) -> None:
    """Join the launch's process group (env:// rendezvous: MASTER_ADDR/PORT); no-op for one process."""
    import torch.distributed as dist

    if not env.active or dist.is_initialized():
        return
    if cuda:
        import torch

        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(
        backend="nccl" if cuda else "gloo", rank=env.rank, world_size=env.world_size, timeout=PG_TIMEOUT
    )


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op for one process)."""
    import torch.distributed as dist

    if env.active and dist.is_initialized():
        dist.barrier()


def leave(env: DistEnv) -> None:
    """After training: wait for every rank, leave the process group, and let rank 0 go on as one process.

    Ultralytics reads RANK/LOCAL_RANK once at import into each module; left as they are, rank 0's own
    validations (checks, evaluation, export parity) would gather from ranks that have already exited.
    """
    import torch.distributed as dist

    if not env.active:
        return
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    for name, module in list(sys.modules.items()):
        if name == "ultralytics" or name.startswith("ultralytics."):
            for var, single in (("RANK", -1), ("LOCAL_RANK", -1), ("WORLD_SIZE", 1)):
                if isinstance(getattr(module, var, None), int):
                    setattr(module, var, single)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        os.environ.pop(var, None)


class NodeData(ApiModel):
    """What a node's local rank 0 tells the node's other ranks once the data is ready (node-data.json)."""

    data_yaml: str = Field(max_length=4096)
    """Absolute path of the Ultralytics data YAML the leader built (inside the pod's workdir)."""


def share_node_data(env: DistEnv, workdir: Path, data_yaml: Path | None) -> Path:
    """Local rank 0 passes its data YAML (after `prepare`); the others wait on a barrier and read it.

    Every rank calls this once. Returns the data YAML path to train with. The path read back must lie
    inside `workdir` (the file is trusted no more than any other record).
    """
    marker = Path(workdir) / NODE_DATA_FILE
    if env.node_leader:
        if data_yaml is None:
            raise DistributedError("local rank 0 must prepare the data before sharing it")
        if env.active:
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps(NodeData(data_yaml=str(Path(data_yaml).resolve())).dump()))
            tmp.replace(marker)
        barrier(env)
        return Path(data_yaml)
    barrier(env)
    raw = marker.read_bytes()
    if len(raw) > 8192:
        raise DistributedError(f"{marker}: {len(raw)} bytes, more than a node-data record can be")
    path = Path(NodeData.model_validate_json(raw).data_yaml).resolve()
    if not path.is_relative_to(Path(workdir).resolve()) or not path.is_file():
        raise DistributedError(f"{marker}: dataYaml {path} is not a file inside {workdir}")
    return path


def rank_dir(env: DistEnv, path: Path) -> Path:
    """`path` for the node's local rank 0, `path-rank<R>` for the others (no two ranks write one file)."""
    return path if env.node_leader else path.with_name(f"{path.name}-rank{env.rank}")


# --------------------------------------------------------------------------------------------------
# Ultralytics' trainer under torchrun
# --------------------------------------------------------------------------------------------------


def trainer_class() -> type[Any]:
    """A DetectionTrainer whose world size and ranks come from torchrun (not from the local device count).

    Ultralytics sets the DDP world size from `device` (`len("0,1")`, 0 on CPU) and spawns its own workers;
    under `torchrun --nnodes N` that gives the wrong world size (a 2x1-GPU launch trains as two separate
    single-GPU runs). This subclass takes WORLD_SIZE/RANK/LOCAL_RANK from the launcher, uses the GPU of its
    local rank (or gloo on CPU), and leaves the final re-validation of best.pt to rank 0's own evaluation
    (Ultralytics' DDP re-validation needs CUDA and best.pt on every node's disk, but only rank 0 saves it).
    """
    import torch
    import torch.distributed as dist
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils.torch_utils import strip_optimizer

    class TorchrunDetectionTrainer(DetectionTrainer):
        """DetectionTrainer for a torchrun launch (see `trainer_class`)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.dist_env = DistEnv.from_env()
            super().__init__(*args, **kwargs)
            self.world_size = self.dist_env.world_size
            self.ddp = False  # torchrun spawned the workers: never spawn more
            if self.device.type == "cuda":
                self.args.device = str(self.dist_env.local_rank)
            self.add_callback("on_train_epoch_end", _log_shard)

        def _setup_ddp(self) -> None:
            cuda = self.device.type == "cuda"
            if cuda:
                self.device = torch.device("cuda", self.dist_env.local_rank)
            init_process_group(self.dist_env, cuda)

        def _setup_train(self) -> None:
            if self.device.type != "cpu":
                return super()._setup_train()
            with _cpu_ddp():
                return super()._setup_train()

        def final_eval(self) -> None:
            _event(event="rank-done", rank=self.dist_env.rank, paramsSha256=params_sha256(self.model))
            if self.dist_env.leader and self.last.exists():
                ckpt = strip_optimizer(self.last)
                if self.best.exists():
                    strip_optimizer(self.best, updates={"train_results": ckpt.get("train_results")})
            dist.barrier()

    return TorchrunDetectionTrainer


def _event(**fields: Any) -> None:
    print(json.dumps(fields), file=sys.stderr, flush=True)


def params_sha256(model: Any) -> str:
    """SHA-256 over a model's parameters (names, dtypes, values): equal on every rank when gradients synced."""
    from ultralytics.utils.torch_utils import unwrap_model

    h = hashlib.sha256()
    for name, p in unwrap_model(model).named_parameters():
        h.update(name.encode())
        h.update(str(p.dtype).encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _log_shard(trainer: Any) -> None:
    """One JSON line per rank and epoch: how many samples this rank trained on (the indices with SHARD_LOG_ENV)."""
    sampler = getattr(trainer.train_loader, "sampler", None)
    indices = [int(i) for i in sampler] if sampler is not None and hasattr(sampler, "set_epoch") else []
    fields: dict[str, Any] = {"event": "shard", "rank": DistEnv.from_env().rank, "epoch": int(trainer.epoch)}
    fields["samples"] = len(indices)
    if os.environ.get(SHARD_LOG_ENV) == "1":
        fields["indices"] = indices
    _event(**fields)


@contextlib.contextmanager
def _cpu_ddp() -> Iterator[None]:
    """Let Ultralytics wrap a CPU model in DDP: it passes `device_ids=[None]`, which torch refuses on CPU."""
    import torch.nn.parallel as parallel

    base = parallel.DistributedDataParallel

    class CpuDDP(base):  # type: ignore[misc,valid-type]
        def __init__(self, module: Any, device_ids: Any = None, **kwargs: Any) -> None:
            if device_ids is not None and all(i is None for i in device_ids):
                device_ids = None
            super().__init__(module, device_ids=device_ids, **kwargs)

    parallel.DistributedDataParallel = CpuDDP  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        parallel.DistributedDataParallel = base  # type: ignore[misc]


def train_kwargs(env: DistEnv | None = None) -> dict[str, Any]:
    """Extra `YOLO.train()` arguments: the torchrun trainer when launched with more than one process."""
    env = env or DistEnv.from_env()
    return {"trainer": trainer_class()} if env.active else {}
