"""Atomic file writes: a crash leaves the old file or the new one, never half of one."""

import contextlib
import json
import os
import secrets


def temp_path_beside(path):
    """A temp file name beside `path` that no other process or thread picks: two writers of one file never share
    a temp file, so the last rename wins with a whole file."""
    return f"{path}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Write to a temp file beside `path`, fsync it, then rename it over `path`; on error, drop the temp file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temp_path = temp_path_beside(path)
    try:
        with open(temp_path, mode.replace("w", "x")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)


def write_json(path, content):
    with atomic_open(path) as f:
        json.dump(content, f, indent=2)
        f.write("\n")


def write_text(path, text):
    with atomic_open(path) as f:
        f.write(text if text.endswith("\n") else text + "\n")
