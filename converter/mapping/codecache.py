"""Generated mapping code compiled once per machine, not once per run: a disk cache of code objects.

Compiling the ~300 functions generated for the shipped mappings (:mod:`converter.mapping.codegen`) is the
largest part of loading them. :func:`compile_cached` keeps each code object under the SHA-256 of all it
depends on: the generated text, its file name (tracebacks name the mapping line), the interpreter's
bytecode version and optimisation level, and CaseBridge's version. A changed mapping file or code
generator writes another text, so another key: no entry is ever invalidated by hand, and an entry can only
hold what ``compile`` would return.

Entries live in ``$XDG_CACHE_HOME/casebridge/code/<python>`` (default ``~/.cache``); entries written more
than :data:`MAX_AGE_DAYS` ago are removed whenever a new entry is written. The cache can only make loading
faster, never fail it: an entry that is missing, unreadable, truncated or altered is compiled again (and
rewritten when the folder is writable). ``CASEBRIDGE_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import sys
import tempfile
import time
from pathlib import Path
from types import CodeType

from converter import __version__

MAX_AGE_DAYS = 30
_FORMAT = b"casebridge-code 1\n"  # file header; then the SHA-256 of the marshalled code, then the code
_pruned: set[Path] = set()  # folders pruned by this process


def cache_folder() -> Path | None:
    """The folder of this interpreter's entries, or None when caching is off or there is no home folder."""
    if os.environ.get("CASEBRIDGE_NO_CACHE"):
        return None
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: a relative path is ignored
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:
            return None
    tag = f"{sys.implementation.cache_tag}-{importlib.util.MAGIC_NUMBER.hex()}"
    return Path(base) / "casebridge" / "code" / tag


def compile_cached(text: str, filename: str) -> CodeType:
    """``compile(text, filename, "exec")``, from the cache when this exact text was compiled before."""
    folder = cache_folder()
    if folder is None:
        return compile(text, filename, "exec")
    key = hashlib.sha256("\0".join((__version__, str(sys.flags.optimize), filename, text)).encode()).hexdigest()
    path = folder / key
    code = _read(path, filename)
    if code is None:
        code = compile(text, filename, "exec")
        _write(folder, path, code)
    return code


def _read(path: Path, filename: str) -> CodeType | None:
    """The code object stored at ``path``, or None when there is none or it is not intact."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    start = len(_FORMAT) + 32
    if not data.startswith(_FORMAT) or hashlib.sha256(data[start:]).digest() != data[len(_FORMAT):start]:
        return None
    try:
        code = marshal.loads(data[start:])
    except (ValueError, EOFError, TypeError):
        return None
    return code if isinstance(code, CodeType) and code.co_filename == filename else None


def _write(folder: Path, path: Path, code: CodeType) -> None:
    """Store ``code`` at ``path`` atomically (readers see the old file or the new one); failures are ignored."""
    payload = marshal.dumps(code)
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(_FORMAT + hashlib.sha256(payload).digest() + payload)
        os.replace(tmp, path)
        tmp = None
        _prune(folder)
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _prune(folder: Path) -> None:
    """Remove the entries written more than :data:`MAX_AGE_DAYS` ago (once per folder and process)."""
    if folder in _pruned:
        return
    _pruned.add(folder)
    limit = time.time() - MAX_AGE_DAYS * 86400
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                if entry.stat().st_mtime < limit:
                    os.unlink(entry.path)
            except OSError:
                pass
