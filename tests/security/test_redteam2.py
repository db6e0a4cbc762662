"""Red team, round 2: attack surface added since c9b3c2a (bootstrap intervals, promotion notices, their status
records). Each case is an attack that worked before its fix; the docstring of each test names the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emulator import sim
from kretrain.api import RetrainJobSpec, RunReport
from kretrain.api.intervals import EraInterval, PairedBootstrap
from kretrain.api.status import Notification
from kretrain.interval_checks import interval_mismatch
from kretrain.operator import notify
from kretrain.promotion import conclude
from kretrain.registry import Registry
from kretrain.registry_records import VersionRecord
from kretrain.store import ObjectStore

MODEL = "rt2-detector"
BASE = "s3://reg/m/versions/run-2"


# -- 5. bootstrap intervals that contradict the report's own point estimates ------------------------------------
def _bootstrap_report(**changes: Any) -> RunReport:
    """A real paired bootstrap of constructed statistics (a clear gain), then `changes` applied to its numbers."""
    from _gate_fixtures import NAMES, evaluation, images, model_stats

    from kretrain.bootstrap import paired_bootstrap

    test = images({"era1": 30, "era2": 30})
    cand = model_stats(test, {("era1", -1): 0.9, ("era2", -1): 0.9}, seed=1)
    inc = model_stats(test, {("era1", -1): 0.6, ("era2", -1): 0.6}, seed=2)
    ci = paired_bootstrap(
        cand, inc, {p: e for p, e, _ in test}, NAMES, metric="mAP50-95", confidence=0.95, resamples=50, seed=0,
        incumbent_version="v1",
    )  # fmt: skip
    report = sim.report("run-2", MODEL, {"model": MODEL}, {"era1": 0.5}, None, None)
    report = report.model_copy(
        update={
            "candidate_evaluation": evaluation(cand, test, None),
            "incumbent_evaluation": evaluation(inc, test, "v1"),
        }
    )
    data = ci.dump()
    for path, value in changes.items():  # "pooled.delta", "eras.era1.classes.circle.candidate", ...
        *parents, leaf = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = value(node[leaf]) if callable(value) else value
    return report.model_copy(update={"intervals": PairedBootstrap.model_validate(data)})


INTERVAL_CASES = [
    ("consistent", {}, None),
    # the pooled delta is not compared (tied confidences may sort differently, see the ties test); the gate bounds
    # the pooled lower bound by the evaluations' own delta instead
    ("pooled-delta-not-compared", {"pooled.delta": lambda d: d + 0.05}, None),
    ("era-delta-forged", {"eras.era2.delta": lambda d: d - 0.01}, "era 'era2' mAP50-95 delta"),
    ("era-unknown", {"eras.era9": {"delta": 0, "low": 0, "high": 0, "images": 1}}, "era 'era9', which"),
    ("cell-candidate-forged", {"eras.era1.classes.circle.candidate": lambda v: max(0.0, v - 0.2)},
     "candidate AP50-95"),
    ("cell-incumbent-forged", {"eras.era1.classes.circle.incumbent": lambda v: min(1.0, v + 0.2)},
     "incumbent AP50-95"),
    ("cell-delta-forged", {"eras.era1.classes.square.delta": 0.0}, "AP50-95 delta"),
    ("cell-instances-forged", {"eras.era1.classes.square.instances": 10_000}, "test instances"),
    ("cell-unknown-class", {"eras.era1.classes.ghost": {"delta": 0, "low": 0, "high": 0, "instances": 9,
                                                        "candidate": 0.5, "incumbent": 0.5, "resamples": 9}},
     "'ghost' in era 'era1'"),
    # intervals against another incumbent are not used by the gate (point estimates decide): not a mismatch
    ("other-incumbent-ignored", {"incumbentVersion": "v0", "pooled.delta": 0.9}, None),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "phrase"), [c[1:] for c in INTERVAL_CASES], ids=[c[0] for c in INTERVAL_CASES])
def test_intervals_must_agree_with_the_reported_point_estimates(changes: dict[str, Any], phrase: str | None) -> None:
    """Before: nothing compared report.intervals with the evaluations. After: kretrain.interval_checks."""
    why = interval_mismatch(_bootstrap_report(**changes))
    if phrase is None:
        assert why is None
    else:
        assert why is not None and phrase in why, why


def test_forged_intervals_do_not_promote_a_candidate_its_points_reject(s3_env: Any, tmp_path: Path) -> None:
    """Before: a trainer that reported no gain (0.50 vs 0.50) but a pooled interval [+0.25, +0.35] was promoted
    (the gate read only the interval). After: the pooled lower bound is capped by the evaluations' delta (+0),
    so the gate fails; an era interval contradicting its era's metrics makes the report a ReportMismatch."""
    registry = Registry(ObjectStore(), f"s3://{s3_env.new_bucket('rt2-ci')}/reg")
    sim.seed_incumbent(registry, MODEL, "v1", {"era1": 0.5}, tmp_path)
    sim.train(registry, MODEL, "run-2", {"era1": 0.5}, {"era1": 0.5}, tmp_path)
    report = registry.read_run_report(MODEL, "run-2")
    assert report is not None
    forged = PairedBootstrap(
        metric="mAP50-95", confidence=0.95, resamples=1000, seed=0, incumbent_version="v1",
        pooled=EraInterval(delta=0.3, low=0.25, high=0.35, images=40),
        eras={"era1": EraInterval(delta=0.0, low=0.0, high=0.0, images=40)},
    )  # fmt: skip
    spec = RetrainJobSpec.model_validate({
        "model": MODEL, "dataset": {"uri": "s3://data/set", "eras": ["era1"]},
        "promotion": {"minImprovement": {"absolute": 0.01}},
    })  # fmt: skip
    done = conclude(registry, report.model_copy(update={"intervals": forged}), spec, actor="rt", run_id="run-2")
    assert done.reason == "GateFailed" and not done.decision.promoted, done.decision.reasons
    era_forged = forged.model_copy(update={"eras": {"era1": EraInterval(delta=0.3, low=0.25, high=0.35, images=40)}})
    done = conclude(registry, report.model_copy(update={"intervals": era_forged}), spec, actor="rt", run_id="run-2")
    assert done.reason == "ReportMismatch" and done.failed and not done.decision.promoted
    assert registry.incumbent(MODEL).version == "v1"  # type: ignore[union-attr]
    honest = conclude(registry, report, spec, actor="rt", run_id="run-2")  # without intervals: points decide
    assert honest.reason == "GateFailed" and registry.incumbent(MODEL).version == "v1"  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", range(4))
