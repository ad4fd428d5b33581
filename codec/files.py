"""Durable replacement of a small file: the one way Motus writes state files that must be
either old or new after a crash (the signing guard, keys, the light client's trusted
state, the transaction journal's compaction)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    """Write a temporary file, fsync it, rename it over ``path``, fsync the directory:
    the file is old or new, never torn. The file gets ``mode`` whatever the umask (and
    whatever a leftover temporary file had); a missing directory is made 0700."""
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is filtered by umask
        done = 0
        while done < len(data):  # os.write may write less than asked
            done += os.write(fd, data[done:])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
