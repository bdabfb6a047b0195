"""Verified downloads, checksums and all-or-nothing extraction for the real domains.

* :func:`fetch` tries a file's mirrors in order. Each download goes to a temporary name in the
  destination folder, is checked against the pinned size (a mirror sending more bytes is cut
  off) and hash, and only then renamed into place; a mirror that fails (HTTP error, refused,
  timeout, wrong size, wrong hash) is skipped for the next one, and when all fail the error
  lists every URL tried and why it failed. :class:`Remote` describes one file and its mirrors.
* :func:`verify` compares a file with its pinned md5/sha256. On a mismatch the file is
  renamed to ``<name>.bad-checksum`` (kept for inspection, never used again) and
  :class:`ChecksumError` names the file, the expected and the actual hash.
* :func:`extract` unpacks an archive into a hidden ``.<target>.partial-<pid>`` folder and
  renames the folder holding a marker file to ``target`` only when everything was
  extracted; a truncated or malformed archive raises :class:`CorruptDataError` and leaves
  nothing that a later run could mistake for a complete copy.
* Every member of a tar (any compression) or zip archive is checked before it is written: an
  absolute name, a ``..`` component, a link leading out of the folder, a hard link to a file
  outside it, a device or FIFO raises :class:`UnsafeArchiveError` naming the archive and the
  member, and the partial folder is removed. Nothing is ever written outside that folder.
* Nor more than it can hold: members are counted as they are extracted, and an archive that
  would unpack to more than ``$DANN_MAX_UNPACK_GB`` (20 GB unless set) or than the free space
  is refused before the member that crosses it is written (a decompression bomb).

Downloads run only when asked for: set ``DANN_DOWNLOAD=1`` (or call ``dann.data.real.download``).
Compute nodes are often offline and torchvision's downloader has no timeout, so a build
never reaches for the network on its own; missing files raise :class:`DatasetNotFoundError`.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import stat
import tarfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from filelock import FileLock
from torchvision.datasets.utils import calculate_md5, download_url
from tqdm import tqdm

from dann.data.domains import (ChecksumError, CorruptDataError, DataError, DatasetNotFoundError,
                               UnsafeArchiveError, too_large)

DOWNLOAD_ENV = "DANN_DOWNLOAD"
TIMEOUT_S = 60  # per connection attempt and per read: a dead mirror is skipped, not waited for forever
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2")
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)
# tarfile's "data" filter (Python 3.12, backported to 3.10.12 and 3.11.4) is applied where it
# exists, as a second line of defence. Our own check (_tar_problem) does not depend on it: it
# runs on every Python, refuses more (absolute names, which the filter silently makes relative)
# and names the member in the error.
_TAR_FILTER: dict = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERROR = getattr(tarfile, "FilterError", ())


def downloads_enabled() -> bool:
    """True when ``$DANN_DOWNLOAD`` is set to 1/true/yes."""
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def md5sum(path: Path) -> str:
    return calculate_md5(path)


def quarantine(path: Path, name: str | None = None) -> Path:
    """Rename ``path`` to ``<name>.bad-checksum`` beside it (``.bad-checksum.2`` etc. if taken)."""
    path = Path(path)
    bad = path.with_name(f"{name or path.name}.bad-checksum")
    k = 2
    while bad.exists():
        bad = path.with_name(f"{name or path.name}.bad-checksum.{k}")
        k += 1
    os.replace(path, bad)
    return bad


def verify(path: Path, *, md5: str | None = None, sha256: str | None = None, culprit: Path | None = None,
           bad_name: str | None = None, label: str | None = None, hint: str = "") -> None:
    """Check ``path`` against the pinned hash(es); on a mismatch quarantine and raise ChecksumError.

    ``culprit`` is the file to quarantine (default ``path``; e.g. the ``.gz`` a temporary file was
    decompressed from), ``bad_name`` the name its ``.bad-checksum`` copy gets, ``label`` how the
    message names the file.
    """
    path = Path(path)
    culprit = Path(culprit) if culprit else path
    for algo, expected, fn in (("md5", md5, md5sum), ("sha256", sha256, sha256sum)):
        if expected is None:
            continue
        actual = fn(path)
        if actual != expected:
            try:
                where = f"it was renamed to {quarantine(culprit, bad_name)} (kept for inspection, never used again)"
            except OSError as e:  # read-only folder: say so instead of hiding the problem
                where = f"it could not be renamed ({e}); delete or replace it yourself"
            raise ChecksumError(f"{label or culprit}: {algo} is {actual}, expected {expected}; {where}. "
                                f"{hint}".strip())


@dataclass(frozen=True)
class Remote:
    """One downloadable file: its name, its mirrors (tried in order) and its pinned size and hash."""

    name: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None  # bytes


class _MirrorFailed(Exception):
    """A mirror served something other than the pinned file; the message says what."""


def _download(url: str, tmp: Path, size: int | None, name: str) -> None:
    """Write ``url`` to ``tmp``; stop as soon as more than ``size`` bytes arrive."""
    if "drive.google.com" in url:  # needs Google's confirmation page handled (gdown): torchvision does it
        download_url(url, str(tmp.parent), tmp.name, md5=None)
        return
    req = urllib.request.Request(url, headers={"User-Agent": "dann-data"})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r, open(tmp, "wb") as f:
        announced = r.headers.get("Content-Length")
        if size is not None and announced and announced.isdigit() and int(announced) > size:
            raise _MirrorFailed(f"announces {int(announced):,} bytes, more than the expected {size} bytes")
        total = int(announced) if announced and announced.isdigit() else size
        got = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"[dann] {name}",
                  mininterval=1.0, leave=False) as bar:
            while block := r.read(1 << 20):
                got += len(block)
                if size is not None and got > size:
                    raise _MirrorFailed(f"sends more than the expected {size} bytes; stopped after {got:,}")
                f.write(block)
                bar.update(len(block))


def fetch(urls: str | Sequence[str], dest: Path, *, md5: str | None = None, sha256: str | None = None,
          size: int | None = None) -> Path:
    """Download ``dest`` from the first of ``urls`` that serves the pinned file, then rename it into place.

    A mirror that fails is skipped. When all fail, raises ChecksumError if one of them served a
    file with another hash (kept as ``<name>.bad-checksum``), else DatasetNotFoundError; the
    message lists every URL and why it failed.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    errors, bad_hash = [], False
    for url in urls:
        print(f"[dann] downloading {url} -> {dest}", flush=True)
        try:
            _download(url, tmp, size, dest.name)
            if size is not None and tmp.stat().st_size != size:
                raise _MirrorFailed(f"served {tmp.stat().st_size:,} bytes, expected {size}")
        except Exception as e:  # noqa: BLE001 - try the next mirror, report all failures below
            tmp.unlink(missing_ok=True)
            errors.append(f"{url}: {e if isinstance(e, _MirrorFailed) else f'{type(e).__name__}: {e}'}")
            continue
        try:
            verify(tmp, md5=md5, sha256=sha256, bad_name=dest.name, label="the download")
        except ChecksumError as e:
            tmp.unlink(missing_ok=True)  # only if verify could not rename it
            errors.append(f"{url}: {e}")
            bad_hash = True
            continue
        os.replace(tmp, dest)
        return dest
    cls = ChecksumError if bad_hash else DatasetNotFoundError
    raise cls(f"could not download {dest.name}; tried {len(urls)} URL{'s' * (len(urls) > 1)}:\n  "
              + "\n  ".join(errors) + f"\nDownload it yourself and place it at {dest}.")