def test_honest_intervals_with_tied_confidences_are_not_a_mismatch(seed: int) -> None:
    """The check must never refuse an honest report: many exactly tied confidences, eras interleaved in file order
    (the bootstrap's pooled delta then differs from the evaluations' by up to ~1e-2; eras and cells do not)."""
    import numpy as np
    from _gate_fixtures import NAMES, evaluation, images, model_stats

    from kretrain.bootstrap import paired_bootstrap

    test = images({"b": 25, "a": 25}, seed=seed)
    np.random.default_rng(seed).shuffle(test)
    cand = model_stats(test, {("a", -1): 0.7, ("b", -1): 0.6}, seed=seed + 1)
    inc = model_stats(test, {("a", -1): 0.6, ("b", -1): 0.6}, seed=seed + 2)
    for stats in (cand, inc):
        stats.stats["conf"] = [np.round(c, 1) for c in stats.stats["conf"]]
    ci = paired_bootstrap(
        cand, inc, {p: e for p, e, _ in test}, NAMES, metric="mAP50-95", confidence=0.95, resamples=20, seed=0,
        incumbent_version="v1",
    )  # fmt: skip
    report = sim.report("run-2", MODEL, {"model": MODEL}, {"era1": 0.5}, None, None)
    report = report.model_copy(update={"candidate_evaluation": evaluation(cand, test, None),
                                       "incumbent_evaluation": evaluation(inc, test, "v1"), "intervals": ci})  # fmt: skip
    assert interval_mismatch(report) is None


