"""COCO detection JSON (CVAT, Roboflow, Label Studio exports) -> an import plan; crowd boxes are skipped."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kretrain.trainer.data.split import Split
from kretrain.trainer.data_import.errors import MAX_ANNOTATION_JSON_BYTES, ImportInputError, raise_problems
from kretrain.trainer.data_import.geometry import BoxError, coco_to_yolo
from kretrain.trainer.data_import.names import name_problem
from kretrain.trainer.data_import.plan import ImportItem, ImportPlan, RawBox
from kretrain.trainer.data_import.source import Source, join, parent_of, subtree


class _Coco(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class CocoImage(_Coco):
    """An entry of `images`."""

    id: int
    file_name: str
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)


class CocoAnnotation(_Coco):
    """An entry of `annotations` (only the fields a detector needs)."""

    id: int | str | None = None
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    iscrowd: int = 0

    model_config = ConfigDict(extra="ignore", strict=False)


class CocoCategory(_Coco):
    """An entry of `categories`."""

    id: int
    name: str


class CocoFile(_Coco):
    """The parts of a COCO annotation file that an import reads."""

    images: list[CocoImage]
    annotations: list[CocoAnnotation] = Field(default_factory=list)
    categories: list[CocoCategory] = Field(min_length=1)


def parse_coco(data: bytes, where: str) -> CocoFile:
    """Parse a COCO JSON; ImportInputError naming the file and the first wrong field."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ImportInputError(f"{where}: not valid JSON: {exc}") from None
    try:
        return CocoFile.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "document"
        raise ImportInputError(f"{where}: not a COCO detection file: {loc}: {first['msg']}") from None


def _image_key(file_name: str) -> str:
    parts = PurePosixPath(file_name).parts
    if len(parts) > 1 and parts[0] == "images":  # Label Studio style `images/x.jpg`
        parts = parts[1:]
    return str(PurePosixPath("images", *parts))


def plan_coco_file(source: Source, rel: str, split: Split | None, images_dir: Source | None, plan: ImportPlan) -> None:
    """Add one COCO annotation file's images to `plan` (classes must agree with earlier files)."""
    where = source.describe(rel)
    coco = parse_coco(source.read(rel, MAX_ANNOTATION_JSON_BYTES, "COCO annotation file"), where)
    problems: list[str] = []
    for cat in coco.categories:
        if plan.classes.get(cat.id, cat.name) != cat.name:
            problems.append(f"category id {cat.id} is {cat.name!r} here but {plan.classes[cat.id]!r} in another file")
        plan.classes[cat.id] = cat.name
    if len({c.id for c in coco.categories}) != len(coco.categories):
        problems.append("category ids are not unique")
    folder = parent_of(rel)
    roots = (
        [images_dir] if images_dir is not None else [subtree(source, folder), subtree(source, join(folder, "images"))]
    )
    for root in roots:
        root.files()  # one listing per folder answers every lookup below (no request per image on S3)
    images: dict[int, ImportItem] = {}
    for img in coco.images:
        problem = name_problem(img.file_name)
        if problem is not None:
            problems.append(f"image id {img.id}: file_name {img.file_name!r} {problem}")
            continue
        if img.id in images:
            problems.append(f"image id {img.id} appears twice")
            continue
        found = next((r for r in roots if r.size(img.file_name) is not None), None)
        if found is None:
            places = ", ".join(r.describe(img.file_name) for r in roots)
            problems.append(f"image id {img.id}: {img.file_name!r} not found (looked for {places})")
            continue
        size = (img.width, img.height) if img.width and img.height else None
        images[img.id] = ImportItem(
            key=_image_key(img.file_name),
            source=found,
            rel=img.file_name,
            origin=where,
            expected_size=size,
            split=split,
        )
    for n, ann in enumerate(coco.annotations):
        ref = f"annotation id {ann.id}" if ann.id is not None else f"annotation #{n}"
        if ann.category_id not in plan.classes:
            problems.append(f"{ref}: unknown category id {ann.category_id}")
            continue
        item = images.get(ann.image_id)
        if item is None:
            if not any(ann.image_id == i.id for i in coco.images):
                problems.append(f"{ref}: image_id {ann.image_id} is not in images")
            continue
        if ann.iscrowd:
            plan.skipped[("crowd", plan.classes[ann.category_id])] += 1
            continue
        if item.expected_size is not None:
            try:
                coco_to_yolo(ann.bbox, *item.expected_size)
            except BoxError as exc:
                problems.append(f"{ref} on {item.rel}: {exc}")
                continue
        item.boxes.append(RawBox(ann.category_id, "coco", ann.bbox, ref))
        plan.used.add(ann.category_id)
    raise_problems([f"{where}: {p}" for p in problems], where)
    plan.items.extend(images.values())


def plan_coco(sources: list[tuple[Source, str, Split | None]], images_dir: Source | None, described: str) -> ImportPlan:
    """The plan for one or more COCO files (e.g. a Roboflow export's train/valid/test files)."""
    plan = ImportPlan(format="coco", source=described, classes={}, used=set(), items=[], skipped=Counter())
    for source, rel, split in sources:
        plan_coco_file(source, rel, split, images_dir, plan)
    return plan
