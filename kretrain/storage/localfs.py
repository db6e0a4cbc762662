"""Local files of the store: object keys mapped safely under a folder, temp names, atomic writes."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import stat
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from kretrain.storage.errors import UnsafeKeyError

# Suffix of in-flight downloads; they are renamed into place only when complete.
PART_SUFFIX = ".kretrain-part"
# Keys that need a closer look: empty, NUL, backslash, a drive prefix, or an empty, "." or ".." segment.
_SUSPECT_KEY = re.compile(r"\A\Z|\x00|\\|\A[A-Za-z]:|(?:\A|/)\.{0,2}(?:/|\Z)")
# Unicode categories no key may contain: controls (Cc: NUL..US, DEL, C1 such as U+0085 NEL, so \n \r \t \v
# \f too), line and paragraph separators (Zl U+2028, Zp U+2029), format characters (Cf: invisible ones
# such as U+200B, U+200E/U+200F, bidi overrides U+202A-U+202E and isolates, U+FEFF) and lone surrogates
# (Cs). Controls and separators split the line-based image lists Ultralytics reads; format characters
# make a key look like another one. Other spaces (Zs), private-use (Co) and unassigned (Cn) characters
# are allowed.
UNSAFE_KEY_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cf", "Cs"})


def _unsafe_char(key: str) -> str | None:
    """The first character of `key` in UNSAFE_KEY_CATEGORIES, described (`U+2028 LINE SEPARATOR, category Zl`)."""
    if key.isprintable():  # no Cc, Cf, Cs, Zl, Zp (nor Zs, Co, Cn, which are allowed): the common case, in C
        return None
    for ch in key:
        category = unicodedata.category(ch)
        if category in UNSAFE_KEY_CATEGORIES:
            name = unicodedata.name(ch, "")
            return f"U+{ord(ch):04X}{' ' + name if name else ''} (category {category})"
    return None


def _key_problem(key: str) -> str | None:
    if not key:
        return "is empty"
    if "\x00" in key:
        return "contains a NUL byte"
    if "\\" in key:
        return "contains a backslash"
    if key.startswith("/"):
        return "is absolute"
    if re.match(r"^[A-Za-z]:", key):
        return "starts with a drive letter"
    segments = key.split("/")
    if any(s == "" for s in segments):
        return "has an empty path segment"
    if any(s in (".", "..") for s in segments):
        return "has a '.' or '..' segment"
    return None


def check_key(root: Path, key: str) -> None:
    """Raise UnsafeKeyError if the key is malformed, holds an unsafe character, or could escape `root` lexically."""
    char = _unsafe_char(key)
    if char is not None:
        raise UnsafeKeyError(
            f"unsafe object key {key!r}: it contains {char}, a control, format or line-separator character; "
            f"refusing to map it under {root}"
        )
    if not _SUSPECT_KEY.search(key):
        return
    problem = _key_problem(key)
    if problem:
        raise UnsafeKeyError(f"unsafe object key {key!r}: it {problem}; refusing to map it under {root}")


def safe_local_paths(root: Path, keys: Iterable[str]) -> dict[str, Path]:
    """`safe_local_path` for many keys: each directory is resolved once (symlink check), not each file."""
    base = Path(root).resolve()
    prefix = f"{base}/" if str(base) != "/" else "/"
    checked: dict[str, bool] = {}
    out: dict[str, Path] = {}
    for key in keys:
        check_key(root, key)
        parent, _, _ = key.rpartition("/")
        if parent not in checked:
            resolved = base.joinpath(*parent.split("/")).resolve() if parent else base
            checked[parent] = resolved == base or base in resolved.parents
        if not checked[parent]:
            raise UnsafeKeyError(f"unsafe object key {key!r}: its folder resolves outside {base}")
        out[key] = Path(f"{prefix}{key}")
    return out


def safe_local_path(root: Path, key: str) -> Path:
    """The path of `key` under `root`; UnsafeKeyError if the key could escape it or is malformed.

    Rejected: empty keys, absolute keys (leading `/`), backslashes, empty segments (`a//b`), `.` and `..`
    segments, Windows drive prefixes (`C:`), and any character in UNSAFE_KEY_CATEGORIES (controls such as
    NUL, `\n`, `\r`, U+0085; line/paragraph separators U+2028/U+2029; format characters such as U+200E,
    U+202E, U+FEFF; lone surrogates).
    """
    check_key(root, key)
    base = Path(root).resolve()
    path = base.joinpath(*key.split("/"))
    # Defence in depth: a symlink already in the cache must not lead outside it either.
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafeKeyError(f"unsafe object key {key!r}: it resolves to {resolved}, outside {base}")
    return path


_TEMP_TAG = uuid.uuid4().hex[:8]
_temp_counter = itertools.count()


def temp_path(path: Path) -> Path:
    """A temp file beside `path`: unique per process (and fork) without reading randomness each time."""
    return path.with_name(f".{path.name}.{_TEMP_TAG}-{os.getpid()}-{next(_temp_counter)}{PART_SUFFIX}")


def create_new(path: Path) -> io.FileIO:
    """Open a file that must not exist yet (never one planted there, nor a symlink); makes its folder if needed."""
    try:
        return io.FileIO(path, "xb")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return io.FileIO(path, "xb")


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[io.FileIO]:
    """A new temp file beside `path`, renamed over `path` when the block succeeds and removed when it fails."""
    tmp = temp_path(path)
    try:
        with create_new(tmp) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all (temp file in the same folder, then rename)."""
    with replacing(path) as fh:
        write_all(fh, data)


def write_all(fh: io.FileIO, data: bytes) -> None:
    """Write all of `data` (an unbuffered file may take less than asked)."""
    view = memoryview(data)
    while view:
        view = view[fh.write(view) or 0 :]


def regular_file_size(path: Path) -> int:
    """Size of a regular file (not following symlinks); -1 for anything else, so it is downloaded again."""
    try:
        st = os.lstat(path)
    except OSError:
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else -1