GUARD_CASES = [
    # id, pooled (delta, low, high), era (delta, low, high), passes
    ("interval-above-point-pooled", (0.005, 0.02, 0.03), (0.0, 0.0, 0.0), False),
    ("interval-above-point-era", (0.05, 0.04, 0.06), (-0.05, 0.0, 0.01), False),
    ("honest-interval", (0.05, 0.04, 0.06), (0.0, -0.01, 0.01), True),
]  # fmt: skip


@pytest.mark.parametrize(("pooled", "era", "passes"), [c[1:] for c in GUARD_CASES], ids=[c[0] for c in GUARD_CASES])
def test_an_interval_never_passes_what_its_point_estimate_fails(
    pooled: tuple[float, float, float], era: tuple[float, float, float], passes: bool
) -> None:
    """Before: a lower bound above its own point estimate (a percentile interval that excludes the point) passed
    pooled superiority / era non-inferiority the point estimate fails. After: the lower bound used is
    min(low, delta) (kretrain.policy_guards)."""
    from kretrain.api import PromotionSpec
    from kretrain.policy import decide

    inc = sim.evaluation({"era1": 0.5}, "v1")
    cand = sim.evaluation({"era1": 0.5 + era[0]}).model_copy(update={"pooled": sim.metrics(0.5 + pooled[0])})
    ci = PairedBootstrap(
        metric="mAP50-95", confidence=0.95, resamples=1000, seed=0, incumbent_version="v1",
        pooled=EraInterval(delta=pooled[0], low=pooled[1], high=pooled[2], images=40),
        eras={"era1": EraInterval(delta=era[0], low=era[1], high=era[2], images=40)},
    )  # fmt: skip
    promotion = PromotionSpec.model_validate(
        {"requiredChecks": [], "maxClassRegression": None, "minImprovement": {"absolute": 0.01, "relative": 0}}
    )
    decision = decide(cand, inc, [], promotion, ["era1"], ci)
    assert decision.passed is passes, decision.reasons


# -- 3./2. a trainer-written version.json naming objects outside the version's folder ---------------------------
def _record(uri: str = f"{BASE}/weights-abc.pt", artifact: str = f"{BASE}/model-abc.onnx") -> VersionRecord:
    return VersionRecord.model_validate({
        "model": "m", "version": "run-2", "uri": uri, "sha256": "a" * 64, "size": 1,
        "registeredAt": "2026-12-01T23:00:00Z",
        "artifacts": [{"format": "onnx", "uri": artifact, "sha256": "b" * 64, "size": 1}],
    })  # fmt: skip


NOTICE_CASES = [
    ("own-folder", _record(), None),
    ("weights-of-another-version", _record(uri="s3://reg/m/versions/v1/weights-abc.pt"), "weights"),
    ("weights-in-another-bucket", _record(uri="s3://evil/weights.pt"), "weights"),
    ("weights-dotdot", _record(uri=f"{BASE}/../v1/weights-abc.pt"), "weights"),
    ("weights-in-a-subfolder", _record(uri=f"{BASE}/sub/weights.pt"), "weights"),
    ("weights-prefix-sibling", _record(uri=f"{BASE}x/weights.pt"), "weights"),
    ("artifact-of-another-version", _record(artifact="s3://reg/m/versions/v1/model-abc.onnx"), "artifact"),
    ("artifact-in-another-bucket", _record(artifact="s3://evil/model.onnx"), "artifact"),
]  # fmt: skip


