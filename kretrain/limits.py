"""Size caps (bytes) on objects read from S3: one untrusted object must not exhaust a process's memory."""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# Registry records: versions/<v>/version.json, incumbent.json, history/<seq>.json (a few KiB in practice;
# a version's lineage lists its eras and their hashes, about 100 bytes each).
MAX_RECORD_BYTES = 1 * MIB
# versions/<v>/spec.json: the RetrainJob spec a version was trained with.
MAX_SPEC_BYTES = 1 * MIB
# report.json (of a run or a version): per-class metrics for every era (80 classes x 64 eras is ~1 MiB).
MAX_REPORT_BYTES = 16 * MIB
# runs/<run-id>/progress.json: rewritten every epoch by the trainer, read by the operator.
MAX_PROGRESS_BYTES = 1 * MIB
# A dataset's classes.yaml (class names).
MAX_CLASSES_BYTES = 1 * MIB
# One YOLO label file (one line per box, ~40 bytes a line).
MAX_LABEL_BYTES = 4 * MIB
# The body of an S3 error answer that the fast path reads (the rest is not read; the connection is closed).
MAX_ERROR_BODY_BYTES = 64 * KIB
