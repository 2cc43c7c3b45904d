"""Resumable, verified downloads of archive files.

:func:`fetch` streams a URL to ``dest + '.partial'``, resumes an interrupted transfer with an HTTP ``Range``
request, retries transient failures (connection errors, timeouts, 5xx) with exponential back-off, verifies
the result (size, sha256 against a JSON lock file, FITS readability and FILTER keyword) and only then renames
it onto ``dest``. Nothing partial or unverified ever sits under the final name. A failure for good is one
:class:`~workflow_scripts.errors.DownloadError` line that names the URL and says what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import requests
import urllib3
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from tqdm import tqdm

from workflow_scripts.errors import DownloadError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"              # the transfer is streamed to dest + this suffix
LOCK_GUARD_SUFFIX = ".guard"             # sidecar file flock()ed while the JSON lock file is read and rewritten
HASH_BLOCK_BYTES = 8 * 2**20             # read size when hashing or gunzip-checking a file
FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".fts")
FILTER_KEYWORDS = ("FILTER", "FILTER1", "FILTER2")   # ACS puts the band in FILTER1 or FILTER2
RETRYABLE_4XX = (HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS)   # transient, worth a retry
HTTP_SERVER_ERROR = 500                  # 5xx and above: transient, retried
HTTP_CLIENT_ERROR = 400                  # other 4xx: the address is wrong, fail at once
PROGRESS_INTERVAL_S = 1.0                # the progress bar redraws at most this often (logs stay readable)
#: a resumed transfer asks for this many bytes before the end of the partial file and checks that they are the ones
#: already on disk: a server that answers 206 with the right Content-Range but the wrong bytes is caught
RESUME_OVERLAP_BYTES = 64 * 1024
CONTENT_RANGE_RE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
HINT = ("use the embedded default preset (config.yaml, `source: embedded`) or set a mirror URL for this "
        "file in the config")


class _TransientError(Exception):
    """A failure worth retrying (connection reset, timeout, 5xx, short read)."""


class _TooSlowError(_TransientError):
    """Throughput below the configured minimum: retried, but never counted as progress."""


@dataclass(frozen=True)
class Limits:
    """Time limits of one file's download: a total deadline over all attempts (s) and a minimum throughput
    (bytes/s, measured over windows of ``window_s``; 0 turns it off)."""

    deadline_s: float = float("inf")
    min_rate: float = 0.0
    window_s: float = 30.0


class VerificationError(Exception):
    """A file is not the expected one (size, sha256, FITS, FILTER); fetch turns it into a refetch or DownloadError."""


@dataclass(frozen=True)
class _Transfer:
    expected_size: int | None   # total size announced by the server, when it said


# ------------------------------------------------------------------------------------------- lock file
@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive flock on the lock file's guard so parallel jobs do not lose each other's entries."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file.with_name(lock_file.name + LOCK_GUARD_SUFFIX), "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def read_lock(lock_file: str | Path) -> dict[str, dict[str, Any]]:
    """Entries of a JSON lock file, keyed by file name: ``{name: {url, size, sha256}}`` ({} if absent)."""
    lock_file = Path(lock_file)
    if not lock_file.exists():
        return {}
    try:
        data = json.loads(lock_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DownloadError(f"lock file {lock_file} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(data, dict):
        raise DownloadError(f"lock file {lock_file} must hold a JSON object keyed by file name")
    return data


def _record_lock(lock_file: Path, name: str, entry: dict[str, Any]) -> None:
    """Add one entry to the lock file, rewriting it atomically under the guard lock."""
    with _locked(lock_file):
        data = read_lock(lock_file)
        data[name] = entry
        fd, tmp = tempfile.mkstemp(prefix=f".{lock_file.name}.", suffix=".tmp", dir=lock_file.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
                fh.write("\n")
            os.replace(tmp, lock_file)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------- verification
def _is_fits(name: str) -> bool:
    return name.lower().endswith(FITS_SUFFIXES)


def _check_gzip(path: Path) -> None:
    """Read a gzip stream to its end: the trailer's CRC32 and length catch truncation and corruption."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(HASH_BLOCK_BYTES):
                pass
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise VerificationError(f"not a valid gzip file ({exc})") from None