@pytest.mark.parametrize(("info", "phrase"), [c[1:] for c in NOTICE_CASES], ids=[c[0] for c in NOTICE_CASES])
def test_a_signed_notice_names_only_objects_in_the_version_folder(info: VersionRecord, phrase: str | None) -> None:
    """Before: build_notice copied version.json's uri and artifacts into the HMAC-signed body unchecked, so a
    trainer could have the serving side fetch another version's (or bucket's) weights under the operator's
    signature (the registry's readers refuse such a record). After: ValueError, the delivery is given up."""
    args = dict(registry="s3://reg", pointer="incumbent", previous="v1", namespace="ns", retrain_job="job",
                promoted_at="2026-12-01T23:00:00Z")  # fmt: skip
    if phrase is None:
        assert notify.build_notice(info=info, **args).weights.uri == info.uri
        return
    with pytest.raises(ValueError, match=phrase):
        notify.build_notice(info=info, **args)


# -- 2. a status writer's forged delivery record -------------------------------------------------------------
@pytest.mark.parametrize(
    "forged",
    ["garbage", "2026-12-01T23:00:00+00:00", "2026-13-45T99:99:99Z", ""],
    ids=["garbage", "offset-form", "impossible-date", "empty"],
)
def test_a_forged_next_attempt_time_does_not_crash_the_timer(forged: str) -> None:
    """Before: notify.due raised ValueError on an unparsable status.notifications[].nextAttemptAt (the timer
    failed on every tick, the delivery stuck). After: an unreadable time is read as due now."""
    from datetime import UTC, datetime

    rec = Notification(kind="webhook", notice_id="ns/rtj/run/incumbent", target="h", next_attempt_at=forged)
    assert notify.due(rec, datetime(2026, 12, 1, 23, tzinfo=UTC)) is True


# -- 4. a trainer's report bloating the line report page ----------------------------------------------------
def test_a_bloated_report_does_not_bloat_the_line_report(s3_env: Any, tmp_path: Path) -> None:
    """Before: every data warning and check name of a version's report went onto the page (a ~9 MB report gave a
    page of the same size, per version, all held in memory). After: kretrain.line_report keeps MAX_SHOWN of each,
    cut to MAX_SHOWN_CHARS, and says how many more the report has."""
    from kretrain.api.status import CheckResult
    from kretrain.line_report import MAX_SHOWN, load_line
    from kretrain.line_report_html import render

    registry = Registry(ObjectStore(), f"s3://{s3_env.new_bucket('rt2-page')}/reg")
    sim.seed_incumbent(registry, MODEL, "v1", {"era1": 0.5}, tmp_path)
    report = sim.train(registry, MODEL, "run-2", {"era1": 0.6}, {"era1": 0.5}, tmp_path)
    bloated = report.model_copy(
        update={
            "data": report.data.model_copy(update={"warnings": [f"<b>w{i}</b>" + "x" * 400 for i in range(20_000)]}),
            "checks": [CheckResult(name="c" * 200 + str(i), passed=True) for i in range(5_000)],
        }
    )
    info = registry.version_info(MODEL, "run-2")
    assert info.report_uri is not None
    registry.store.put_bytes(info.report_uri, bloated.model_dump_json(by_alias=True).encode())
    page = render(load_line(registry, MODEL))
    assert len(page) < 200_000, len(page)
    assert f"{20_000 - MAX_SHOWN} more warnings" in page and "&lt;b&gt;w0&lt;/b&gt;" in page


