"""The chaos run: RetrainJobs with simulated training through a faulty API server while the operator is killed.

Shared by tests/test_chaos.py and bench/chaos.py. `run_chaos(cluster, operator_env, config)`:

- creates `config.jobs` RetrainJobs over a few namespaces (each its own model line, so no run races another's
  promotion), planned by a seeded RNG: `promote` (an incumbent, a better candidate), `reject` (an incumbent, a
  worse candidate), `first` (no incumbent: the first model of its line is promoted) and `fail` (the Job fails);
- runs the real operator with KRETRAIN_KUBE_URL at a FaultProxy (500, 409, 429, lost answers, cut watches)
  in front of the emulator; the test's own calls go to the emulator directly;
- plays the trainer and the Job controller for every Job the operator creates (sim.train + complete_job, or
  fail_job), after a random training time;
- SIGKILLs the operator (with two replicas: the one that acts) at random moments, restarts it, and measures how
  long it took to make progress again;
- at the end checks that every RetrainJob has exactly one Job, the terminal state its plan implies, and the
  promotions it implies (at most one), and that the settled operator stays quiet (no hot loop).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emulator import sim
from emulator.client import ApiStatusError
from emulator.operator import OperatorProcess
from emulator.scenario import Cluster, operator_for
from harness.faultproxy import KINDS, FaultProxy, FaultRates
from kretrain.api import TERMINAL_STATES
from kretrain.operator import jobs
from kretrain.operator.steps import REGISTRY_ERRORS

INCUMBENT = {"e1": 0.50, "e2": 0.50, "e3": 0.40}
BETTER = {"e1": 0.60, "e2": 0.60, "e3": 0.60}
WORSE = {"e1": 0.45, "e2": 0.45, "e3": 0.45}  # regresses every era by more than maxEraRegression
OUTCOMES = ("promote", "reject", "first", "fail")
EXPECTED_STATE = {"promote": "Promoted", "reject": "Rejected", "first": "Promoted", "fail": "Failed"}
SEED_VERSION = "seed"
IN_FLIGHT = 0.3
"""Seconds after a SIGKILL before the statuses are compared against (the dead operator's last writes land)."""
SETTLE_GRACE = 1.5
"""Seconds after the last RetrainJob settled before the quiet window starts."""
PEERING_LIFETIME = 10
"""peering.lifetime of peered replicas (chart default 60): a SIGKILLed leader's record is stale after 10 s. At 5 s,
a few retried keep-alives (500s, Kopf backing off 1, 1, 2 s) let the standby take the leader for dead."""


@dataclass
class ChaosConfig:
    """What one chaos run does."""

    jobs: int = 50
    seed: int = 0
    fault_rate: float = 0.05
    """Share of requests answered 500, of writes answered 409, of requests answered 429 (each); half of it of
    writes whose answer is lost; four times it of watch streams cut."""
    kills: int = 4
    replicas: int = 1
    namespaces: int = 3
    create_gap: tuple[float, float] = (0.05, 0.3)
    """Seconds between two RetrainJobs being created."""
    train_seconds: tuple[float, float] = (0.3, 2.0)
    """How long a simulated Job trains."""
    kill_gap: tuple[float, float] = (1.0, 3.5)
    """Seconds between a restart and the next kill."""
    down_seconds: tuple[float, float] | None = None
    """How long a killed operator stays down; None: 0-1 s, or with peered replicas longer than the peering
    lifetime (so that the standby has to take over from the killed leader)."""
    timeout: float = 300.0
    quiet_seconds: float = 2.0
    """After everything settled: how long to watch that the operator makes no more writes."""
    outage_seconds: float = 0.0
    """> 0: once every RetrainJob was created, the API server answers nothing but 503 for this long."""
    poll_interval: float = 1.0
    """KRETRAIN_POLL_INTERVAL of the operators (each running RetrainJob's Job and progress read this often)."""
    conflict_any_patch: bool = False
    """Also answer merge patches 409 (no API server does: Kopf's timers die of it; see FaultRates)."""
    operator_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    namespace: str
    name: str
    model: str
    outcome: str
    uid: str = ""


@dataclass
class Kill:
    """One SIGKILL: when (seconds into the run), which replica, and the recovery."""

    at_s: float
    target: str
    down_s: float
    ready_s: float | None = None
    """Restart until the operator's /healthz answered."""
    progress_s: float | None = None
    """The kill until a RetrainJob's status changed again (the recovery); None: nothing was left to do."""
    seen: str = ""
    """Peered: how the leader was told (priority of the live records; which replicas' logs say they act)."""


@dataclass
class ChaosResult:
    config: dict[str, Any]
    elapsed_s: float = 0.0
    """From the operators' start until every RetrainJob had settled."""
    setup_s: float = 0.0
    """Seeding the incumbents and starting the proxy."""
    check_s: float = 0.0
    """Checking the end state (registry histories and incumbents, Jobs, statuses)."""
    faults: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    outage_at_s: float | None = None
    unexpected_exits: int = 0
    quiet_writes: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_jobs(config: ChaosConfig, rng: random.Random) -> list[Plan]:
    """Every outcome at least once (when there are enough jobs), the rest drawn at random."""
    outcomes = [OUTCOMES[i % len(OUTCOMES)] for i in range(min(config.jobs, len(OUTCOMES)))]
    outcomes += [rng.choice(OUTCOMES) for _ in range(config.jobs - len(outcomes))]
    rng.shuffle(outcomes)
    return [
        Plan(f"chaos-{i % config.namespaces}", f"rtj-{i:03d}", f"chaos-m{i:03d}", outcome)
        for i, outcome in enumerate(outcomes)
    ]


class Trainer(threading.Thread):
    """Plays the trainer and the Job controller: each new Job of a planned RetrainJob ends after a random time."""

    def __init__(self, cluster: Cluster, plans: dict[str, Plan], rng: random.Random, config: ChaosConfig) -> None:
        super().__init__(name="chaos-trainer", daemon=True)
        self.cluster, self.plans, self.rng, self.config = cluster, plans, rng, config
        self.seen: set[str] = set()
        self.due: list[tuple[float, str, str, Plan]] = []  # (when, namespace, job name, plan)
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def _new_jobs(self) -> list[tuple[str, str, str]]:
        def scan() -> list[tuple[str, str, str]]:
            store = self.cluster.server.emulator.store[("batch", "v1", "jobs")]
            found = []
            for (ns, name), job in store.items():
                uid = (job["metadata"].get("labels") or {}).get(jobs.LABEL_UID)
                if uid and name not in self.seen:
                    found.append((ns or "", name, uid))
            return found

        found: list[tuple[str, str, str]] = self.cluster.server.call(scan)
        return found

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            for ns, name, uid in self._new_jobs():
                self.seen.add(name)
                if uid in self.plans:
                    self.due.append(
                        (time.monotonic() + self.rng.uniform(*self.config.train_seconds), ns, name, self.plans[uid])
                    )
            now = time.monotonic()
            for item in [d for d in self.due if d[0] <= now]:
                self.due.remove(item)
                try:
                    self._finish(*item[1:])
                except (ApiStatusError, OSError, *REGISTRY_ERRORS) as exc:  # a problem of the run, not of the thread
                    self.errors.append(f"simulating Job {item[2]}: {type(exc).__name__}: {exc}")

    def _finish(self, ns: str, name: str, plan: Plan) -> None:
        client = self.cluster.client
        if plan.outcome == "fail":
            sim.fail_job(client, ns, name, "BackoffLimitExceeded", "Job has reached the specified backoff limit",
                         "kretrain: simulated training failure")  # fmt: skip
            return
        run = jobs.run_id(plan.namespace, plan.name, plan.uid)
        candidate = WORSE if plan.outcome == "reject" else BETTER
        incumbent = None if plan.outcome == "first" else INCUMBENT
        self.cluster.train(plan.model, run, candidate, incumbent)  # signed with the run's stage key
        sim.complete_job(client, ns, name)


class Fleet:
    """The operator process(es): one standalone, or the chart's peered replicas (tests/emulator/replicas.py)."""

    def __init__(self, ops: list[OperatorProcess], peered: Any = None) -> None:
        self.ops, self.peered = ops, peered

    def start_all(self) -> None:
        if self.peered is not None:
            self.peered.start_all(timeout=60)
            return
        for op in self.ops:
            op.start().wait_ready(60)

    def restart(self, op: OperatorProcess) -> None:
        """Start a killed replica again; returns once it serves /healthz (peered: once its record is in)."""
        if self.peered is not None:
            self.peered.start(op, timeout=60)
        else:
            op.start().wait_ready(60)

    def target(self) -> tuple[int, str]:
        """The replica to kill: the only one, or (peered) the leader: the alive replica whose live peering record
        has the highest priority (what Kopf decides by); and how that was seen."""
        if self.peered is None:
            return 0, ""
        from emulator.replicas import is_active, pod_of

        records = self.peered.records()
        alive = [op for op in self.ops if op.alive and pod_of(op) in records]
        if not alive:
            return 0, "no live peering record"
        leader = max(alive, key=lambda op: records[pod_of(op)]["priority"])
        acting = [f"replica-{self.ops.index(op)}" for op in self.ops if op.alive and is_active(op)]
        return self.ops.index(leader), f"leader by priority; logs say active: {', '.join(acting) or 'none'}"

    def stop_all(self) -> None:
        for op in self.ops:
            op.stop()


def _fleet(cluster: Cluster, s3: Any, url: str, log_dir: Path, namespaces: list[str], config: ChaosConfig) -> Fleet:
    """`config.replicas` operators whose API server is `url` (the fault proxy)."""
    env = {"KRETRAIN_POLL_INTERVAL": str(config.poll_interval), "KRETRAIN_RETRY_DELAY": "0.5", **config.operator_env}
    if config.replicas > 1:
        from emulator.replicas import chart_replicas

        values = {
            "replicaCount": config.replicas,
            "watchNamespaces": namespaces,
            "peering": {"lifetime": PEERING_LIFETIME},
            "config": {"registryUri": cluster.registry_uri, "s3Endpoint": s3.endpoint,
                       "pollInterval": config.poll_interval, "retryDelay": 0.5},
        }  # fmt: skip
        peered = chart_replicas(cluster.client, url, log_dir, values, {**s3.env(), **config.operator_env})
        return Fleet(peered.ops, peered)
    op = operator_for(cluster, s3, log_dir / "operator-0.log", namespaces)
    op.kube_url = url
    op.env.update({**env, "KRETRAIN_KUBE_URL": url})
    return Fleet([op])


def _statuses(cluster: Cluster) -> dict[str, Any]:
    def snapshot() -> dict[str, Any]:
        store = cluster.server.emulator.store[("kretrain.dev", "v1alpha1", "retrainjobs")]
        return {obj["metadata"]["uid"]: obj.get("status") or {} for obj in store.values()}

    found: dict[str, Any] = cluster.server.call(snapshot)
    return found


def _progressed(cluster: Cluster, before: dict[str, Any], since: float, timeout: float) -> float | None:
    """Seconds from `since` until a RetrainJob that was not terminal changes status (None: none left, timed out)."""
    t0 = time.monotonic()
    pending = {uid for uid, status in before.items() if status.get("state") not in TERMINAL_STATES}
    if not pending:
        return None
    while time.monotonic() - t0 < timeout:
        now = _statuses(cluster)
        if any((now.get(uid) or {}) != (before.get(uid) or {}) for uid in pending | (now.keys() - before.keys())):
            return round(time.monotonic() - since, 2)
        time.sleep(0.05)
    return None


def run_chaos(cluster: Cluster, s3: Any, config: ChaosConfig, log_dir: Path) -> ChaosResult:
    """One chaos run against `cluster` (its emulator and registry on `s3`); the operators log into `log_dir`."""
    rng = random.Random(config.seed)
    result = ChaosResult(config={k: v for k, v in asdict(config).items() if k != "operator_env"})
    started = time.monotonic()
    plans = plan_jobs(config, rng)
    result.outcomes = {o: sum(p.outcome == o for p in plans) for o in OUTCOMES}
    namespaces = sorted({p.namespace for p in plans})
    for ns in namespaces:
        cluster.client.ensure_namespace(ns)
    with ThreadPoolExecutor(4) as pool:  # the incumbents an earlier run would have left
        seeded = [p.model for p in plans if p.outcome in ("promote", "reject")]
        list(pool.map(lambda m: sim.seed_incumbent(cluster.registry, m, SEED_VERSION, INCUMBENT, cluster.tmp), seeded))

    proxy = FaultProxy(
        cluster.server.url,
        FaultRates.uniform(config.fault_rate, conflict_any_patch=config.conflict_any_patch),
        seed=config.seed,
    )
    proxy.start()
    replicas = _fleet(cluster, s3, proxy.url, log_dir, namespaces, config)
    by_uid: dict[str, Plan] = {}
    trainer = Trainer(cluster, by_uid, random.Random(config.seed + 1), config)
    t0 = time.monotonic()
    result.setup_s = round(t0 - started, 1)
    quiet: list[str] = []
    try:
        replicas.start_all()
        trainer.start()
        creator = threading.Thread(target=_create_all, args=(cluster, plans, by_uid, rng, config), daemon=True)
        creator.start()
        deadline = t0 + config.timeout
        _kill_loop(cluster, replicas, rng, config, result, t0, deadline, lambda: len(by_uid) < len(plans))
        creator.join(30)
        if config.outage_seconds > 0:
            result.outage_at_s = round(time.monotonic() - t0, 1)
            proxy.outage(config.outage_seconds)
            time.sleep(config.outage_seconds)
        settled = _wait_settled(cluster, replicas, result, deadline)
        result.elapsed_s = round(time.monotonic() - t0, 1)
        if settled:  # no hot loop: a settled operator writes nothing more (its timers stop on terminal states)
            time.sleep(SETTLE_GRACE)  # the last handlers' trailing writes (their Event, Kopf's annotations)
            since = time.monotonic()
            time.sleep(config.quiet_seconds)
            with proxy._lock:
                quiet = [f"{m} {where}" for t, m, where in proxy.writes if t >= since and "kopfpeerings" not in where]
            result.quiet_writes = len(quiet)
    finally:
        trainer.stopping.set()
        trainer.join(5)
        replicas.stop_all()
        proxy.stop()
    result.faults = proxy.counts()
    result.requests = dict(proxy.requests)
    result.problems += trainer.errors
    checked = time.monotonic()
    result.problems += check(cluster, plans)
    result.check_s = round(time.monotonic() - checked, 1)
    result.problems += log_findings(log_dir)
    if result.quiet_writes:
        result.problems.append(
            f"{result.quiet_writes} API writes in {config.quiet_seconds}s after all had settled: {quiet[:5]}"
        )
    states = [(cluster.status(p.namespace, p.name).get("state") or "none") for p in plans]
    result.states = {s: states.count(s) for s in sorted(set(states))}
    return result


def _create_all(
    cluster: Cluster, plans: list[Plan], by_uid: dict[str, Plan], rng: random.Random, config: ChaosConfig
) -> None:
    gaps = [rng.uniform(*config.create_gap) for _ in plans]
    for plan, gap in zip(plans, gaps, strict=True):
        time.sleep(gap)
        created = cluster.create_rtj(plan.namespace, plan.name, plan.model)
        plan.uid = created["metadata"]["uid"]
        by_uid[plan.uid] = plan


def _kill_loop(
    cluster: Cluster,
    replicas: Fleet,
    rng: random.Random,
    config: ChaosConfig,
    result: ChaosResult,
    t0: float,
    deadline: float,
    creating: Callable[[], bool],
) -> None:
    """Kill at random moments while there is work left; restart after a short downtime."""
    for _ in range(config.kills):
        wait_until = time.monotonic() + rng.uniform(*config.kill_gap)
        while time.monotonic() < wait_until:
            _restart_crashed(replicas, result)
            time.sleep(0.05)
        if not creating() and all(s.get("state") in TERMINAL_STATES for s in _statuses(cluster).values()):
            return  # nothing left to interrupt
        if time.monotonic() > deadline:
            return
        i, seen = replicas.target()
        op = replicas.ops[i]
        kill = Kill(at_s=round(time.monotonic() - t0, 2), target=f"replica-{i}", down_s=0.0, seen=seen)
        killed = time.monotonic()
        op.stop(kill=True)
        time.sleep(IN_FLIGHT)  # writes the proxy was forwarding when the operator died still land
        before = _statuses(cluster)
        watch = threading.Thread(  # from the kill on: with two replicas the standby may recover before a restart
            target=lambda k=kill, b=before, t=killed: setattr(k, "progress_s", _progressed(cluster, b, t, 90)),
            daemon=True,
        )
        watch.start()
        time.sleep(max(0.0, rng.uniform(*_down_seconds(config)) - IN_FLIGHT))
        kill.down_s = round(time.monotonic() - killed, 2)
        t_restart = time.monotonic()
        try:
            replicas.restart(op)
            kill.ready_s = round(time.monotonic() - t_restart, 2)
        except (TimeoutError, AssertionError) as exc:
            result.problems.append(f"replica-{i} not ready after a restart: {str(exc)[-300:]}")
        watch.join(90)
        result.kills.append(kill)


def _down_seconds(config: ChaosConfig) -> tuple[float, float]:
    if config.down_seconds is not None:
        return config.down_seconds
    return (PEERING_LIFETIME + 1.0, PEERING_LIFETIME + 3.0) if config.replicas > 1 else (0.0, 1.0)


def _restart_crashed(replicas: Fleet, result: ChaosResult) -> None:
    """An operator that exited on its own (not killed by us) is a finding; it is restarted."""
    for i, op in enumerate(replicas.ops):
        if op.proc is not None and not op.alive:
            result.unexpected_exits += 1
            result.problems.append(f"replica-{i} exited on its own (rc {op.proc.returncode}): {op.tail(15)}")
            op.proc = None
            op.start()


def _wait_settled(cluster: Cluster, replicas: Fleet, result: ChaosResult, deadline: float) -> bool:
    while time.monotonic() < deadline:
        _restart_crashed(replicas, result)
        statuses = _statuses(cluster)
        if statuses and all(s.get("state") in TERMINAL_STATES for s in statuses.values()):
            return True
        time.sleep(0.2)
    left = [uid for uid, s in _statuses(cluster).items() if s.get("state") not in TERMINAL_STATES]
    result.problems.append(f"{len(left)} RetrainJobs not settled before the timeout")
    return False


def check(cluster: Cluster, plans: list[Plan]) -> list[str]:
    """What must hold at the end: one Job each, the planned terminal state, the planned promotions (<= 1)."""
    with ThreadPoolExecutor(4) as pool:
        return [problem for found in pool.map(lambda p: check_one(cluster, p), plans) for problem in found]


def check_one(cluster: Cluster, p: Plan) -> list[str]:
    """The end state of one planned RetrainJob: what is wrong with it (nothing: [])."""
    problems: list[str] = []
    where = f"{p.namespace}/{p.name} ({p.outcome})"
    if not p.uid:
        return [f"{where}: never created"]
    run = jobs.run_id(p.namespace, p.name, p.uid)
    created = cluster.jobs_created_for(p.uid)
    if created != 1:
        problems.append(f"{where}: {created} Jobs created")
    state = cluster.status(p.namespace, p.name).get("state")
    if state != EXPECTED_STATE[p.outcome]:
        reason = (cluster.status(p.namespace, p.name).get("conditions") or [{}])[-1].get("message", "")
        problems.append(f"{where}: state {state}, expected {EXPECTED_STATE[p.outcome]} ({reason[:200]})")
    history = cluster.registry.history(p.model)
    promotions = sum(1 for h in history if h.action == "promote" and h.version == run)
    want = 1 if EXPECTED_STATE[p.outcome] == "Promoted" else 0
    if promotions != want:
        problems.append(f"{where}: {promotions} promotions of {run}, expected {want}")
    incumbent = cluster.registry.incumbent(p.model)
    expect = run if want else (SEED_VERSION if p.outcome == "reject" else None)
    if (incumbent.version if incumbent else None) != expect:
        problems.append(f"{where}: incumbent {incumbent.version if incumbent else None}, expected {expect}")
    return problems


LOG_FINDINGS = {
    "Task exception was never retrieved": "a Kopf task died (a timer or daemon stops for good)",
    "Event processing has failed with an unrecoverable error": "Kopf gave up on an object's event",
}


def log_findings(log_dir: Path) -> list[str]:
    """Signs in the operators' logs that something stopped for good (the state checks may not see it yet)."""
    found = []
    for log in sorted(log_dir.glob("operator-*.log")):
        text = log.read_text(errors="replace")
        for needle, what in LOG_FINDINGS.items():
            if n := text.count(needle):
                found.append(f"{log.name}: {what}: {n} x {needle!r}")
    return found


def table(result: ChaosResult) -> str:
    """The run as text: faults by kind, kills with their recovery, outcomes, problems."""
    c = result.config
    lines = [
        f"chaos run: {c['jobs']} RetrainJobs, seed {c['seed']}, fault rate {c['fault_rate']}, "
        f"{c['replicas']} replica(s): {result.elapsed_s} s (setup {result.setup_s} s, checks {result.check_s} s)",
        "",
        f"{'fault':<12} {'injected':>8}",
        *(f"{kind:<12} {result.faults.get(kind, 0):>8}" for kind in KINDS),
        f"{'requests':<12} {sum(result.requests.values()):>8}  "
        + " ".join(f"{k}={v}" for k, v in sorted(result.requests.items())),
        "",
        f"{'kill':<5} {'at s':>6} {'target':<10} {'down s':>6} {'ready s':>7} {'recovered s':>11}",
    ]
    for i, k in enumerate(result.kills, 1):
        ready = "-" if k.ready_s is None else f"{k.ready_s:.2f}"
        progress = "-" if k.progress_s is None else f"{k.progress_s:.2f}"
        lines.append(f"{i:<5} {k.at_s:>6.1f} {k.target:<10} {k.down_s:>6.2f} {ready:>7} {progress:>11}  {k.seen}")
    lines += [
        "ready s: restart until /healthz answered; recovered s: SIGKILL until a RetrainJob's status changed again",
        "",
        "planned: " + ", ".join(f"{k} {v}" for k, v in result.outcomes.items()),
        "final states: " + ", ".join(f"{k} {v}" for k, v in result.states.items()),
        f"unexpected operator exits: {result.unexpected_exits}; API writes after settling: {result.quiet_writes}",
        *([f"API outage of {c['outage_seconds']} s at {result.outage_at_s} s"] if result.outage_at_s else []),
        f"problems: {len(result.problems)}",
        *(f"  - {p}" for p in result.problems[:30]),
    ]
    return "\n".join(lines)
