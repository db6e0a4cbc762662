"""What validation produces: findings, one record per image, the result of a run over every era."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kretrain.trainer.data.split import Split

Severity = Literal["error", "warning", "info"]
Box = tuple[int, float, float, float, float]


class DataValidationError(Exception):
    """The data cannot be trained on (the data report says why, in detail)."""


def unsafe_key_reason(key: str) -> str | None:
    """Why an object key (or path) cannot go into an image list, or None when it can.

    Ultralytics reads its image lists with `str.splitlines()`, which also splits on U+0085, U+2028,
    U+2029, VT, FF and U+001C-U+001E: a key holding one of them would inject a second path into the list.
    Refused: the store's UNSAFE_KEY_CATEGORIES (controls, format characters, line/paragraph separators,
    surrogates), which cover every character `splitlines` splits on (checked as well).
    """
    from kretrain.store import UNSAFE_KEY_CATEGORIES

    if key.isprintable():  # the common case, in C: none of those categories
        return None
    for ch in key:
        cat = unicodedata.category(ch)
        if cat in UNSAFE_KEY_CATEGORIES or len(f"a{ch}a".splitlines()) > 1:
            name = unicodedata.name(ch, "")
            return f"contains U+{ord(ch):04X}{' ' + name if name else ''} (category {cat})"
    return None


@dataclass
class Finding:
    """One validation finding; `excluded` says whether it removed an item from training and evaluation."""

    severity: Severity
    code: str
    era: str
    key: str
    message: str
    excluded: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the data report."""
        return {
            "severity": self.severity,
            "code": self.code,
            "era": self.era,
            "key": self.key,
            "message": self.message,
            "excluded": self.excluded,
        }


@dataclass
class ImageRecord:
    """One image of an era after inspection."""

    era: str
    key: str
    """Object key relative to the era folder, e.g. `images/x.png`."""
    path: Path
    label_path: Path | None
    sha: str = ""
    width: int = 0
    height: int = 0
    brightness: float = math.nan
    boxes: list[Box] = field(default_factory=list)
    split: Split = "train"
    excluded: bool = False

    @property
    def background(self) -> bool:
        """An image without objects (no label file or an empty one)."""
        return not self.boxes


@dataclass
class ValidationResult:
    """Everything validation found: records per era (excluded ones flagged), findings, fatal errors."""

    records: dict[str, list[ImageRecord]]
    findings: list[Finding]
    orphan_labels: dict[str, int]
    fatal: list[str]
    new_classes: dict[str, dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase: `inspect` (hash, decode, labels), `split`, `checks` (duplicates, classes)."""
    unsafe_keys: dict[str, int] = field(default_factory=dict)
    """Files per era whose key cannot be listed safely (`unsafe_key_reason`); excluded, counted as bad."""

    def kept(self, era: str) -> list[ImageRecord]:
        """The era's images that passed validation."""
        return [r for r in self.records[era] if not r.excluded]

    @property
    def items(self) -> int:
        """Images, orphan label files and unsafe keys: what the bad share is measured against."""
        return (
            sum(len(r) for r in self.records.values())
            + sum(self.orphan_labels.values())
            + sum(self.unsafe_keys.values())
        )

    @property
    def bad_items(self) -> int:
        """Excluded images, orphan label files and files with unsafe keys."""
        excluded = sum(1 for recs in self.records.values() for r in recs if r.excluded)
        return excluded + sum(self.orphan_labels.values()) + sum(self.unsafe_keys.values())

    @property
    def bad_fraction(self) -> float:
        """Share of bad items."""
        return self.bad_items / self.items if self.items else 0.0