# -- 2./3. the delivery step on a real registry: a forged version.json, a forged delivery record -----------------
class _Serving:
    """Records the two Kubernetes calls of notify_delivery.step (the real client: tests/test_notify_e2e.py)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def secret_value(self, namespace: str, name: str, key: str) -> bytes | None:
        self.calls.append(f"secret {namespace}/{name}")
        return b"k" * 32

    def patch_inference_service(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(f"patch {namespace}/{name}")
        return {}


def _promoted(s3_env: Any, tmp_path: Path, notifications: list[dict[str, Any]] | None = None) -> tuple[Any, ...]:
    from kretrain.operator import jobs
    from kretrain.operator.settings import OperatorSettings
    from kretrain.operator.steps import Deps

    uid = "0f1e2d3c-aaaa-bbbb-cccc-000000000000"
    run = jobs.run_id("ns", "rtj", uid)
    registry = Registry(ObjectStore(), f"s3://{s3_env.new_bucket('rt2-notify')}/reg")
    sim.seed_incumbent(registry, "m", "seed-1", {"e1": 0.5}, tmp_path)
    sim.train(registry, "m", run, {"e1": 0.6}, {"e1": 0.5}, tmp_path)
    registry.promote("m", run, expected="seed-1", reason="gate", actor="rt")
    settings = OperatorSettings(
        registry=registry.uri, allowed_webhook_hosts=["http://127.0.0.1:9"], allowed_webhook_secrets=["hook"],
        notify_retry_delay=1,
    )  # fmt: skip
    deps = Deps(settings=settings, kube=None, registry_for=lambda s: registry, adopt=lambda o: None,  # type: ignore[arg-type]
                now=lambda: "2026-12-01T23:00:00Z")  # fmt: skip
    serving = {"webhook": {"url": "http://127.0.0.1:9/hook", "secretRef": {"name": "hook"}},
               "inferenceService": {"name": "detector"}}  # fmt: skip
    status: dict[str, Any] = {"state": "Promoted"}
    if notifications is not None:
        status["notifications"] = notifications
    body = {
        "metadata": {"namespace": "ns", "name": "rtj", "uid": uid, "generation": 1},
        "spec": {"model": "m", "dataset": {"uri": "s3://data/set", "eras": ["e1"]},
                 "storage": {"registry": registry.uri}, "serving": serving},
        "status": status,
    }  # fmt: skip
    return registry, run, deps, body


def test_a_version_json_naming_another_versions_weights_tells_nobody(s3_env: Any, tmp_path: Path) -> None:
    """Before: the trainer's version.json (written at registration) could name the incumbent's weights (or any
    bucket's) and the operator signed and POSTed it, and patched the InferenceService. After: both deliveries
    are given up with the reason; no Secret is read, nothing is patched."""
    import json

    from kretrain.operator.notify_delivery import step

    registry, run, deps, body = _promoted(s3_env, tmp_path)
    uri = f"{registry.version_uri('m', run)}/version.json"
    record = json.loads(registry.store.get_bytes(uri))
    record["uri"] = registry.version_info("m", "seed-1").uri
    registry.store.put_bytes(uri, json.dumps(record).encode())
    kube = _Serving()
    out = step(body, deps, kube)
    recs = {r["kind"]: r for r in out.status["notifications"]}
    assert kube.calls == [] and set(recs) == {"webhook", "inferenceService"}
    assert all(r["givenUp"] and "not an object in" in r["lastError"] for r in recs.values()), recs


def test_a_forged_delivery_record_is_rewritten_not_fatal(s3_env: Any, tmp_path: Path) -> None:
    """Before: a status writer's nextAttemptAt 'soon' made every tick of the timer raise ValueError. After: the
    attempt is made (the key read, the patch sent) and the record gets a well-formed time or is delivered."""
    from kretrain.operator.notify_delivery import step

    _, run, deps, body = _promoted(s3_env, tmp_path)
    forged = [{"kind": k, "noticeId": f"ns/rtj/{run}/incumbent", "target": "x", "attempts": 1, "nextAttemptAt": "soon"}
              for k in ("webhook", "inferenceService")]  # fmt: skip
    body["status"]["notifications"] = forged
    kube = _Serving()
    out = step(body, deps, kube)
    recs = {r["kind"]: r for r in out.status["notifications"]}
    assert kube.calls == ["secret ns/hook", "patch ns/detector"]
    assert recs["inferenceService"]["delivered"] and recs["webhook"]["attempts"] == 2
    assert recs["webhook"]["nextAttemptAt"] == "2026-12-01T23:00:02Z"  # nothing listens on :9: retried later


def test_intervals_at_a_lower_confidence_than_the_spec_are_not_used() -> None:
    """Before: the trainer reported a 50% interval (narrow) where the spec asks for 95%, and the gate took its
    lower bound as if it were the 95% one (+0.012 shown). After: intervals at another confidence are not used;
    the point estimates decide (the most lenient decision any report gets: every bound is capped by its point
    estimate) and a reason says so. Here the point gain +0.02 reaches minImprovement +0.01 on its own."""
    from kretrain.api import PromotionSpec
    from kretrain.policy import decide

    inc = sim.evaluation({"era1": 0.5}, "v1")
    cand = sim.evaluation({"era1": 0.52})
    narrow = PairedBootstrap(
        metric="mAP50-95", confidence=0.5, resamples=1000, seed=0, incumbent_version="v1",
        pooled=EraInterval(delta=0.02, low=0.012, high=0.028, images=40),
        eras={"era1": EraInterval(delta=0.02, low=0.012, high=0.028, images=40)},
    )  # fmt: skip
    promotion = PromotionSpec.model_validate(
        {"requiredChecks": [], "maxClassRegression": None, "minImprovement": {"absolute": 0.01}, "confidence": 0.95}
    )
    decision = decide(cand, inc, [], promotion, ["era1"], narrow)
    assert any("50% confidence, not the 95%" in r for r in decision.reasons), decision.reasons
    assert not any("Improvement shown" in r and "CI" in r for r in decision.reasons), decision.reasons
    wide = narrow.model_copy(
        update={"confidence": 0.95, "pooled": EraInterval(delta=0.02, low=-0.01, high=0.05, images=40)}
    )
    assert not decide(cand, inc, [], promotion, ["era1"], wide).passed  # at the spec's level the interval decides


def test_a_bloated_report_gives_a_bounded_model_card() -> None:
    """Before: the card kept the report's whole data summary, check details and training args (a ~9 MB report
    gave a ~9 MB card.json, rewritten on every poll while awaiting approval). After: kretrain.modelcard bounds
    them (MAX_WARNINGS, MAX_TEXT, MAX_ARGS) and counts what was cut."""
    import json

    from kretrain.api import Decision
    from kretrain.api.status import CheckResult
    from kretrain.modelcard import MAX_WARNINGS, build_card, render_markdown

    report = sim.report("run-2", MODEL, {"model": MODEL}, {"era1": 0.6}, {"era1": 0.5}, None)
    bloated = report.model_copy(
        update={
            "data": report.data.model_copy(
                update={"warnings": ["w" * 400] * 20_000, "classes": [f"c{i}" * 50 for i in range(20_000)]}
            ),
            "checks": [CheckResult(name="n", passed=True, detail="d" * 1_000_000)],
            "training": report.training.model_copy(update={"args": {f"a{i}": "x" * 100 for i in range(20_000)}}),
        }
    )
    assert len(bloated.model_dump_json()) > 9_000_000
    card = build_card(bloated, Decision(promoted=False, passed=False, mode="auto"), "GateFailed", "mAP50-95")
    size = len(json.dumps(card.dump()))
    assert size < 1_000_000, size  # 4096 class names cut to 128 characters are most of it
    assert len(render_markdown(card)) < 1_000_000
    assert card.data.warnings[-1] == f"... {20_000 - MAX_WARNINGS} more warnings (see the run's report.json)"


def test_the_largest_card_conclude_can_write_is_readable() -> None:
    """A hostile report with 64 eras x 4096 long class names and 100000 gate reasons still gives a card.json
    under MAX_CARD_BYTES (reasons capped at MAX_REASONS), so a card bigger than that is not one the operator wrote."""
    import json

    from kretrain.api import Decision
    from kretrain.modelcard import MAX_CARD_BYTES, MAX_REASONS, build_card

    eras = {f"era-{i}-" + "e" * 100: 0.5 for i in range(64)}
    report = sim.report("run-2", MODEL, {"model": MODEL}, eras, eras, None)
    names = {f"class-{i}-" + "n" * 300: 0.5 for i in range(5000)}
    cand = report.candidate_evaluation
    cand = cand.model_copy(
        update={"eras": {e: m.model_copy(update={"per_class": names}) for e, m in cand.eras.items()}}
    )
    decision = Decision(promoted=False, passed=False, mode="auto", reasons=["r" * 5000] * 100_000)
    card = build_card(report.model_copy(update={"candidate_evaluation": cand}), decision, "GateFailed", "mAP50-95")
    assert len(card.decision.reasons) == MAX_REASONS + 1
    assert len(json.dumps(card.dump(), indent=2, sort_keys=True)) < MAX_CARD_BYTES


def test_a_forged_or_foreign_card_is_not_read_as_the_decision(s3_env: Any, tmp_path: Path) -> None:
    """Before: read_card took any card.json in the version's folder: the trainer could copy a promoted version's
    card there (or write a 16 MiB one), and the line report and `kretrain models history` showed it as this
    version's decision. After: a card naming another version, or over MAX_CARD_BYTES, reads as None."""
    from kretrain.modelcard import CARD_JSON, MAX_CARD_BYTES, read_card
    from kretrain.store import join_uri

    registry = Registry(ObjectStore(), f"s3://{s3_env.new_bucket('rt2-card')}/reg")
    sim.seed_incumbent(registry, MODEL, "v1", {"era1": 0.5}, tmp_path)
    sim.train(registry, MODEL, "run-2", {"era1": 0.6}, {"era1": 0.5}, tmp_path)
    sim.train(registry, MODEL, "run-3", {"era1": 0.4}, {"era1": 0.5}, tmp_path)
    spec = RetrainJobSpec.model_validate({"model": MODEL, "dataset": {"uri": "s3://data/set", "eras": ["era1"]}})
    report = registry.read_run_report(MODEL, "run-2")
    assert report is not None and conclude(registry, report, spec, actor="rt", run_id="run-2").reason == "Promoted"
    promoted = registry.store.get_bytes(join_uri(registry.version_uri(MODEL, "run-2"), CARD_JSON))
    theirs = join_uri(registry.version_uri(MODEL, "run-3"), CARD_JSON)
    registry.store.put_bytes(theirs, promoted)  # the trainer of run-3 copies run-2's card into its folder
    assert read_card(registry, MODEL, "run-2") is not None and read_card(registry, MODEL, "run-3") is None
    registry.store.put_bytes(theirs, promoted[:-1] + b" " * MAX_CARD_BYTES + b"}")
    assert read_card(registry, MODEL, "run-3") is None


def test_a_report_without_intervals_is_decided_on_point_estimates_and_says_so() -> None:
    """By design (docs/gate.md): under uncertainty bootstrap a report without usable intervals (an older trainer
    image) is judged on its point estimates, with a reason naming why. That is no loophole: a trainer can always
    report intervals as narrow as its point estimates (the gate caps every bound at its point estimate), so the
    point estimates are already the most lenient decision a report can get; the bootstrap guards against noise
    in honest evaluations, not against a dishonest trainer (docs/install.md, what kretrain cannot enforce)."""
    from kretrain.api import PromotionSpec
    from kretrain.policy import decide

    inc, cand = sim.evaluation({"era1": 0.5}, "v1"), sim.evaluation({"era1": 0.511})
    promotion = PromotionSpec.model_validate(
        {"requiredChecks": [], "maxClassRegression": None, "minImprovement": {"absolute": 0.01}}
    )
    assert promotion.uncertainty == "bootstrap"
    decision = decide(cand, inc, [], promotion, ["era1"], None)
    assert decision.passed and any("Decided on point estimates: the report carries no" in r for r in decision.reasons)
