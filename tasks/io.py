"""File-system rules every stage follows: one error type for users, atomic writes, content hashes.

A stage that dies half-way (kill, exception, disk full) must leave either the old output or nothing, never a half
file that the next `dvc repro` or Prefect cache check would take for a finished result. So every output is written
under a temporary name in the same directory and renamed into place only when complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class MetadepthError(Exception):
    """A failure the user can fix; the CLI prints it as one line and exits non-zero."""


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def _cleanup(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path` (file or directory); rename it over `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"atomic_write: nothing was written to {tmp}")
        if path.is_dir() and not path.is_symlink():
            # rename() cannot replace a non-empty directory: move the old one aside first, then drop it.
            old = _tmp_name(path)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as err:
        _cleanup(tmp)
        if err.errno == errno.ENOSPC:
            raise MetadepthError(f"{path}: disk full while writing; free space on {path.parent} and re-run") from None
        raise
    except BaseException:
        _cleanup(tmp)
        raise


_HASH_MEMO: dict[str, str] = {}
HASH_CACHE_ENV = "METADEPTH_HASH_CACHE"  # a JSON file remembering hashes by (path, size, mtime), like DVC's state


def _load_memo() -> None:
    cache = os.environ.get(HASH_CACHE_ENV)
    if cache and not _HASH_MEMO and Path(cache).is_file():
        try:
            _HASH_MEMO.update(json.loads(Path(cache).read_text()))
        except (OSError, ValueError):
            pass  # a damaged memo only costs a re-hash


def save_hash_memo() -> None:
    cache = os.environ.get(HASH_CACHE_ENV)
    if cache and _HASH_MEMO:
        try:
            with atomic_write(cache) as tmp:
                tmp.write_text(json.dumps(_HASH_MEMO))
        except OSError:
            pass


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Content hash, memoised by (path, size, mtime) so multi-GB raw datasets are read once, not per cache check."""
    _load_memo()
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if key in _HASH_MEMO:
        return _HASH_MEMO[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def content_hash(path: Path | str) -> str:
    """Hash of a file or a directory tree (relative names + contents); ignores byte-code caches like .dvcignore."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise MetadepthError(f"{path}: not found")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        # .gitignore files are written by `dvc commit` into output folders: bookkeeping, not content.
        if "__pycache__" in f.parts or f.suffix == ".pyc" or f.name == ".gitignore" or ".tmp-" in f.name:
            continue
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def require_file(path: Path, hint: str) -> Path:
    if not path.exists():
        raise MetadepthError(f"{path}: not found; {hint}")
    return path


@contextmanager
def project_lock(root: Path, what: str) -> Iterator[None]:
    """One pipeline run at a time per project: a second run waits (and says so) instead of racing the first
    over params.yaml, outputs and dvc.lock. An OS file lock, so a killed run never leaves a stale lock behind."""
    import fcntl

    path = Path(root) / ".metadepth" / "pipeline.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            print(f"{what}: waiting for the pipeline run already in progress in this project ({holder})", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}: {what}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
