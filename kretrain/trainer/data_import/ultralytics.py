"""An Ultralytics dataset YAML (`path`, train/val/test folders or .txt lists, `names` list or dict) -> a plan."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from kretrain.trainer.data.split import Split
from kretrain.trainer.data.validation import IMAGE_EXTENSIONS
from kretrain.trainer.data_import.errors import MAX_LIST_BYTES, MAX_YAML_BYTES, ImportInputError, raise_problems
from kretrain.trainer.data_import.names import name_problem
from kretrain.trainer.data_import.plan import ImportItem, ImportPlan
from kretrain.trainer.data_import.source import Source, join, parent_of, subtree

SPLIT_KEYS: tuple[tuple[str, Split], ...] = (("train", "train"), ("val", "val"), ("test", "test"))


def read_names(doc: dict[str, Any], where: str) -> dict[int, str]:
    """`names` as a list or an {id: name} dict (ids may be strings of digits) -> {id: name}."""
    names = doc.get("names")
    if isinstance(names, list):
        out = dict(enumerate(names))
    elif isinstance(names, dict):
        try:
            out = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            raise ImportInputError(f"{where}: `names` keys must be class ids (integers)") from None
    else:
        raise ImportInputError(f"{where}: expected `names:` as a list or an {{id: name}} mapping")
    if not out or not all(isinstance(v, str) for v in out.values()):
        raise ImportInputError(f"{where}: `names` must hold at least one class name, all strings")
    if "nc" in doc and doc["nc"] != len(out):
        raise ImportInputError(f"{where}: nc is {doc['nc']} but `names` has {len(out)} classes")
    return out


def label_rel_for(image_rel: str) -> str:
    """Ultralytics' label path: the last `images` folder becomes `labels`, the extension `.txt`."""
    parts = list(PurePosixPath(image_rel).with_suffix(".txt").parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return "/".join(parts)


def era_key_for(image_rel: str) -> str:
    """The era key: the path under the dataset root without its last `images` folder, under `images/`."""
    parts = list(PurePosixPath(image_rel).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            del parts[i]
            break
    return "/".join(["images", *parts])


def _is_image(rel: str) -> bool:
    return PurePosixPath(rel).suffix.lower().lstrip(".") in IMAGE_EXTENSIONS


def _entry_images(root: Source, entry: str, where: str) -> list[str]:
    """Image names (relative to root) of one train/val/test entry: a folder or a .txt list of images."""
    problem = name_problem(entry.removeprefix("./"))
    if problem is not None:
        raise ImportInputError(f"{where}: split entry {entry!r} {problem} (entries must be relative to `path`)")
    entry = entry.removeprefix("./").rstrip("/")
    if entry.endswith(".txt"):
        text = root.read(entry, MAX_LIST_BYTES, "image list").decode("utf-8", "replace")
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            rel = join(parent_of(entry), line[2:]) if line.startswith("./") else line
            if not root.is_s3 and Path(rel).is_absolute():
                try:
                    rel = Path(rel).resolve().relative_to(Path(root.root)).as_posix()
                except ValueError:
                    raise ImportInputError(
                        f"{root.describe(entry)} line {lineno}: {line!r} is outside the dataset root {root.root}"
                    ) from None
            problem = name_problem(rel)
            if problem is not None:
                raise ImportInputError(f"{root.describe(entry)} line {lineno}: image name {line!r} {problem}")
            out.append(rel)
        return out
    files = root.files(entry)
    if not files:
        raise ImportInputError(f"{where}: split folder {root.describe(entry)} holds no files")
    return sorted(rel for rel in files if _is_image(rel))


def plan_ultralytics(source: Source, rel: str, described: str) -> ImportPlan:
    """The plan for an Ultralytics dataset YAML; every declared class counts as used."""
    where = source.describe(rel)
    try:
        doc = yaml.safe_load(source.read(rel, MAX_YAML_BYTES, "dataset YAML"))
    except yaml.YAMLError as exc:
        raise ImportInputError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ImportInputError(f"{where}: expected a mapping with `names` and train/val/test")
    classes = read_names(doc, where)
    base = parent_of(rel)
    path = doc.get("path")
    if path is None or path in ("", "."):
        root = subtree(source, base)
    elif not isinstance(path, str):
        raise ImportInputError(f"{where}: `path` must be a string")
    elif Path(path).is_absolute():
        if source.is_s3:
            raise ImportInputError(f"{where}: `path` {path!r} is absolute; on S3 it must be relative to the YAML")
        root = Source(str(Path(path).resolve()))
    else:
        problem = name_problem(path.removeprefix("./").rstrip("/"))
        if problem is not None:
            raise ImportInputError(f"{where}: `path` {path!r} {problem}")
        root = subtree(source, join(base, path.removeprefix("./")))
    if root.is_s3:
        root.files()  # one listing answers every image and label lookup (no request per file)
    plan = ImportPlan("ultralytics", described, classes, set(classes), [])
    problems: list[str] = []
    seen: dict[str, tuple[str, Split]] = {}
    for field, split in SPLIT_KEYS:
        value = doc.get(field)
        if value is None:
            continue
        entries = value if isinstance(value, list) else [value]
        for entry in entries:
            if not isinstance(entry, str):
                raise ImportInputError(f"{where}: `{field}` entries must be strings, got {entry!r}")
            for image in _entry_images(root, entry, where):
                if root.size(image) is None:
                    problems.append(f"{root.describe(image)}: image listed in `{field}` not found")
                    continue
                key = era_key_for(image)
                if key in seen:
                    other, other_split = seen[key]
                    if other == image and other_split != split:
                        problems.append(f"{root.describe(image)}: listed in both `{other_split}` and `{field}`")
                    elif other != image:
                        problems.append(f"{root.describe(image)} and {other} would both become {key}")
                    continue
                seen[key] = (image, split)
                plan.items.append(
                    ImportItem(
                        key=key, source=root, rel=image, origin=where, label_rel=label_rel_for(image), split=split
                    )
                )
    raise_problems(problems, where)
    if not plan.items:
        raise ImportInputError(f"{where}: no images found under train/val/test")
    return plan
