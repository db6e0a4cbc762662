"""Map a source's class ids to the line's classes.yaml by name (reorder, compact, append, catch typos)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from kretrain.trainer.data_import.names import normalise_class


class ClassMapError(ValueError):
    """The source's classes cannot be mapped onto the line's class list as asked."""


@dataclass(frozen=True)
class ClassMapping:
    """Source class id -> line class id, and the line's class list after the import."""

    ids: dict[int, int]
    """Every source class id that has boxes (and, on a line's first import, every source class)."""
    classes: list[str]
    """The line's classes.yaml after the import (the old list, plus appended names)."""
    added: list[str] = field(default_factory=list)
    """Names appended to an existing line (only with allow_new)."""
    unused: list[str] = field(default_factory=list)
    """Source classes without boxes that are not in the line's list (not added)."""


def check_source_names(source: Mapping[int, str], where: str) -> None:
    """ClassMapError if a source name is empty, repeated, or equal to another after case/whitespace folding."""
    seen: dict[str, str] = {}
    for sid, name in sorted(source.items()):
        if not isinstance(name, str) or not name.strip():
            raise ClassMapError(f"{where}: class id {sid} has no name ({name!r})")
        if name != name.strip() or "\n" in name:
            raise ClassMapError(f"{where}: class name {name!r} (id {sid}) has leading/trailing whitespace or a newline")
        key = normalise_class(name)
        if key in seen:
            other = seen[key]
            what = "is repeated" if other == name else f"differs from {other!r} only in case or whitespace"
            raise ClassMapError(f"{where}: class name {name!r} (id {sid}) {what}")
        seen[key] = name


def map_classes(
    line: list[str] | None,
    source: Mapping[int, str],
    used: Collection[int],
    *,
    allow_new: bool = False,
    where: str = "source",
) -> ClassMapping:
    """Map source ids to line ids by exact class name.

    `line` is the line's current classes.yaml (None: the line has none yet, and the source's classes
    in id order become it). `used` are the source ids that have boxes: only they must map onto an
    existing line; unused unknown names are reported, not added. A name that matches a line class
    only after case/whitespace folding is a likely typo and always refused; a new name is refused
    unless `allow_new` (then appended in source-id order, so existing ids never move).
    """
    check_source_names(source, where)
    unknown_ids = sorted(set(used) - set(source))
    if unknown_ids:
        raise ClassMapError(f"{where}: class ids {unknown_ids} have boxes but no name")
    if line is None:
        ordered = [source[sid] for sid in sorted(source)]
        return ClassMapping(ids={sid: i for i, sid in enumerate(sorted(source))}, classes=ordered)
    exact = {name: i for i, name in enumerate(line)}
    folded = {normalise_class(name): name for name in line}
    ids: dict[int, int] = {}
    typos: list[str] = []
    new: list[int] = []
    unused: list[str] = []
    for sid in sorted(source):
        name = source[sid]
        if name in exact:
            ids[sid] = exact[name]
        elif sid not in used:
            unused.append(name)
        elif normalise_class(name) in folded:
            typos.append(f"{name!r} (id {sid}) vs the line's {folded[normalise_class(name)]!r}")
        else:
            new.append(sid)
    if typos:
        raise ClassMapError(
            f"{where}: class names differ from the line's classes.yaml only in case or whitespace, likely typos: "
            f"{'; '.join(typos)}. Rename them in the source to match exactly."
        )
    if new and not allow_new:
        names = ", ".join(repr(source[sid]) for sid in new)
        raise ClassMapError(
            f"{where}: classes {names} are not in the line's classes.yaml {line}; "
            "pass --allow-new-classes to append them (older eras may contain them unlabelled)"
        )
    classes = list(line)
    for sid in new:
        ids[sid] = len(classes)
        classes.append(source[sid])
    return ClassMapping(ids=ids, classes=classes, added=[source[sid] for sid in new], unused=unused)
