"""Bring your data: import Ultralytics, COCO and Pascal VOC datasets into kretrain eras (`kretrain data import`)."""

from kretrain.trainer.data_import.errors import ImportInputError
from kretrain.trainer.data_import.splits import SPLITS_NAME, EraSplits, read_era_splits, split_with_override
from kretrain.trainer.data_import.writer import READY_NAME, ImportResult, import_dataset

__all__ = [
    "READY_NAME",
    "SPLITS_NAME",
    "EraSplits",
    "ImportInputError",
    "ImportResult",
    "import_dataset",
    "read_era_splits",
    "split_with_override",
]
