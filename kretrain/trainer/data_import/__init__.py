"""Bring your data: import Ultralytics, COCO and Pascal VOC datasets into kretrain eras (`kretrain data import`).

Nothing is imported here: `kretrain data import` is registered in the operator image too, which has no numpy
(the splits and writer modules reach the data pipeline); import from the submodules.
"""
