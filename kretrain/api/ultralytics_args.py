"""Ultralytics' train argument names (from `ultralytics.cfg.DEFAULT_CFG_DICT`; a test keeps them in sync).

The core cannot import ultralytics (the operator image has no torch), so the list is kept here and
`tests/test_api.py` checks it against the installed Ultralytics. The trainer also runs Ultralytics'
own `check_cfg` on the final arguments.
"""

# Keys of DEFAULT_CFG_DICT that matter for training (predict/export/track-only keys excluded).
ULTRALYTICS_TRAIN_ARGS: frozenset[str] = frozenset(
    {
        "agnostic_nms", "amp", "augment", "auto_augment", "batch", "bgr", "box", "cache", "channels_last",
        "classes", "close_mosaic", "cls", "cls_pw", "compile", "copy_paste", "copy_paste_mode", "cos_lr",
        "cutmix", "data", "degrees", "deterministic", "device", "dfl", "dropout", "epochs", "erasing",
        "exist_ok", "fliplr", "flipud", "fraction", "freeze", "hsv_h", "hsv_s", "hsv_v", "imgsz", "iou",
        "kobj", "lr0", "lrf", "mask_ratio", "max_det", "mixup", "model", "momentum", "mosaic", "multi_scale",
        "name", "nbs", "optimizer", "overlap_mask", "patience", "perspective", "plots", "pose", "pretrained",
        "profile", "project", "rect", "resume", "save", "save_json", "save_period", "scale", "seed", "shear",
        "single_cls", "split", "time", "translate", "val", "verbose", "warmup_bias_lr", "warmup_epochs",
        "warmup_momentum", "weight_decay", "workers",
    }
)  # fmt: skip

# Train arguments kretrain sets itself (from dedicated spec fields or its own data/registry layout).
RESERVED_TRAIN_ARGS: frozenset[str] = frozenset(
    {
        "data", "model", "project", "name", "exist_ok", "resume", "device", "epochs", "patience", "lr0",
        "optimizer", "freeze", "imgsz", "batch", "weight_decay", "dropout", "mosaic", "mixup", "cutmix",
        "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "fliplr", "close_mosaic", "pretrained",
        "save", "save_period", "split", "val", "plots", "fraction", "time",
    }
)  # fmt: skip

# Export arguments kretrain passes to Ultralytics' exporter (`model.export(**args)`), all keys of DEFAULT_CFG_DICT:
# `format`, `imgsz`, `dynamic`, `opset` from spec.export; `device`, `batch`, `simplify` set by kretrain. spec.export.half
# becomes `quantize=16` (Ultralytics >= 8.4; `half=True` before it, see EXPORT_PRECISION_ARGS).
ULTRALYTICS_EXPORT_ARGS: frozenset[str] = frozenset(
    {"format", "imgsz", "dynamic", "opset", "device", "batch", "simplify"}
)
EXPORT_PRECISION_ARGS: tuple[str, str] = ("quantize", "half")
"""The FP16 export switch, newest name first: the first one Ultralytics' DEFAULT_CFG_DICT knows is used."""
