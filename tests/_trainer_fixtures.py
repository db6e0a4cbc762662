"""Helpers for the trainer tests: tiny synthetic eras as local Ultralytics datasets (no S3 needed)."""

from __future__ import annotations

from pathlib import Path

import yaml

from kretrain.trainer.synthetic import EraConfig, demo_eras, generate_dataset


def split_of(i: int) -> str:
    """Deterministic 70/15/15 split by index."""
    r = i % 20
    return "val" if r < 3 else "test" if r < 6 else "train"


def make_local_dataset(root: Path, images: int = 120, seed: int = 0, eras: list[EraConfig] | None = None) -> dict:
    """Generate synthetic eras under `root` and write list files and data YAMLs like `prepare()` does.

    Returns {"classes", "eras", "lists": {era: {split: Path}}, "yaml": {name: Path}, "test_eras": {path: era}}.
    """
    eras = eras or demo_eras(images=images, seed=seed)
    classes = sorted({c for e in eras for c in e.classes}, key=lambda c: [*eras[-1].classes, c].index(c))
    generate_dataset(root, eras, classes)
    lists: dict[str, dict[str, list[str]]] = {}
    for era in eras:
        files = sorted((root / era.name / "images").iterdir())
        lists[era.name] = {"train": [], "val": [], "test": []}
        for i, f in enumerate(files):
            lists[era.name][split_of(i)].append(str(f.resolve()))
    paths: dict[str, dict[str, Path]] = {}
    for era_name, splits in lists.items():
        paths[era_name] = {}
        for split, files in splits.items():
            p = root / "lists" / f"{era_name}.{split}.txt"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("\n".join(files) + "\n")
            paths[era_name][split] = p

    def union(name: str, split: str, era_names: list[str]) -> Path:
        p = root / "lists" / f"{name}.{split}.txt"
        p.write_text("".join(paths[e][split].read_text() for e in era_names))
        return p

    names = [e.name for e in eras]

    def data_yaml(name: str, train: Path, val: Path) -> Path:
        p = root / f"{name}.yaml"
        p.write_text(yaml.safe_dump({"path": str(root), "train": str(train), "val": str(val), "names": classes}))
        return p

    all_train, all_val, all_test = union("all", "train", names), union("all", "val", names), union("all", "test", names)
    yamls = {"all": data_yaml("all", all_train, all_val), "test": data_yaml("test", all_test, all_test)}
    for e in names:
        yamls[f"{e}.test"] = data_yaml(f"{e}.test", paths[e]["test"], paths[e]["test"])
        yamls[e] = data_yaml(e, paths[e]["train"], paths[e]["val"])
    test_eras = {f: e for e in names for f in lists[e]["test"]}
    return {"classes": classes, "eras": names, "lists": paths, "yaml": yamls, "test_eras": test_eras}


TINY_ERAS = [
    EraConfig(name="era1", images=60, classes=["circle", "square"], background=(30, 30, 40), scale=(0.3, 0.5),
              objects=(1, 2), seed=0),
    EraConfig(name="era2", images=60, classes=["circle", "square"], background=(200, 200, 190), scale=(0.25, 0.4),
              objects=(1, 2), seed=1, texture=0.3),
]  # fmt: skip
"""Two small eras a yolov8n learns in about 10 epochs at imgsz 64 on CPU."""

TINY_TRAIN_ARGS = dict(
    imgsz=64, batch=16, nbs=16, epochs=10, optimizer="AdamW", lr0=0.005, warmup_epochs=0.5, mosaic=0.0,
    workers=0, plots=False, exist_ok=True, verbose=False, seed=0, patience=0,
)  # fmt: skip


def shared_dir(base: Path) -> Path:
    """A folder shared by every test of the session (pytest's base temp)."""
    d = base / "trainer-shared"
    d.mkdir(parents=True, exist_ok=True)
    return d


def tiny_dataset(base: Path) -> dict:
    """The tiny two-era dataset, generated once per session."""
    root = shared_dir(base) / "tiny"
    marker = root / ".done"
    d = make_local_dataset(root, eras=TINY_ERAS) if not marker.exists() else None
    if d is None:
        import json

        return json.loads(marker.read_text(), object_hook=_paths)
    import json

    marker.write_text(json.dumps(d, default=str))
    return json.loads(marker.read_text(), object_hook=_paths)


def _paths(obj: dict) -> dict:
    return obj


def tiny_model(base: Path) -> Path:
    """best.pt of a yolov8n trained on the tiny dataset, trained once per session (file lock free: pytest is serial)."""
    from ultralytics import YOLO

    d = tiny_dataset(base)
    project = shared_dir(base) / "runs"
    best = project / "tiny" / "weights" / "best.pt"
    if not best.exists():
        YOLO("yolov8n.yaml").train(data=str(d["yaml"]["all"]), project=str(project), name="tiny", **TINY_TRAIN_ARGS)
    return best