def fetch_remote(remote: Remote, folder: Path) -> Path:
    """:func:`fetch` ``remote`` into ``folder``."""
    return fetch(remote.urls, Path(folder) / remote.name, md5=remote.md5, sha256=remote.sha256, size=remote.size)


def find_archives(folder: Path, patterns: Sequence[str] = ("*",)) -> list[Path]:
    """Archive files (by suffix) in ``folder`` matching any of ``patterns``, sorted by name."""
    if not folder.is_dir():
        return []
    found = {p for pat in patterns for p in folder.glob(pat)
             if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(ARCHIVE_SUFFIXES)}
    return sorted(found)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _bad_name(name: str) -> str | None:
    """Why a member name (or link target) cannot be used as given, or None."""
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[/\\]", name):  # "C:/x" from Windows
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):  # both separators: zip files made on Windows use "\\"
        return "has a '..' component"
    return None


def _landing(dest: str, name: str) -> str:
    """Where member ``name`` is written: its folder resolved through the links extracted so far.

    Resolving against the disk as it is *now* (not the name's text) is what stops a link
    extracted earlier from carrying a later member outside.
    """
    path = os.path.join(dest, name.rstrip("/"))
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _tar_problem(m: tarfile.TarInfo, dest: str) -> str | None:
    """Why tar member ``m`` may not be extracted into ``dest`` (a resolved path), or None."""
    why = _bad_name(m.name)
    if why:
        return why
    if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
        return "is a device, FIFO or other special file"
    where = _landing(dest, m.name)
    if not _inside(where, dest):
        return f"would be written to {where}, outside the folder it is extracted to (through a link)"
    if m.issym() or m.islnk():
        if _bad_name(m.linkname) == "is an absolute path":
            return f"is a link to the absolute path {m.linkname!r}"
        # a symbolic link is relative to its own folder, a hard link's target to the archive's root
        to = os.path.realpath(os.path.join(os.path.dirname(where) if m.issym() else dest, m.linkname))
        if not _inside(to, dest):
            return f"is a link to {m.linkname!r}, outside the folder it is extracted to"
    return None


