"""Errors of an import and the size limits that bound what is read from an untrusted source."""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

MAX_ANNOTATION_JSON_BYTES = 512 * MIB
"""A COCO annotation JSON (COCO 2017 train instances is about 450 MiB)."""
MAX_XML_BYTES = 1 * MIB
"""One Pascal VOC annotation XML (a few KiB in practice)."""
MAX_YAML_BYTES = 1 * MIB
"""An Ultralytics dataset YAML, or a line's classes.yaml."""
MAX_LIST_BYTES = 64 * MIB
"""An Ultralytics image list (.txt) or a VOC ImageSets file."""
MAX_LABEL_BYTES = 4 * MIB
"""One YOLO label file."""
MAX_IMAGE_BYTES = 256 * MIB
"""One image file."""
MAX_ERRORS_SHOWN = 20
"""Problems listed in one error message; the rest are counted."""


class ImportInputError(Exception):
    """The source cannot be imported as it is: the message names the file and what is wrong."""


def raise_problems(problems: list[str], what: str) -> None:
    """Raise ImportInputError listing the problems (at most MAX_ERRORS_SHOWN) if there are any."""
    if not problems:
        return
    if len(problems) == 1:
        raise ImportInputError(f"{problems[0]} (nothing was imported)")
    shown = problems[:MAX_ERRORS_SHOWN]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise ImportInputError(
        f"{len(problems)} problems in {what} (nothing was imported):\n  " + "\n  ".join(shown) + more
    )