def check_fits(path: str | Path, expect_filter: str | None = None, *, name: str | None = None) -> None:
    """Raise ``VerificationError`` unless ``path`` is a complete FITS file (with ``expect_filter`` in a FILTER key)."""
    path = Path(path)
    name = name or path.name
    if name.lower().endswith(".gz"):
        _check_gzip(path)
    filters: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="File may have been truncated", category=AstropyUserWarning)
            with fits.open(path, memmap=True, lazy_load_hdus=False, ignore_missing_simple=False) as hdul:
                if len(hdul) == 0:
                    raise VerificationError("no HDU in the file")
                for hdu in hdul:
                    filters += [str(hdu.header[k]).strip() for k in FILTER_KEYWORDS if k in hdu.header]
    except VerificationError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError, AstropyUserWarning) as exc:
        raise VerificationError(f"not a readable FITS file ({type(exc).__name__}: {exc})") from None
    if expect_filter is not None and expect_filter.upper() not in {f.upper() for f in filters}:
        found = ", ".join(filters) or "none"
        raise VerificationError(f"FILTER keywords ({found}) do not include the expected band {expect_filter}")


def _verify(path: Path, name: str, *, lock_entry: dict[str, Any] | None, expected_size: int | None,
            expect_filter: str | None) -> tuple[int, str]:
    """Check a complete file; return its (size, sha256)."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise VerificationError(f"size {size} bytes differs from the {expected_size} announced by the server")
    if lock_entry is not None and "size" in lock_entry and size != int(lock_entry["size"]):
        raise VerificationError(f"size {size} bytes differs from the lock file's {lock_entry['size']}")
    digest = sha256_file(path)
    if lock_entry is not None and "sha256" in lock_entry and digest != lock_entry["sha256"]:
        raise VerificationError(f"sha256 {digest[:12]}... differs from the lock file's {lock_entry['sha256'][:12]}...")
    if _is_fits(name):
        check_fits(path, expect_filter, name=name)
    return size, digest


def verify_existing(dest: str | Path, lock_file: str | Path, expect_filter: str | None = None) -> None:
    """Check an already-downloaded file against its lock entry (size, sha256) and, for FITS, readability.

    Raises :class:`DownloadError` (one line) when the file is missing, has no lock entry or does not match.
    """
    dest = Path(dest)
    if not dest.exists():
        raise DownloadError(f"{dest}: file not found")
    entry = read_lock(lock_file).get(dest.name)
    if entry is None:
        raise DownloadError(f"{dest}: no entry in lock file {lock_file}; delete the file to download it again")
    try:
        _verify(dest, dest.name, lock_entry=entry, expected_size=None, expect_filter=expect_filter)
    except VerificationError as exc:
        raise DownloadError(f"{dest}: {exc}; delete it to download it again") from None


# -------------------------------------------------------------------------------------------- transfer
def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header; None where unknown."""
    if not value:
        return None, None
    match = CONTENT_RANGE_RE.match(value.strip())
    if match is None:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _permanent(url: str, reason: str) -> DownloadError:
    return DownloadError(f"download failed: {url}: {reason}; {HINT}")


def _copy_local(url: str, partial: Path) -> _Transfer:
    """A ``file://`` URL (a mirror on a shared file system): copy it to the partial file."""
    source = Path(url2pathname(urlparse(url).path))
    if not source.is_file():
        raise _permanent(url, "no such file")
    shutil.copyfile(source, partial)
    return _Transfer(expected_size=source.stat().st_size)


def _write(fh: Any, chunk: bytes, partial: Path) -> None:
    """Append a chunk; a local write failure (disk full, permissions) is not worth retrying."""
    try:
        fh.write(chunk)
    except OSError as exc:
        raise DownloadError(f"cannot write {partial}: {exc.strerror or exc}") from None


