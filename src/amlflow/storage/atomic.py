"""The one atomic-write helper: a file appears whole or not at all.

Every local file amlflow writes for others to read (objects under a local storage root, entity state files,
reports, downloads) goes through :func:`write_file_atomic`: the bytes go to a temp file in the same
directory (same filesystem), are flushed and fsynced, and the temp file is renamed over the target with
``os.replace`` (atomic on POSIX and Windows). On any error the temp file is removed and the target is
left as it was. Temp files are named ``.amlflow-tmp-*`` so start-up clean-up can find crash leftovers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

__all__ = ["TMP_PREFIX", "write_file_atomic"]

#: Prefix of every temp file made by :func:`write_file_atomic`.
TMP_PREFIX = ".amlflow-tmp-"

_CHUNK = 1024 * 1024


def write_file_atomic(
    path: str | os.PathLike[str],
    data: bytes | str | BinaryIO,
    *,
    encoding: str = "utf-8",
    fsync: bool = True,
) -> Path:
    """Write ``data`` (bytes, text, or a readable binary file object) to ``path``, whole or not at all.

    Args:
        path: the target file; its parent directories are created.
        data: ``bytes``, ``str`` (encoded with ``encoding``) or a binary file object read to its end.
        encoding: encoding of a ``str``.
        fsync: flush the temp file to disk before the rename (durability after a power loss).

    Returns:
        The target path.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> write_file_atomic(d / "a" / "x.json", '{"ok": true}').read_text()
        '{"ok": true}'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, str):
                out.write(data.encode(encoding))
            elif isinstance(data, bytes | bytearray | memoryview):
                out.write(data)
            else:
                shutil.copyfileobj(data, out, _CHUNK)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
