"""polydiff's on-disk cache: where it lives, file digests for its keys, and torn-free writes.

Reference statistics (``polydiff.chem.reference``) and built polymer corpora
(``polydiff.data.polymers``) take minutes to compute, so both are kept under
``$POLYDIFF_CACHE_DIR`` (default ``$XDG_CACHE_HOME/polydiff``, i.e. ``~/.cache/polydiff``),
keyed by what they were computed from.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from polydiff.utils.files import make_folder

CACHE_ENV = "POLYDIFF_CACHE_DIR"


def cache_dir() -> Path:
    """Where polydiff caches, made if missing: ``$POLYDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/polydiff``."""
    given = os.environ.get(CACHE_ENV)
    folder = Path(given) if given else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "polydiff"
    make_folder(folder, f"{CACHE_ENV}={folder}" if given else f"the cache folder {folder} (set {CACHE_ENV})")
    return folder


# Digests already taken in this process, by file, size and modification time: a token cache's key
# and a checkpoint's record of its data read a large corpus once.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read once per process while its size and time stay."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def save_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Writes ``path`` through ``write(stream)`` into a temporary file, then renames it into place.

    A run killed while writing, or two runs at once, never leave a torn file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as stream:
            write(stream)
    except BaseException:  # Ctrl-C or SIGTERM included: no temporary file left behind
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)
