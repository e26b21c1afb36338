"""Writing files so that a crash never leaves a half-written one (no torch: video and JSON writers use it too)."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write(path: Path, write, suffix: str = ".tmp") -> None:
    """Call ``write(tmp_path)`` and rename the result over ``path``: never a half-written file.

    The temporary file sits in a private hidden directory next to ``path``, named after it and this
    process (``.<name>.<pid>.XXXX.tmp``), so anything the writer itself leaves (safetensors writes
    through its own temporary file) goes with it. A process killed mid-write leaves that directory
    behind; the next write of ``path`` removes it once its process is gone. ``suffix`` ends the
    temporary file's name (writers that pick a format from the name need it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    work = tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    tmp = os.path.join(work, f"{path.stem}{suffix}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        # writers may create private (0600) files; give the result the mode of the file it replaces,
        # or an ordinary file's 0644
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary directories of earlier writes of ``path`` whose process no longer runs."""
    if os.name != "posix":  # os.kill(pid, 0) is only a liveness probe on POSIX
        return
    prefix = f".{path.name}."
    for entry in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid = entry.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running: maybe writing right now
        except ProcessLookupError:
            pass
        except OSError:  # e.g. no permission to signal it: it exists
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
