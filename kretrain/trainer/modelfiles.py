"""Model files are data, not code: pinned downloads, built-in YAMLs, and model YAMLs checked before Ultralytics."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kretrain.api.spec import BUILTIN_YAML_PATTERN, split_pin
from kretrain.verified import HashMismatch, Unpinned, fetch_verified
from kretrain.verified import sha256_file as sha256_file  # re-exported: the one definition is kretrain.verified

if TYPE_CHECKING:  # pragma: no cover
    from kretrain.store import ObjectStore

MAX_MODEL_YAML_BYTES = 256 * 1024
"""Largest model YAML read (Ultralytics' own are under 3 KiB)."""
MAX_WEIGHTS_BYTES = 4 * 1024**3
"""Largest .pt downloaded as start weights."""
MAX_LAYERS = 1000
"""Most rows in a model YAML's backbone plus head."""
MAX_ARG_VALUES = 20_000
"""Most layer-argument values (lists and scalars, counted each time an alias repeats them) in one model YAML."""
ALLOWED_ACTIVATIONS = frozenset(
    {
        "CELU", "ELU", "GELU", "Hardsigmoid", "Hardswish", "Hardtanh", "Identity", "LeakyReLU", "Mish",
        "PReLU", "ReLU", "ReLU6", "SELU", "Sigmoid", "SiLU", "Softplus", "Tanh",
    }
)  # fmt: skip
"""torch.nn activations a model YAML's `activation` may name (called with literal arguments only)."""
_ACTIVATION = re.compile(r"^(torch\.)?nn\.([A-Za-z0-9]+)\((.*)\)$", re.DOTALL)


class ModelFileError(RuntimeError):
    """A model file that is refused; the message names the spec field or file and what is wrong."""


def fetch_pinned(store: ObjectStore, pinned: str, dest: Path, field: str, max_bytes: int) -> Path:
    """Download a pinned `s3://...@sha256:<hex>` file to `dest` and return it only if its bytes match the pin
    (kretrain.verified.fetch_verified: nothing at `dest` ever holds unverified bytes; no sidecar is read)."""
    pin = split_pin(pinned)
    if pin is None:
        raise ModelFileError(f"{field}: {pinned!r} is not a pinned s3://...@sha256:<hex> reference")
    uri, expected = pin
    try:
        return fetch_verified(store, uri, dest, sha256=expected, max_bytes=max_bytes)
    except HashMismatch as exc:
        raise ModelFileError(
            f"{field}: {uri} has sha256 {exc.actual}, but the spec pins sha256 {expected}; "
            "refused before loading (the file changed or the pin is wrong)"
        ) from None
    except Unpinned as exc:
        raise ModelFileError(f"{field}: {exc}") from None


def _literal(node: ast.expr, act: str, source: str) -> Any:
    try:
        value = ast.literal_eval(node)
    except ValueError:
        raise ModelFileError(f"{source}: activation {act!r}: arguments must be literals") from None
    if not isinstance(value, (int, float, bool)):
        raise ModelFileError(f"{source}: activation {act!r}: arguments must be numbers or booleans")
    return value


def _activation_class(func: ast.expr) -> str | None:
    """`X` when `func` is exactly `nn.X` or `torch.nn.X` (names, no calls or subscripts), else None."""
    if not isinstance(func, ast.Attribute):
        return None
    owner = func.value
    if isinstance(owner, ast.Name) and owner.id == "nn":
        return func.attr
    if isinstance(owner, ast.Attribute) and owner.attr == "nn" and isinstance(owner.value, ast.Name):
        return func.attr if owner.value.id == "torch" else None
    return None


def check_activation(act: Any, source: str) -> None:
    """Refuse any `activation` but `[torch.]nn.<allowed>(literal numbers)`: Ultralytics `eval`s it otherwise."""
    if not isinstance(act, str):
        raise ModelFileError(f"{source}: activation must be a string such as 'nn.SiLU()', got {type(act).__name__}")
    text = act.strip()
    match = _ACTIVATION.match(text)
    if match is None or match.group(2) not in ALLOWED_ACTIVATIONS:
        raise ModelFileError(
            f"{source}: activation {act[:200]!r} is not allowed: use nn.<Name>(...) with one of "
            f"{', '.join(sorted(ALLOWED_ACTIVATIONS))} and literal arguments"
        )
    try:
        call = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ModelFileError(f"{source}: activation {act[:200]!r} is not a valid call") from None
    if not isinstance(call, ast.Call) or _activation_class(call.func) not in ALLOWED_ACTIVATIONS:
        # The regex alone let `nn.SiLU(<any code>).__class__(1)` through: only the outer call's arguments were
        # checked, and Ultralytics `eval`s the whole text outside its restricted mode.
        raise ModelFileError(
            f"{source}: activation {act[:200]!r} is not a call of an allowed class such as nn.SiLU() "
            "(nothing but [torch.]nn.<Name>(literal numbers))"
        )
    for arg in call.args:
        _literal(arg, text, source)
    for kw in call.keywords:
        if kw.arg is None:
            raise ModelFileError(f"{source}: activation {act[:200]!r}: no ** arguments")
        _literal(kw.value, text, source)


def check_layer_module(name: Any, source: str) -> None:
    """Refuse a layer name that is not a torch.nn or Ultralytics nn.Module class (Ultralytics looks it up
    in its module's globals, where functions such as its downloaders live too)."""
    import torch
    from ultralytics.nn import tasks

    if not isinstance(name, str) or not re.fullmatch(r"(nn\.)?[A-Za-z_][A-Za-z0-9_]*", name):
        raise ModelFileError(f"{source}: layer module {str(name)[:200]!r} is not a torch.nn or Ultralytics module name")
    obj = getattr(torch.nn, name[3:], None) if name.startswith("nn.") else vars(tasks).get(name)
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        raise ModelFileError(f"{source}: layer module {name!r} is not a torch.nn or Ultralytics module")


def _check_arg(value: Any, source: str, where: str, budget: list[int], depth: int = 0) -> None:
    budget[0] -= 1
    if budget[0] < 0:  # YAML aliases (or a pickle's shared references) repeat one list without copying it
        raise ModelFileError(
            f"{source}: {where}: more than {MAX_ARG_VALUES} argument values in all (YAML aliases count each time "
            "they are used)"
        )
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        if len(value) > 200:
            raise ModelFileError(f"{source}: {where}: argument strings are at most 200 characters")
        return
    if isinstance(value, list) and depth < 3:
        for v in value:
            _check_arg(v, source, where, budget, depth + 1)
        return
    raise ModelFileError(f"{source}: {where}: arguments must be numbers, strings or short lists")


def check_model_yaml(doc: Any, source: str) -> dict[str, Any]:
    """Check a parsed model YAML (what Ultralytics' `parse_model` reads) and return it.

    `activation` must be an allowlisted `nn.<Name>(literals)`; every backbone/head row is
    `[from, repeats, module, args]` with a torch.nn or Ultralytics module and literal arguments.
    """
    if not isinstance(doc, dict):
        raise ModelFileError(f"{source}: a model YAML must be a mapping with backbone and head")
    if doc.get("activation"):
        check_activation(doc["activation"], source)
    rows = []
    for part in ("backbone", "head"):
        layers = doc.get(part)
        if not isinstance(layers, list) or not layers:
            raise ModelFileError(f"{source}: `{part}` must be a non-empty list of [from, repeats, module, args]")
        rows += [(part, i, row) for i, row in enumerate(layers)]
    if len(rows) > MAX_LAYERS:
        raise ModelFileError(f"{source}: {len(rows)} layers; at most {MAX_LAYERS}")
    budget = [MAX_ARG_VALUES]
    for part, i, row in rows:
        where = f"{part}[{i}]"
        if not isinstance(row, list) or len(row) != 4:
            raise ModelFileError(f"{source}: {where} must be [from, repeats, module, args]")
        frm, n, module, args = row
        frm_ok = isinstance(frm, int) or (isinstance(frm, list) and all(isinstance(f, int) for f in frm))
        if not frm_ok or isinstance(frm, bool) or not isinstance(n, int) or not 0 < n <= 100:
            raise ModelFileError(f"{source}: {where}: `from` must be layer indices and `repeats` 1..100")
        check_layer_module(module, f"{source}: {where}")
        if not isinstance(args, list):
            raise ModelFileError(f"{source}: {where}: args must be a list")
        _check_arg(args, source, where, budget)
    return doc


def read_model_yaml(data: bytes, source: str) -> dict[str, Any]:
    """Parse (safe loader, size-capped) and check a model YAML's bytes."""
    if len(data) > MAX_MODEL_YAML_BYTES:
        raise ModelFileError(f"{source}: {len(data)} bytes; a model YAML may have at most {MAX_MODEL_YAML_BYTES}")
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ModelFileError(f"{source}: not valid YAML: {exc}") from exc
    return check_model_yaml(doc, source)


def builtin_yaml(name: str, field: str) -> Path:
    """The Ultralytics built-in model YAML for a name such as `yolov8n.yaml` (the scale letter is Ultralytics'
    convention: `yolov8n.yaml` is `yolov8.yaml` at scale n). Only the installed package's cfg/models is
    searched: never the working directory, never the network."""
    import ultralytics

    if not re.fullmatch(BUILTIN_YAML_PATTERN, name):
        raise ModelFileError(f"{field}: {name!r} is not an Ultralytics built-in model name")
    root = Path(ultralytics.__file__).resolve().parent / "cfg" / "models"
    stem = re.sub(r"^(yolov[58][nslmx])6$", r"\1-p6", Path(name).stem)  # Ultralytics' P6 rename
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", stem)
    for candidate in dict.fromkeys((stem, unified)):
        found = sorted(p for p in root.rglob(candidate + Path(name).suffix) if p.is_file())
        if len(found) == 1:
            return found[0]
    raise ModelFileError(f"{field}: {name!r} is not an Ultralytics built-in model YAML (searched {root})")


def model_yaml(ref: str, field: str, dest_dir: Path, store: ObjectStore | None) -> Path:
    """A checked local copy of the model YAML named by a spec field (built-in name or pinned s3 YAML).

    Ultralytics reads only this copy: the parsed, checked document written back with `yaml.safe_dump`
    under the requested file name (Ultralytics takes the model scale from it).
    """
    pin = split_pin(ref)
    if pin is not None:
        if store is None:
            raise ModelFileError(f"{field}: {pin[0]}: no object store configured")
        raw = fetch_pinned(store, ref, dest_dir / "download" / Path(pin[0]).name, field, MAX_MODEL_YAML_BYTES)
        name, data = Path(pin[0]).name, raw.read_bytes()
    else:
        src = builtin_yaml(ref, field)
        name, data = ref, src.read_bytes()
    doc = read_model_yaml(data, f"{field} {ref}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / name
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def check_model_file(path: Path, source: str) -> None:
    """Check a local model YAML before Ultralytics builds a network from it."""
    size = Path(path).stat().st_size
    if size > MAX_MODEL_YAML_BYTES:
        raise ModelFileError(f"{source}: {size} bytes; a model YAML may have at most {MAX_MODEL_YAML_BYTES}")
    read_model_yaml(Path(path).read_bytes(), source)


def check_loaded_model(yolo: Any, source: str) -> None:
    """Check the model YAML a loaded .pt carries: Ultralytics rebuilds the network from it for training."""
    cfg = getattr(getattr(yolo, "model", None), "yaml", None)
    if cfg is not None:
        check_model_yaml(cfg, f"{source} (its embedded model YAML)")


def restrict_ultralytics() -> None:
    """Make Ultralytics load every .pt with `torch.load(weights_only=True)` against its allowlist of model
    classes and build networks without `eval` (its `ULTRALYTICS_SAFE_LOAD` mode), in this process and the
    DDP workers it starts. Defense in depth: files are hash-verified before any load in any case."""
    import sys

    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
    for name in ("ultralytics.utils", "ultralytics.nn.tasks"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "SAFE_LOAD"):
            module.SAFE_LOAD = True  # type: ignore[attr-defined]  # read once at import: keep it in step


def load_checkpoint_dict(path: Path) -> dict[str, Any]:
    """A verified local Ultralytics checkpoint as a dict, unpickled by Ultralytics' restricted loader."""
    from ultralytics.nn.tasks import torch_safe_load

    try:
        ckpt, _ = torch_safe_load(str(path), safe_only=True)
    except TypeError as exc:
        raise ModelFileError(f"checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise ModelFileError(f"checkpoint {path} is not an Ultralytics checkpoint")
    return ckpt