def _tail(path: Path, n: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(-n, os.SEEK_END)
        return fh.read(n)


class _Clock:
    """The deadline and the minimum throughput of one file's download (across its attempts)."""

    def __init__(self, limits: Limits, url: str) -> None:
        self.limits, self.url = limits, url
        self.start = time.monotonic()
        self.window_start, self.window_bytes = self.start, 0

    def new_attempt(self) -> None:
        self.window_start, self.window_bytes = time.monotonic(), 0
        self.check_deadline()

    def check_deadline(self) -> None:
        elapsed = time.monotonic() - self.start
        if elapsed > self.limits.deadline_s:
            raise _permanent(self.url, f"not finished within the deadline of {self.limits.deadline_s:g} s "
                                       "(download.deadline_s)")

    def received(self, n: int) -> None:
        self.check_deadline()
        self.window_bytes += n
        now = time.monotonic()
        if now - self.window_start >= self.limits.window_s:
            rate = self.window_bytes / (now - self.window_start)
            if rate < self.limits.min_rate:
                raise _TooSlowError(f"{rate:.0f} bytes/s over {now - self.window_start:.0f} s, below the minimum "
                                    f"of {self.limits.min_rate:g} (download.min_rate_kb_s)")
            self.window_start, self.window_bytes = now, 0


def _chunks(raw: Any, chunk_bytes: int) -> Iterator[bytes]:
    """The body as it arrives: ``read1`` returns whatever the socket has (a trickle is seen byte by byte, so the
    clock can judge it), where ``read(n)`` would wait for n bytes."""
    while chunk := raw.read1(chunk_bytes):
        yield chunk


def _transfer_once(session: requests.Session, url: str, partial: Path, *, timeout_s: float, chunk_bytes: int,
                   progress: bool, desc: str, clock: _Clock | None = None) -> _Transfer:
    """One HTTP request that appends to (or restarts) ``partial``; raise _TransientError to be retried."""
    clock = clock or _Clock(Limits(), url)
    clock.new_attempt()
    have = partial.stat().st_size if partial.exists() else 0
    overlap = min(RESUME_OVERLAP_BYTES, have)
    # identity: the bytes on disk must be the archive's bytes (a .fits.gz must not be transparently gunzipped)
    headers = {"Accept-Encoding": "identity"}
    if have > 0:
        headers["Range"] = f"bytes={have - overlap}-"
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=(timeout_s, timeout_s))
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema) as exc:
        raise _permanent(url, f"invalid URL ({exc})") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise _TransientError(f"cannot connect ({type(exc).__name__}; offline, or the server is down?)") from None
    with resp:
        status = resp.status_code
        if status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE and have > 0:
            _, total = _parse_content_range(resp.headers.get("Content-Range"))
            if total is None or total == have:
                # the partial file is probably complete; verification decides, and deletes it if not
                return _Transfer(expected_size=total)
            partial.unlink()
            raise _TransientError(f"server refused to resume at byte {have} of {total}; restarting")
        if status >= HTTP_SERVER_ERROR or status in RETRYABLE_4XX:
            raise _TransientError(f"HTTP {status} {resp.reason}")
        if status >= HTTP_CLIENT_ERROR:
            raise _permanent(url, f"HTTP {status} {resp.reason}")
        if status == HTTPStatus.PARTIAL_CONTENT:
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != have - overlap:
                partial.unlink(missing_ok=True)
                raise _TransientError(f"server resumed at byte {start}, not {have - overlap}; restarting")
            mode = "ab"
        elif status == HTTPStatus.OK:
            if have:
                log.info("%s: server ignored the Range request; restarting from byte 0", url)
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
            total = int(length) if length is not None and not encoded else None
        else:
            raise _permanent(url, f"unexpected HTTP {status} {resp.reason}")
        if mode == "wb":
            overlap = 0
        expected_overlap = _tail(partial, overlap) if overlap else b""
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                   disable=not progress, leave=False, mininterval=PROGRESS_INTERVAL_S)
        head = b""  # the overlap as received, compared with the bytes on disk before anything is appended
        try:
            with open(partial, mode) as fh:
                for chunk in _chunks(resp.raw, chunk_bytes):
                    clock.received(len(chunk))
                    if len(head) < overlap:
                        take = overlap - len(head)
                        head, chunk = head + chunk[:take], chunk[take:]
                        if len(head) == overlap and head != expected_overlap:
                            fh.close()
                            partial.unlink()
                            raise _TransientError(f"the resumed bytes {have - overlap}-{have - 1} differ from the "
                                                  "ones already downloaded (a server that sent the wrong part); "
                                                  "restarting from byte 0")
                        if not chunk:
                            continue
                    _write(fh, chunk, partial)
                    bar.update(len(chunk))
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ConnectionError,
                TimeoutError) as exc:
            raise _TransientError(f"transfer interrupted ({type(exc).__name__})") from None
        finally:
            bar.close()
    got = partial.stat().st_size
    if total is not None and got < total:
        raise _TransientError(f"connection closed at byte {got} of {total}")
    if total is not None and got > total:
        partial.unlink()
        raise _TransientError(f"received {got} bytes, more than the {total} announced; restarting")
    return _Transfer(expected_size=total)


