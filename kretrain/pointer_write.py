"""The conditional write of a registry pointer (the incumbent, an alias): exactly one of racing writers wins."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from kretrain.store import PreconditionFailed

if TYPE_CHECKING:  # pragma: no cover
    from kretrain.store import ObjectStore


class Pointer(Protocol):
    """What the write needs of a pointer record: the version it names and the id of the write that wrote it."""

    @property
    def version(self) -> str:
        """The version the pointer names."""
        ...

    @property
    def txn(self) -> str:
        """Id of the write (tells a retried request of ours from another writer's)."""
        ...


def write_pointer(
    store: ObjectStore,
    uri: str,
    data: bytes,
    etag: str | None,
    txn: str,
    reread: Callable[[], tuple[Pointer, str] | None],
    lost: Callable[[str | None], Exception],
) -> None:
    """Write `data` (a pointer whose txn is `txn`) to `uri`: If-None-Match when `etag` is None (there was no
    pointer), else If-Match on `etag`.

    When the condition fails the pointer is read again (`reread`): if it carries our `txn`, a retried request
    of ours won after all and the write stands; otherwise `lost(winner)` is raised, `winner` being the version
    the pointer names now (None when there is none).
    """
    try:
        if etag is None:
            store.put_if_absent(uri, data)
        else:
            store.compare_and_swap(uri, data, etag)
    except PreconditionFailed:
        now = reread()
        if now is None or now[0].txn != txn:  # a retried request of ours may have won after all
            raise lost(now[0].version if now else None) from None
