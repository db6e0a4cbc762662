"""The data summary `kretrain run` prints: from the real data stage on SeaweedFS (excluded items, a class first
labelled in the newest era, a run the bad share stops) and table-driven cases of what the text must show."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from kretrain.api import DataSummary, RetrainJobSpec
from kretrain.operator.bounds import MAX_CONDITION_MESSAGE
from kretrain.operator.data_findings import (
    DATA_VALIDATED,
    DATA_WARNING_EVENT,
    DATA_WARNINGS,
    MAX_DATA_EVENTS,
    MAX_EVENT_MESSAGE,
    data_ready,
)
from kretrain.store import ObjectStore
from kretrain.trainer.data import DataValidationError
from kretrain.trainer.data import prepare as data_prepare
from kretrain.trainer.data.prepare import REPORT_NAME
from kretrain.trainer.data_summary import (
    DATA_REPORT,
    MAX_WARNINGS,
    DataReportCounts,
    print_data_summary,
    read_data_report,
    summary_text,
)
from kretrain.trainer.synthetic import DEFAULT_CLASSES, Defects, demo_eras, generate_dataset, upload_dataset


def _store(s3: Any) -> ObjectStore:
    return ObjectStore(
        endpoint_url=s3.endpoint, region="us-east-1", access_key=s3.server.access_key, secret_key=s3.server.secret_key
    )


def _spec(uri: str, max_bad: float) -> RetrainJobSpec:
    dataset = {"uri": uri, "eras": ["era1", "era2"], "maxBadFraction": max_bad}
    return RetrainJobSpec.model_validate({"model": "m", "dataset": dataset, "strategy": {"type": "full"}})


@pytest.fixture(scope="module")
def dataset(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    """era1 clean without the class 'cross'; era2 with corrupt images, bad labels, an orphan label, backgrounds
    and the first 'cross' boxes (the foreground-shift warning)."""
    root = tmp_path_factory.mktemp("src")
    era1, era2 = demo_eras(images=24, seed=3)
    era2.defects = Defects(corrupt_images=2, bad_label_lines=1, orphan_labels=1, background_images=2)
    generate_dataset(root, [era1, era2], DEFAULT_CLASSES, imgsz=32)
    uri = f"s3://{s3.new_bucket('sum')}/shapes"
    upload_dataset(root, _store(s3), uri)
    return uri


def test_summary_of_a_real_data_stage(dataset: str, s3: Any, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    prepared = data_prepare(_spec(dataset, 0.5), _store(s3), scratch, tmp_path / "cache", chart=False)
    assert prepared.report_path == (scratch / DATA_REPORT).resolve()
    out = io.StringIO()
    print_data_summary(out, prepared.summary, scratch)
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith("data: 2 eras, ") and "4 bad items excluded" in lines[0], lines[0]
    era2 = next(line.split() for line in lines if line.startswith("era2"))
    counts = prepared.summary.eras["era2"]
    assert era2 == ["era2", *(str(counts[k]) for k in ("train", "val", "test", "excluded", "background"))]
    assert counts["excluded"] == 3 and counts["background"] == 2
    findings = next(line for line in lines if line.startswith("findings: "))
    assert "error undecodable_image 2" in findings and "error label_without_image 1" in findings
    assert "warning class_new_in_era 1" in findings and "info background_image 2" in findings
    assert findings.index("error") < findings.index("warning") < findings.index("info")
    warning = next(line for line in lines if line.startswith("warning: "))
    assert "'cross'" in warning and "first labelled in new era 'era2'" in warning
    # report.json carries the counts too: the same line without the pod's data_report.json (the cluster's view).
    assert prepared.summary.finding_counts["error:undecodable_image"] == 2
    assert findings in summary_text(prepared.summary, None)
    reason, message, _ = data_ready(prepared.summary)
    assert reason == DATA_WARNINGS and findings in message


def test_summary_of_a_run_the_bad_share_stopped(dataset: str, s3: Any, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    with pytest.raises(DataValidationError):
        data_prepare(_spec(dataset, 0.01), _store(s3), scratch, tmp_path / "cache", chart=False)
    out = io.StringIO()
    print_data_summary(out, None, scratch)  # what `kretrain run` prints before the trainer's error
    text = out.getvalue()
    assert text.startswith("data: 2 eras, ") and "error undecodable_image 2" in text
    assert "data error: " in text and "dataset.maxBadFraction 1.0%" in text


def test_data_report_location_is_the_trainers() -> None:
    assert DATA_REPORT.name == REPORT_NAME


def test_nothing_is_printed_before_the_data_stage(tmp_path: Path) -> None:
    out = io.StringIO()
    print_data_summary(out, None, tmp_path)
    assert out.getvalue() == ""


BIG = DataSummary(eras={"e1": {"train": 1}}, warnings=[f"w{i}" for i in range(MAX_WARNINGS + 5)])


@pytest.mark.parametrize(
    ("summary", "report", "expected", "absent"),
    [
        pytest.param(
            DataSummary(eras={"e1": {"train": 7, "val": 2, "test": 1, "excluded": 0, "background": 0}}),
            None,
            ["data: 1 era, 10 images used, 0 bad items excluded", "e1   7      2    1     0         0"],
            ["findings:", "total"],
            id="one-clean-era-no-data-report",
        ),
        pytest.param(
            DataSummary(
                eras={"a": {"train": 1, "excluded": 2}, "b": {"train": 3, "background": 1}}, errors=2, train_images=4
            ),
            DataReportCounts(findingCounts={"info:background_image": 1, "error:corrupt_image": 2}),
            ["(4 in the training set), 2 bad items excluded", "total  4", "findings: error corrupt_image 2, info"],
            [],
            id="totals-and-codes",
        ),
        pytest.param(
            DataSummary(warnings=["class 'x\x1b[2J\u202e' is first labelled in new era 'e2'"]),
            None,
            ["warning: class 'x\\x1b[2J\\u202e'"],
            ["\x1b", "\u202e"],
            id="terminal-escapes-in-a-class-name",
        ),
        pytest.param(
            DataSummary(warnings=["y" * 10_000]),
            None,
            ["warning: " + "y" * 397 + "..."],
            ["y" * 401],
            id="long-warning",
        ),
        pytest.param(
            BIG, None, [f"w{MAX_WARNINGS - 1}", "(+5 more warnings"], [f"w{MAX_WARNINGS}\n"], id="many-warnings"
        ),
        pytest.param(
            None,
            DataReportCounts(counts={"e1": {"train": 5, "excluded": 9}}, badItems=9, fatal=["9 of 14 items are bad"]),
            ["data: 1 era, 5 images used, 9 bad items excluded", "findings: none", "data error: 9 of 14 items are bad"],
            [],
            id="failed-validation-data-report-only",
        ),
        pytest.param(None, None, ["data: no data summary"], ["findings"], id="nothing"),
    ],
)
def test_summary_text(
    summary: DataSummary | None, report: DataReportCounts | None, expected: list[str], absent: list[str]
) -> None:
    text = summary_text(summary, report) + "\n"
    for part in expected:
        assert part in text, (part, text)
    for part in absent:
        assert part not in text, (part, text)


@pytest.mark.parametrize(
    ("content", "valid"),
    [
        pytest.param(
            b'{"counts": {"e1": {"train": 1}}, "findings": [{"any": "thing"}], "status": "ok"}', True, id="extra-fields"
        ),
        pytest.param(b"not json", False, id="not-json"),
        pytest.param(b'{"findingCounts": {"error:x": "many"}}', False, id="count-not-int"),
        pytest.param(b'{"counts": []}', False, id="counts-not-a-map"),
        pytest.param(b'{"badItems": -1}', False, id="negative"),
    ],
)
def test_read_data_report(tmp_path: Path, content: bytes, valid: bool) -> None:
    path = tmp_path / "data_report.json"
    path.write_bytes(content)
    assert (read_data_report(path) is not None) is valid


def test_an_oversized_data_report_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data_report.json"
    path.write_bytes(b'{"badItems": 1}' + b" " * 2048)
    monkeypatch.setattr("kretrain.trainer.data_summary.MAX_DATA_REPORT_BYTES", 1024)
    assert read_data_report(path) is None


# The operator's side: DataReady message and Warning Events from report.json's DataSummary (untrusted).
COUNTS = {"train": 16, "val": 3, "test": 5, "excluded": 1, "background": 2}


@pytest.mark.parametrize(
    ("summary", "reason", "in_message", "events"),
    [
        pytest.param(
            DataSummary(eras={"era1": COUNTS}, errors=1, train_images=16),
            DATA_VALIDATED,
            [
                "16 training images; 1 bad items excluded. era1: 24 used (16 train, 3 val, 5 test), 1 excluded, 2 background"
            ],
            [],
            id="clean",
        ),
        pytest.param(
            DataSummary(eras={"era1": COUNTS}, errors=2, finding_counts={"info:background_image": 2, "error:x": 2}),
            DATA_VALIDATED,
            ["2 bad items excluded; findings: error x 2, info background_image 2. era1:"],
            [],
            id="finding-counts",
        ),
        pytest.param(
            DataSummary(eras={"era1": COUNTS}, warnings=["class 'cross' is first labelled in new era 'era2'"]),
            DATA_WARNINGS,
            ["1 warning: class 'cross' is first labelled"],
            ["class 'cross' is first labelled in new era 'era2'"],
            id="one-warning-one-event",
        ),
        pytest.param(
            DataSummary(warnings=[f"w{i}" for i in range(5)]),
            DATA_WARNINGS,
            ["5 warnings: w0 | w1"],
            ["w0", "w1", "w2", "w3", "w4"],
            id="five-warnings-five-events",
        ),
        pytest.param(
            DataSummary(warnings=[f"w{i}" for i in range(500)]),
            DATA_WARNINGS,
            ["500 warnings: w0 | w1"],
            ["w0", "w1", "w2", "w3", "496 more data warnings: see the run's report.json"],
            id="many-warnings-bounded-events",
        ),
        pytest.param(
            DataSummary(warnings=["\x1b[31mred\u202e" + "z" * 5000]),
            DATA_WARNINGS,
            ["\\x1b[31mred\\u202e"],
            ["\\x1b[31mred\\u202e" + "z" * (MAX_EVENT_MESSAGE - 3 - len("\\x1b[31mred\\u202e")) + "..."],
            id="escapes-and-a-huge-warning",
        ),
    ],
)
def test_data_ready_condition_and_events(
    summary: DataSummary, reason: str, in_message: list[str], events: list[str]
) -> None:
    got_reason, message, got = data_ready(summary)
    assert got_reason == reason
    for part in in_message:
        assert part in message, (part, message)
    assert "\x1b" not in message and len(message) <= MAX_CONDITION_MESSAGE
    assert [e.message for e in got] == events
    assert all(e.type == "Warning" and e.reason == DATA_WARNING_EVENT for e in got)
    assert len(got) <= MAX_DATA_EVENTS


def test_data_ready_message_is_bounded_for_the_largest_summary() -> None:
    eras = {f"era-{i:04d}-{'x' * 100}": COUNTS for i in range(64)}
    _, message, _ = data_ready(DataSummary(eras=eras, warnings=["w" * 100_000] * 1000))
    assert len(message) <= MAX_CONDITION_MESSAGE
