"""Configure Ultralytics to run fully offline; call `configure()` before importing ultralytics."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _font_source() -> Path | None:
    try:
        import matplotlib

        font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return font if font.exists() else None
    except ImportError:  # pragma: no cover - matplotlib comes with ultralytics
        return None


def configure(config_dir: Path | None = None) -> Path:
    """Set YOLO_OFFLINE and friends, give Ultralytics a writable config dir with a local font.

    Every Ultralytics train/val otherwise tries to download Arial.ttf, and weights are never
    downloaded here (models are built from YAML or loaded from verified local files).
    Returns the config dir.
    """
    base = Path(config_dir or os.environ.get("YOLO_CONFIG_DIR") or Path(tempfile.gettempdir()) / "kretrain-yolo")
    (base / "Ultralytics").mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(base)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ.setdefault("YOLO_VERBOSE", "false")
    os.environ.setdefault("MPLCONFIGDIR", str(base / "matplotlib"))
    font = base / "Ultralytics" / "Arial.ttf"
    src = _font_source()
    if not font.exists() and src is not None:
        shutil.copyfile(src, font)
    unicode_font = base / "Ultralytics" / "Arial.Unicode.ttf"
    if not unicode_font.exists() and src is not None:
        shutil.copyfile(src, unicode_font)
    return base
