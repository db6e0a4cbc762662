"""Pascal VOC (`Annotations/*.xml`, `JPEGImages/`, `ImageSets/Main/`) -> an import plan; `difficult` skipped."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
import xml.parsers.expat
from pathlib import PurePosixPath

from kretrain.trainer.data.split import Split
from kretrain.trainer.data.validation import IMAGE_EXTENSIONS
from kretrain.trainer.data_import.errors import MAX_LIST_BYTES, MAX_XML_BYTES, ImportInputError, raise_problems
from kretrain.trainer.data_import.names import name_problem
from kretrain.trainer.data_import.plan import ImportItem, ImportPlan, RawBox
from kretrain.trainer.data_import.source import Source

SPLIT_FILES: dict[str, Split] = {"train": "train", "val": "val", "test": "test"}
"""ImageSets/Main/<name>.txt -> split (trainval.txt alone leaves train/val to the key hash)."""


def _refuse_dtd(*_args: object) -> None:
    raise ValueError("DTDs and entity declarations are not allowed")


def parse_xml(data: bytes, where: str) -> ET.Element:
    """Parse untrusted XML: a document with a DOCTYPE or an entity declaration is refused before ElementTree."""
    probe = xml.parsers.expat.ParserCreate()
    probe.StartDoctypeDeclHandler = _refuse_dtd
    probe.EntityDeclHandler = _refuse_dtd
    probe.ExternalEntityRefHandler = _refuse_dtd  # type: ignore[assignment]
    try:
        probe.Parse(data, True)
        return ET.fromstring(data)
    except (xml.parsers.expat.ExpatError, ET.ParseError, ValueError) as exc:
        raise ImportInputError(f"{where}: not valid XML: {exc}") from None


def _text(node: ET.Element, path: str, where: str, required: bool = True) -> str | None:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        if required:
            raise ImportInputError(f"{where}: missing <{path}>")
        return None
    return found.text.strip()


def _number(node: ET.Element, path: str, where: str) -> float:
    text = _text(node, path, where)
    try:
        value = float(text or "")
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ImportInputError(f"{where}: <{path}> is not a finite number: {(text or '')[:40]!r}")
    return value


def _flag(node: ET.Element, path: str, where: str) -> bool:
    text = _text(node, path, where, required=False)
    if text is None:
        return False
    if text not in ("0", "1"):
        raise ImportInputError(f"{where}: <{path}> must be 0 or 1, got {text!r}")
    return text == "1"


def read_voc_xml(data: bytes, where: str) -> tuple[str | None, tuple[int, int] | None, list[tuple[str, tuple, bool]]]:
    """(filename, (width, height) or None, [(class name, (xmin, ymin, xmax, ymax), difficult)]) of one XML."""
    root = parse_xml(data, where)
    if root.tag != "annotation":
        raise ImportInputError(f"{where}: root element is <{root.tag}>, expected <annotation>")
    filename = _text(root, "filename", where, required=False)
    size: tuple[int, int] | None = None
    if root.find("size") is not None:
        w, h = int(_number(root, "size/width", where)), int(_number(root, "size/height", where))
        size = (w, h) if w > 0 and h > 0 else None  # some tools write 0: the real size is used
    objects = []
    for n, obj in enumerate(root.findall("object"), 1):
        at = f"{where} object {n}"
        name = _text(obj, "name", at) or ""
        box = tuple(_number(obj, f"bndbox/{k}", at) for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((name, box, _flag(obj, "difficult", at)))
    return filename, size, objects


def _image_sets(source: Source) -> dict[str, Split]:
    out: dict[str, Split] = {}
    files = source.files("ImageSets/Main")
    for name, split in SPLIT_FILES.items():
        rel = f"ImageSets/Main/{name}.txt"
        if rel not in files:
            continue
        text = source.read(rel, MAX_LIST_BYTES, "image set").decode("utf-8", "replace")
        for line in text.splitlines():
            stem = line.split()[0] if line.split() else ""
            if stem:
                if stem in out and out[stem] != split:
                    raise ImportInputError(f"{source.describe(rel)}: {stem!r} is also in the {out[stem]} image set")
                out[stem] = split
    return out


def plan_voc(source: Source, described: str, include_difficult: bool = False) -> ImportPlan:
    """The plan for a VOC folder: one item per XML; `difficult` objects skipped unless `include_difficult`."""
    xmls = sorted(k for k in source.files("Annotations") if k.endswith(".xml"))
    if not xmls:
        raise ImportInputError(f"{source.describe('Annotations')}: no .xml annotation files (expected the VOC layout)")
    jpeg = source.files("JPEGImages")
    by_stem: dict[str, list[str]] = {}
    for rel in jpeg:
        p = PurePosixPath(rel)
        if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS:
            by_stem.setdefault(p.stem, []).append(rel)
    splits = _image_sets(source)
    parsed: list[tuple[str, str, tuple[int, int] | None, list[tuple[str, tuple, bool]]]] = []
    problems: list[str] = []
    for rel in xmls:
        where = source.describe(rel)
        try:
            filename, size, objects = read_voc_xml(source.read(rel, MAX_XML_BYTES, "VOC annotation"), where)
        except ImportInputError as exc:
            problems.append(str(exc))
            continue
        stem = PurePosixPath(rel).stem
        image = f"JPEGImages/{filename}" if filename and name_problem(filename) is None else None
        if image not in jpeg:
            image = min(by_stem.get(stem, []), default=None)
        if image is None:
            problems.append(f"{where}: image {filename or stem!r} not found in {source.describe('JPEGImages')}")
            continue
        parsed.append((rel, image, size, objects))
    raise_problems(problems, source.describe("Annotations"))
    names = sorted({name for _, _, _, objs in parsed for name, _, _ in objs})
    ids = {name: i for i, name in enumerate(names)}
    plan = ImportPlan(format="voc", source=described, classes=dict(enumerate(names)), used=set(), items=[])
    covered = set()
    for rel, image, size, objects in parsed:
        stem = PurePosixPath(image).stem
        covered.add(image)
        item = ImportItem(
            key=f"images/{PurePosixPath(image).name}",
            source=source,
            rel=image,
            origin=source.describe(rel),
            expected_size=size,
            split=splits.get(PurePosixPath(rel).stem),
        )
        for n, (name, box, difficult) in enumerate(objects, 1):
            if difficult and not include_difficult:
                plan.skipped[("difficult", name)] += 1
                continue
            item.boxes.append(RawBox(ids[name], "voc", (box[0], box[1], box[2], box[3]), f"object {n} ({name})"))
            plan.used.add(ids[name])
        plan.items.append(item)
    unannotated = len([r for r in jpeg if r not in covered])
    if unannotated:
        plan.notes.append(f"{unannotated} files in JPEGImages/ have no annotation XML and were not imported")
    return plan
