"""The era markers an import writes (`_IMPORTING` first, `_READY` last) and the check a reader of an era makes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kretrain.api.base import ApiModel

if TYPE_CHECKING:
    from kretrain.store import ObjectStore

READY_NAME = "_READY"
"""The era's completion marker (what a RetrainSchedule waits for); an import writes it last."""
IMPORTING_NAME = "_IMPORTING"
"""Present while an import writes the era (first object written, last deleted): the era is not consistent."""
MARKERS = (READY_NAME, IMPORTING_NAME)


class ReadyMarker(ApiModel):
    """The body of `<era>/_READY`: what was imported (its presence alone marks the era complete)."""

    imported_by: str = "kretrain data import"
    """The tool that wrote the era."""
    format: str
    """Source format (ultralytics, coco, voc)."""
    source: str
    """The source as given on the command line."""
    images: int
    """Images in the era."""
    boxes: int
    """Boxes in the era's labels."""
    content_digest: str
    """sha256 over the sorted `key<TAB>md5` lines of every other object of the era."""


class EraBeingWritten(ValueError):
    """An era changed under a reader: an import was writing or replacing it."""


def check_era_settled(store: ObjectStore, era_uri: str, listed: Mapping[str, str]) -> None:
    """EraBeingWritten if the era read from `listed` (key -> ETag, the listing a sync used) was not settled.

    Not settled: the listing holds `_IMPORTING`, or it held `_READY` and, after the sync, `_READY` is
    gone or has another ETag, or `_IMPORTING` has appeared. Eras without markers (not written by an
    import) cost nothing: no request is made.
    """
    from kretrain.store import join_uri

    if IMPORTING_NAME in listed:
        raise EraBeingWritten(
            f"{era_uri}/{IMPORTING_NAME} exists: an import is writing this era (or failed part-way; re-run it)"
        )
    if READY_NAME not in listed:
        return
    after = store.head(join_uri(era_uri, READY_NAME))
    if after is None or after.etag != listed[READY_NAME] or store.head(join_uri(era_uri, IMPORTING_NAME)):
        raise EraBeingWritten(f"{era_uri} was replaced while it was read ({READY_NAME} changed); read it again")