def _zip_problem(info: zipfile.ZipInfo, dest: str) -> str | None:
    """Why zip member ``info`` may not be extracted into ``dest`` (a resolved path), or None."""
    why = _bad_name(info.filename)
    if why:
        return why
    # zipfile would write a link or device as a plain file holding garbage: refuse it instead
    if stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is a symbolic link, device or other special file (a zip member must be a file or a folder)"
    where = _landing(dest, info.filename)
    if not _inside(where, dest):
        return f"would be written to {where}, outside the folder it is extracted to"
    return None


def _unsafe(archive: Path, member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive}: member {member!r} {why}. Refusing to extract {archive.name}; nothing "
                              f"of it was kept. The archive is damaged or was tampered with: delete it and place "
                              f"a trusted copy there")


def _bounded(archive: Path, dest: Path, total: int, coming: int) -> None:
    """Refuse to go on when the members extracted so far and the ``coming`` bytes add up to ``total``,
    more than the unpack cap, or ``coming`` is more than ``dest``'s free space (checked before
    each member is written: nothing past either is)."""
    why = too_large(str(archive), total)
    if why:
        raise UnsafeArchiveError(f"{why}. Nothing of it was kept")
    free = shutil.disk_usage(dest).free
    if coming > free:
        raise DataError(f"{archive} unpacks to at least {total / 1e9:.3g} GB, and {dest.parent} has "
                        f"{free / 1e9:.3g} GB free at that point: free space or put the data root elsewhere")