def _transfer(url: str, partial: Path, *, retries: int, backoff_s: float, timeout_s: float, chunk_bytes: int,
              progress: bool, desc: str, clock: _Clock) -> _Transfer:
    """Bring ``partial`` to a complete transfer, resuming and retrying; DownloadError when it cannot.

    A failure after which the partial file grew does not use up a retry (a long transfer over a flaky line
    keeps going); ``retries`` consecutive failures without progress end it.
    """
    if urlparse(url).scheme == "file":
        return _copy_local(url, partial)
    failures, best = 0, partial.stat().st_size if partial.exists() else 0
    with requests.Session() as session:
        while True:
            try:
                return _transfer_once(session, url, partial, timeout_s=timeout_s, chunk_bytes=chunk_bytes,
                                      progress=progress, desc=desc, clock=clock)
            except _TransientError as exc:
                size = partial.stat().st_size if partial.exists() else 0
                if size > best and not isinstance(exc, _TooSlowError):
                    best, failures = size, 0
                else:
                    failures += 1
                if failures > retries:
                    raise _permanent(url, f"{exc}, gave up after {failures} attempts") from None
                delay = backoff_s * 2 ** max(failures - 1, 0)
                log.warning("%s: %s; retrying in %.1f s", url, exc, delay)
                time.sleep(delay)
                clock.check_deadline()


def fetch(url: str, dest: str | Path, *, lock_file: str | Path, retries: int, backoff_s: float, timeout_s: float,
          chunk_bytes: int, expect_filter: str | None = None, progress: bool = True, limits: Limits | None = None,
          sha256: str | None = None) -> Path:
    """Download ``url`` to ``dest``: resumable, retried, verified, renamed atomically; return ``dest``.

    On the first successful download ``{url, size, sha256}`` is recorded in ``lock_file`` under the file's
    name; later downloads must match it. ``sha256`` (a checksum the archive publishes, from the config) is checked
    before anything is recorded. ``limits``: a total deadline and a minimum throughput. An existing ``dest`` that
    verifies is kept as it is.
    """
    dest, lock_file = Path(dest), Path(lock_file)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and _keep_existing(url, dest, lock_file, expect_filter):
        return dest
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    last = ""
    clock = _Clock(limits or Limits(), url)
    for attempt in range(retries + 1):
        transfer = _transfer(url, partial, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                             chunk_bytes=chunk_bytes, progress=progress, desc=dest.name, clock=clock)
        entry = read_lock(lock_file).get(dest.name)
        published = {"sha256": sha256.lower()} if sha256 else None
        try:
            if published is not None and entry is not None and entry.get("sha256") != published["sha256"]:
                raise DownloadError(f"{lock_file}: the entry of {dest.name} has sha256 {entry.get('sha256')}, not "
                                    f"the published {published['sha256']}; delete the entry to download it again")
            size, digest = _verify(partial, dest.name, lock_entry=entry or published,
                                   expected_size=transfer.expected_size, expect_filter=expect_filter)
        except VerificationError as exc:
            last = str(exc)
            log.warning("%s: downloaded file failed verification (%s); fetching it again", url, exc)
            partial.unlink(missing_ok=True)
            if attempt < retries:
                time.sleep(backoff_s * 2**attempt)
            continue
        if entry is None:  # recorded before the rename, so a file under the final name always has an entry
            _record_lock(lock_file, dest.name, {"url": url, "size": size, "sha256": digest})
            log.info("%s: %d bytes, sha256 %s recorded in %s", dest.name, size, digest, lock_file)
        os.replace(partial, dest)
        return dest
    raise DownloadError(f"download failed: {url}: the file failed verification {retries + 1} times ({last}); "
                        f"if the archive changed it on purpose, delete its entry in {lock_file}, else {HINT}")


def _keep_existing(url: str, dest: Path, lock_file: Path, expect_filter: str | None) -> bool:
    """True when ``dest`` is already good; a bad one is deleted. A file without a lock entry (put there by
    hand) is kept, and recorded, when its content checks pass."""
    if dest.name in read_lock(lock_file):
        try:
            verify_existing(dest, lock_file, expect_filter)
        except DownloadError as exc:
            log.warning("%s; downloading it again", exc)
            dest.unlink()
            return False
        log.info("%s: already downloaded and verified", dest)
        return True
    try:
        size, digest = _verify(dest, dest.name, lock_entry=None, expected_size=None, expect_filter=expect_filter)
    except VerificationError as exc:
        log.warning("%s: existing file without a lock entry is bad (%s); downloading it again", dest, exc)
        dest.unlink()
        return False
    _record_lock(lock_file, dest.name, {"url": url, "size": size, "sha256": digest})
    log.warning("%s: existing file had no lock entry; it passed the content checks and is now recorded", dest)
    return True
