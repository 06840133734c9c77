"""The local warehouse directory: what fmcg-beam owns in it, and how a run replaces it safely.

Layout of ``--output_dir``::

    fmcg.duckdb   -> .fmcg-beam/current/fmcg.duckdb     (links: the paths users open)
    parquet       -> .fmcg-beam/current/parquet
    manifest.json -> .fmcg-beam/current/manifest.json
    ground_truth.json -> .fmcg-beam/current/ground_truth.json   (what the generator planted: fmcg_beam.truth)
    profile.html  -> .fmcg-beam/current/profile.html     (charts of the data: fmcg_beam.profile)
    .fmcg-beam/
        FORMAT                 marks the folder as fmcg-beam's
        lock                   held (flock) by the run writing the directory; holds its pid
        current -> gen-<id>    the complete warehouse: replaced by one atomic rename
        gen-<id>/              a complete warehouse (only the current one outlives a run)
        staging-<id>/          a run's work in progress

Everything else in the directory is the user's and is never touched. A run
builds its warehouse in ``staging-<id>``, renames it to ``gen-<id>`` and then
flips ``current`` with a single ``rename``: a reader, or a run killed at any
instant, sees either the old warehouse or the new one. The next run recovers
whatever an interrupted one left (a complete generation not yet made current,
stale staging) before doing anything else.

A directory is recognised as a warehouse only by what fmcg-beam wrote: the
``FORMAT`` marker and a manifest carrying its own format name, version and a
digest of its content.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Optional

from fmcg_beam.options import OptionsError

log = logging.getLogger(__name__)

CONTROL = ".fmcg-beam"
FORMAT_FILE = "FORMAT"
FORMAT = "fmcg-beam-warehouse"
FORMAT_VERSION = 2
FORMAT_LINE = f"{FORMAT} {FORMAT_VERSION}\n"
MANIFEST = "manifest.json"
DUCKDB_FILE = "fmcg.duckdb"
PARQUET_DIR = "parquet"
CHANGES_DIR = "changes"  # the change feed (fmcg_beam.changes)
GROUND_TRUTH = "ground_truth.json"  # the planted effects (fmcg_beam.truth)
PROFILE = "profile.html"  # the page of charts (fmcg_beam.profile)
# The top-level entries a warehouse may have.
OWNED = (DUCKDB_FILE, PARQUET_DIR, CHANGES_DIR, MANIFEST, GROUND_TRUTH, PROFILE)
_REPLACING = re.compile(r"^\..+\.tmp-[0-9a-f]{8}$")  # a file of the current generation being replaced
CURRENT = "current"
_GEN = re.compile(r"^gen-[0-9a-f]{12}$")
_STAGING = re.compile(r"^staging-[0-9a-f]{12}$")
# Folders that fmcg-beam 0.1 left beside the output directory while swapping.
_LEGACY_SIDE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>staging|old)-[0-9a-f]{12}$")


class OutputDirError(OptionsError):
    """The output directory cannot be used as it is (bad input: exit 2, nothing written)."""


class OutputDirBusy(OutputDirError):
    """Another run holds the directory's lock."""


# --- the manifest: sealed with a format marker and a digest of its content ---------------------