def _extract_members(archive: Path, dest: Path) -> None:
    """Extract every member of a zip or tar archive into the new folder ``dest``, checking each
    first: its name and kind, and the total size written so far (:func:`_bounded`). A member's
    size is what its header says, and what is written: zipfile and tarfile write no more."""
    dest.mkdir()
    root = os.path.realpath(dest)
    total = 0
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            size = sum(i.file_size for i in infos)  # a zip says every size up front
            _bounded(archive, dest, size, size)
            for info in infos:
                why = _zip_problem(info, root)
                if why:
                    raise _unsafe(archive, info.filename, why)
                z.extract(info, root)
        return
    with tarfile.open(archive) as t:  # any compression
        for m in t:  # one pass: each member is checked against the disk as it is when it is written
            why = _tar_problem(m, root)
            if why:
                raise _unsafe(archive, m.name, why)
            total += m.size
            _bounded(archive, dest, total, m.size)
            if m.isdir():  # made here with the default mode (tarfile would make it 0o700)
                os.makedirs(os.path.join(root, m.name), exist_ok=True)
                continue
            try:  # set_attrs=False: no archive-chosen modes (setuid) or owners on any Python
                t.extract(m, root, set_attrs=False, **_TAR_FILTER)
            except _FILTER_ERROR as e:
                raise _unsafe(archive, m.name, f"is refused by tarfile's data filter ({e})") from e


def _link_leaving(tree: Path) -> tuple[Path, str] | None:
    """A symbolic link under ``tree`` that resolves outside it, and its target; or None."""
    real = os.path.realpath(tree)
    for folder, dirs, files in os.walk(tree):  # links to folders are listed, not followed
        for name in dirs + files:
            p = Path(folder) / name
            if p.is_symlink() and not _inside(os.path.realpath(p), real):
                return p, os.readlink(p)
    return None


def archive_names(archive: Path) -> list[str]:
    """The member names of a zip or tar archive; nothing is extracted."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                return z.namelist()
        with tarfile.open(archive) as t:
            return t.getnames()
    except (*_ARCHIVE_ERRORS, OSError) as e:
        raise CorruptDataError(f"{archive} is truncated or malformed ({type(e).__name__}: {e}); "
                               f"delete it and place a complete copy there") from e


def _content_root(tree: Path, marker: str) -> Path | None:
    """The shallowest folder ``d`` under ``tree`` with ``d / marker`` a file."""
    parts = Path(marker).parts
    hits = [p for p in tree.rglob(parts[-1]) if p.is_file() and p.parts[-len(parts):] == parts]
    if not hits:
        return None
    best = min(hits, key=lambda p: len(p.parts))
    return best.parents[len(parts) - 1]


def extract(archive: Path, target: Path, marker: str) -> Path:
    """Extract ``archive`` so that the folder holding ``marker`` becomes ``target``; all or nothing.

    Runs under a file lock; a ``target`` that already holds ``marker`` is returned as is.
    """
    archive, target = Path(archive), Path(target)
    work = archive.parent  # lock and temporary folder live beside the archive; nothing is created
    # under target's parents until the extraction is complete
    with FileLock(str(work / f".{target.name}.extract.lock")):
        if (target / marker).is_file():
            return target
        if target.exists():
            raise DataError(f"{target} exists but has no {marker}, so it is not a complete copy; "
                            f"remove it and run again to extract {archive}")
        for stale in work.glob(f".{target.name}.partial-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        tmp = work / f".{target.name}.partial-{os.getpid()}"
        print(f"[dann] extracting {archive} -> {target}")
        try:
            _extract_members(archive, tmp)
            found = _content_root(tmp, marker)
            if found is None:
                raise CorruptDataError(f"{archive} has no {marker}: it is not the expected archive")
            # a link may stay inside the temporary folder yet lead out of the part that is kept
            leaving = _link_leaving(found)
            if leaving:
                raise _unsafe(archive, leaving[0].relative_to(tmp).as_posix(),
                              f"is a link to {leaving[1]!r}, which leads out of the extracted {target.name}/")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(found, target)
        except _ARCHIVE_ERRORS as e:
            raise CorruptDataError(f"{archive} is truncated or malformed ({type(e).__name__}: {e}); "
                                   f"delete it and place a complete copy there") from e
        except OSError as e:
            raise DataError(f"could not extract {archive} to {target.parent} ({e}); check free disk space "
                            f"and permissions") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
