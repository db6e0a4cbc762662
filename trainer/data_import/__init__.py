"""Bring your data: import Ultralytics, COCO and Pascal VOC datasets into kretrain eras (`kretrain data import`)."""

from kretrain.trainer.data_import.errors import ImportInputError
from kretrain.trainer.data_import.markers import IMPORTING_NAME, READY_NAME, EraBeingWritten, check_era_settled
from kretrain.trainer.data_import.splits import SPLITS_NAME, EraSplits, read_era_splits, split_with_override
from kretrain.trainer.data_import.writer import ImportResult, import_dataset

__all__ = [
    "IMPORTING_NAME",
    "READY_NAME",
    "SPLITS_NAME",
    "EraBeingWritten",
    "EraSplits",
    "ImportInputError",
    "ImportResult",
    "check_era_settled",
    "import_dataset",
    "read_era_splits",
    "split_with_override",
]