def _digest(payload: dict) -> str:
    body = {k: v for k, v in payload.items() if k != "digest"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def seal(payload: dict) -> dict:
    """``payload`` with the format marker, format version and its digest added."""
    sealed = dict(payload, format=FORMAT, format_version=FORMAT_VERSION)
    sealed.pop("digest", None)
    sealed["digest"] = _digest(sealed)
    return sealed


def write_manifest(folder: Path, payload: dict) -> None:
    """Write the sealed manifest into ``folder`` (a staging folder), durably."""
    path = Path(folder) / MANIFEST
    text = json.dumps(seal(payload), indent=2, sort_keys=True, default=str) + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_manifest(path: Path) -> Optional[dict]:
    """The manifest at ``path`` if fmcg-beam wrote it (marker, version, digest all match), else ``None``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        return None
    return data if data.get("digest") == _digest(data) else None


def _is_legacy_manifest(path: Path) -> bool:
    """A manifest of fmcg-beam 0.1, which carried no marker: package name, options and table checksums."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    tables = data.get("tables") if isinstance(data, dict) else None
    return (data.get("package") == "fmcg-beam" and "options" in data and isinstance(tables, dict)
            and all(isinstance(v, dict) and "checksum" in v for v in tables.values()))


# --- inspecting a directory (no writes) -------------------------------------------------------


def _control(target: Path) -> Path:
    return target / CONTROL


def is_ours(target: Path) -> bool:
    """True when ``target`` holds fmcg-beam's control folder (a warehouse, or a first run's leftovers)."""
    try:
        return (_control(target) / FORMAT_FILE).read_text(encoding="utf-8") == FORMAT_LINE
    except OSError:
        return False


def _our_link(target: Path, name: str) -> bool:
    link = target / name
    return link.is_symlink() and os.readlink(link) == f"{CONTROL}/{CURRENT}/{name}"


def check(target: Path) -> None:
    """Raise ``OutputDirError`` (one line, says how to fix it) unless a run may write ``target``.

    A run may write a missing or empty directory, or one holding fmcg-beam's warehouse; in the latter it
    replaces only its own entries, so the user's files beside them stay.
    """
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise OutputDirError(f"{target} is an existing file; pass a directory path")
    entries = [p.name for p in target.iterdir()]
    if not entries:
        return
    if is_ours(target):
        for name in OWNED:
            path = target / name
            if (path.exists() or path.is_symlink()) and not _our_link(target, name):
                raise OutputDirError(
                    f"{path} was not written by fmcg-beam (it is not its link into {CONTROL}); "
                    "move it elsewhere, or choose another --output_dir")
        return
    if (target / MANIFEST).is_file() and _is_legacy_manifest(target / MANIFEST):
        raise OutputDirError(
            f"{target} holds a warehouse of fmcg-beam 0.1, which this release does not replace in place; "
            "delete it yourself or choose another --output_dir")
    raise OutputDirError(
        f"{target} is not empty and holds no fmcg-beam warehouse; pass a new or empty directory, "
        "so nothing of yours is replaced")


def has_warehouse(target: Path) -> bool:
    """True when ``target`` holds a committed fmcg-beam warehouse."""
    return is_ours(Path(target)) and read_manifest(Path(target) / CONTROL / CURRENT / MANIFEST) is not None


def size_of(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


# --- a run's hold on the directory --------------------------------------------------------------


class OutputDir:
    """A run's exclusive hold on ``target``: lock, recovery, staging, an atomic commit; a context manager.

    ``with OutputDir(path) as out: stage = out.new_staging(); ...; out.commit(stage)``. Leaving the
    block without ``commit`` removes the staging folder and, if this run created the directory and no
    warehouse was ever committed there, everything it created.
    """

    def __init__(self, target: Path):
        self.target = Path(os.path.abspath(os.path.expanduser(str(target))))
        self.control = _control(self.target)
        self._lock_fd: Optional[int] = None
        self._created: list[Path] = []
        self._staging: Optional[Path] = None
        self.committed = False

    # entering: create what is missing, lock, recover, clean up

    def __enter__(self) -> "OutputDir":
        _recover_legacy_side_folders(self.target)
        check(self.target)
        self._make_dirs()
        try:
            self._lock()
            check(self.target)  # again under the lock: another run may have changed it meanwhile
            self._recover()
        except BaseException:
            self._release(remove_created=True)
            raise
        return self

    def _make_dirs(self) -> None:
        missing = []
        p = self.target
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir()
            self._created.append(d)
        if not self.control.exists():
            self.control.mkdir()
            self._created.append(self.control)
        marker = self.control / FORMAT_FILE
        if not marker.exists():
            tmp = self.control / f".{FORMAT_FILE}.tmp"
            tmp.write_text(FORMAT_LINE, encoding="utf-8")
            os.replace(tmp, marker)

    def _lock(self) -> None:
        fd = os.open(self.control / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputDirBusy(f"another run (pid {holder}) is writing {self.target}; wait for it to "
                                    "finish, or choose another --output_dir") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._lock_fd = fd

    @property
    def lock_fd(self) -> Optional[int]:
        """The descriptor holding the directory's lock while entered: a process forked by the run closes it, so
        the lock ends with the run."""
        return self._lock_fd

    def _recover(self) -> None:
        """Finish or undo what an interrupted run left, then drop stale folders (one line if any)."""
        for p in self.control.glob(f"{CURRENT}.tmp-*"):
            p.unlink()
        current = self.current()
        if current is None:
            complete = sorted((g for g in self._gens() if read_manifest(g / MANIFEST)),
                              key=lambda g: g.stat().st_mtime)
            if complete:  # a run was killed between finishing its warehouse and making it current
                self._flip(complete[-1])
                current = complete[-1]
                log.warning("recovered the warehouse of an interrupted run in %s", self.target)
        if current is not None:
            for p in current.iterdir():
                if _REPLACING.match(p.name):  # a killed rebuild's unfinished file (replace_current)
                    p.unlink()
            self._link(current)
        stale = [p for p in self.control.iterdir()
                 if (_STAGING.match(p.name) or _GEN.match(p.name)) and p != current]
        if stale:
            size = sum(size_of(p) for p in stale)
            for p in stale:
                if p.is_symlink():  # a killed run's temporary link to its staging (at_final_path)
                    p.unlink()
                else:
                    shutil.rmtree(p, ignore_errors=True)
            log.warning("removed %d stale folder(s) of interrupted runs from %s (%s)",
                        len(stale), self.control, _mb(size))

    # the run's work

    def current(self) -> Optional[Path]:
        link = self.control / CURRENT
        if not link.is_symlink():
            return None
        gen = self.control / os.readlink(link)
        return gen if gen.is_dir() and _GEN.match(gen.name) else None

    def _gens(self) -> list[Path]:
        return [p for p in self.control.iterdir() if _GEN.match(p.name) and p.is_dir()]

    def new_staging(self) -> Path:
        """A fresh, empty staging folder for this run."""
        self._staging = self.control / f"staging-{uuid.uuid4().hex[:12]}"
        self._staging.mkdir()
        return self._staging

    def final_path(self, staging: Path) -> Path:
        """Where ``staging`` will live once committed (its generation folder)."""
        return self.control / ("gen-" + staging.name.removeprefix("staging-"))

    @contextlib.contextmanager
    def at_final_path(self, staging: Path):
        """``staging`` reachable at ``final_path(staging)`` for a while (a temporary link): for what must record
        paths that hold once the warehouse is committed (the DuckDB ``change_feed`` view)."""
        final = self.final_path(staging)
        os.symlink(staging.name, final)
        try:
            yield final
        finally:
            final.unlink()

    def commit(self, staging: Path) -> None:
        """Make ``staging`` (holding a sealed manifest) the warehouse, atomically; drop the old one."""
        if read_manifest(staging / MANIFEST) is None:
            raise RuntimeError(f"{staging} holds no sealed manifest; nothing was replaced")
        _fsync_tree(staging)
        gen = self.final_path(staging)
        os.rename(staging, gen)
        self._staging = None
        old = self.current()
        for name in OWNED:  # links first: one dangles until the flip, never the other way round
            if (gen / name).exists():
                self._ensure_link(name)
        self._flip(gen)
        self.committed = True
        self._link(gen)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _flip(self, gen: Path) -> None:
        tmp = self.control / f"{CURRENT}.tmp-{uuid.uuid4().hex[:8]}"
        os.symlink(gen.name, tmp)
        os.replace(tmp, self.control / CURRENT)  # the one atomic step
        _fsync_dir(self.control)

    def _ensure_link(self, name: str) -> None:
        if _our_link(self.target, name):
            return
        try:
            os.symlink(f"{CONTROL}/{CURRENT}/{name}", self.target / name)
        except FileExistsError:
            raise OutputDirError(f"{self.target / name} appeared during the run and was not written by "
                                 "fmcg-beam; move it elsewhere and rerun") from None

    def _link(self, gen: Path) -> None:
        """Links for the entries ``gen`` has; our links to entries it lacks are removed."""
        for name in OWNED:
            if (gen / name).exists():
                self._ensure_link(name)
            elif _our_link(self.target, name):
                (self.target / name).unlink()

    def replace_current(self, new: Path, name: str) -> None:
        """Put the finished file ``new`` (in the current generation, named ``.<name>.tmp-<8 hex>``) in place of
        the current generation's ``name`` with one rename, and link it: a reader sees the old file or the new.

        Only for a file derived from the warehouse (``profile.html``): the tables and the manifest are never
        changed in place.
        """
        current = self.current()
        if current is None or Path(new).parent != current or not _REPLACING.match(Path(new).name):
            raise RuntimeError(f"{new} is not a file being written into the current generation of {self.target}")
        os.replace(new, current / name)
        _fsync_dir(current)
        self._ensure_link(name)

    # leaving

    def __exit__(self, exc_type, exc, tb) -> None:
        self._release(remove_created=not self.committed)

    def _release(self, remove_created: bool) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if remove_created and self.current() is None and self.control in self._created:
            shutil.rmtree(self.control, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if remove_created:
            for d in reversed(self._created):
                try:
                    d.rmdir()  # only if still empty: never anything the user put there meanwhile
                except OSError:
                    pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(path: Path) -> bool:
    """Flush the whole file system holding ``path`` in one call (Linux ``syncfs``); False where there is none.

    One call instead of an ``fsync`` per file: the kernel writes back every dirty page and the journal once, so a
    warehouse of hundreds of small files (the change feed's month files) costs what its bytes cost.
    """
    syncfs = getattr(_libc(), "syncfs", None) if sys.platform.startswith("linux") else None
    if syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs {path}: {os.strerror(err)}")
    finally:
        os.close(fd)
    return True


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _fsync_tree(root: Path) -> None:
    """Flush a finished warehouse to disk before it becomes current, so a power cut cannot tear it."""
    if _syncfs(root):
        return
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _recover_legacy_side_folders(target: Path) -> None:
    """Deal with the folders fmcg-beam 0.1 left beside ``target`` when killed during its swap.

    ``.<name>.old-*`` is the previous warehouse: put back if ``target`` went missing, else removed.
    ``.<name>.staging-*`` is an unfinished run: removed. Only folders holding nothing but 0.1's own
    entries are touched.
    """
    parent = target.parent
    if not parent.is_dir():
        return
    for side in sorted(parent.iterdir()):
        m = _LEGACY_SIDE.match(side.name)
        if not m or m.group("name") != target.name or not side.is_dir() or side.is_symlink():
            continue
        if not {p.name for p in side.iterdir()} <= {*OWNED, DUCKDB_FILE + ".wal"}:
            continue
        if m.group("kind") == "old" and not target.exists() and _is_legacy_manifest(side / MANIFEST):
            os.rename(side, target)
            log.warning("restored %s from an interrupted swap of an earlier release", target)
            continue
        size = size_of(side)
        shutil.rmtree(side, ignore_errors=True)
        log.warning("removed a stale folder of an earlier release's interrupted run: %s (%s)", side, _mb(size))
