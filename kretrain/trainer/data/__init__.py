"""The trainer's data pipeline: pull eras, validate, split, statistics, training set (`prepare`)."""

from kretrain.trainer.data.prepare import PreparedData, prepare, prepare_pulled
from kretrain.trainer.data.pull import PulledDataset, pull_dataset, scan_local
from kretrain.trainer.data.validation import DataValidationError

__all__ = [
    "DataValidationError",
    "PreparedData",
    "PulledDataset",
    "prepare",
    "prepare_pulled",
    "pull_dataset",
    "scan_local",
]
