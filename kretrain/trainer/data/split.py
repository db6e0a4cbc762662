"""Deterministic train/val/test assignment by hashing (seed, era, object key) into [0, 1)."""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def hash_unit(*parts: object) -> float:
    """A uniform number in [0, 1) from the parts (stable across runs, machines and Python versions)."""
    digest = hashlib.blake2b("\0".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_of(seed: int, era: str, key: str, val: float, test: float) -> Split:
    """The split of one image: `test` below `test`, `val` below `test + val`, else `train`.

    Only the image's own (seed, era, key) decide, so adding or removing other images never moves it.
    `key` is the object key relative to the era folder (e.g. `images/x.png`).
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"split fractions must be in [0, 1) and sum below 1, got val={val} test={test}")
    u = hash_unit(seed, era, key)
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def assign_splits(seed: int, era: str, keys: list[str], val: float, test: float) -> dict[str, Split]:
    """`split_of` for many keys of one era."""
    return {k: split_of(seed, era, k, val, test) for k in keys}
