"""Downloads against a real HTTP server on loopback: resume, retries, verification, clear errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from snakemake.iocontainers import Namedlist

from tests.httpserver import LoopbackServer, closed_port_url
from workflow_scripts.data.download import (RESUME_OVERLAP_BYTES, Limits, _record_lock, VerificationError, check_fits, fetch, read_lock,
                                            sha256_file, verify_existing)
from workflow_scripts.errors import DownloadError

pytestmark = pytest.mark.timeout(30)

def resume_range(have: int) -> str:
    """The Range header of a resume with ``have`` bytes on disk: it re-reads an overlap to check it."""
    return f"bytes={max(0, have - RESUME_OVERLAP_BYTES)}-"


FAST = dict(retries=3, backoff_s=0.0, timeout_s=2.0, chunk_bytes=4096, progress=False)


def fits_bytes(band: str = "F775W", *, key: str = "FILTER", npix: int = 128, seed: int = 0,
               gz: bool = False) -> bytes:
    """A small real FITS image with a TAN WCS and a filter keyword."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [53.16, -27.78]
    wcs.wcs.crpix = [npix / 2, npix / 2]
    wcs.wcs.cdelt = [-0.06 / 3600, 0.06 / 3600]
    header = wcs.to_header()
    header[key] = band
    if key == "FILTER1":
        header["FILTER2"] = "CLEAR2L"
    data = np.random.default_rng(seed).normal(0, 1, (npix, npix)).astype(np.float32)
    buf = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(buf)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def corrupted(body: bytes) -> bytes:
    """Same length, different bytes in the data unit: still a readable FITS, wrong sha256."""
    tail = bytearray(body[-1000:])
    return body[:-1000] + bytes(b ^ 0xFF for b in tail)


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    return tmp_path / "downloads.lock.json"


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(dest.name))


def test_interrupted_transfer_resumes_with_range_and_verifies(server, tmp_path, lock):
    body = fits_bytes()
    server.add("/xdf_f775w.fits", body, cut_after={0: len(body) // 2})
    dest = tmp_path / "raw" / "xdf_f775w.fits"
    fetch(server.url("/xdf_f775w.fits"), dest, lock_file=lock, expect_filter="F775W", **FAST)
    assert dest.read_bytes() == body
    ranges = [r.range for r in server.requests]
    assert ranges == [None, resume_range(len(body) // 2)]
    assert leftovers(dest) == [dest.name]  # no .partial left behind


def test_lock_file_records_url_size_and_sha256(server, tmp_path, lock):
    body = fits_bytes()
    server.add("/a.fits", body)
    dest = tmp_path / "a.fits"
    fetch(server.url("/a.fits"), dest, lock_file=lock, **FAST)
    entry = json.loads(lock.read_text())["a.fits"]
    assert entry == {"url": server.url("/a.fits"), "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_sha256_mismatch_against_lock_is_refetched(server, tmp_path, lock):
    body = fits_bytes()
    lock.write_text(json.dumps({"a.fits": {"url": "x", "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}}))
    server.add("/a.fits", corrupted(body), body)
    dest = tmp_path / "a.fits"
    fetch(server.url("/a.fits"), dest, lock_file=lock, **FAST)
    assert dest.read_bytes() == body
    assert server.resources["/a.fits"].hits == 2


def test_fits_that_does_not_open_is_refetched(server, tmp_path, lock):
    body = fits_bytes()
    server.add("/a.fits", b"<html>maintenance</html>".ljust(len(body)), body)
    dest = tmp_path / "a.fits"
    fetch(server.url("/a.fits"), dest, lock_file=lock, **FAST)
    assert dest.read_bytes() == body
    assert read_lock(lock)["a.fits"]["sha256"] == hashlib.sha256(body).hexdigest()


def test_persistent_corruption_fails_and_leaves_nothing_under_the_final_name(server, tmp_path, lock):
    body = fits_bytes()
    lock.write_text(json.dumps({"a.fits": {"url": "x", "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}}))
    server.add("/a.fits", corrupted(body))
    dest = tmp_path / "a.fits"
    with pytest.raises(DownloadError, match="failed verification 3 times") as err:
        fetch(server.url("/a.fits"), dest, lock_file=lock, **{**FAST, "retries": 2})
    assert server.url("/a.fits") in str(err.value)
    assert "\n" not in str(err.value)
    assert not dest.exists()
    assert leftovers(dest) == []
    assert server.resources["/a.fits"].hits == 3


def test_wrong_filter_is_rejected(server, tmp_path, lock):
    server.add("/a.fits", fits_bytes("F606W"))
    dest = tmp_path / "a.fits"
    with pytest.raises(DownloadError, match="F775W"):
        fetch(server.url("/a.fits"), dest, lock_file=lock, expect_filter="F775W", **{**FAST, "retries": 0})
    assert not dest.exists()
    assert not lock.exists()


def test_acs_filter1_filter2_and_case_are_accepted(tmp_path):
    path = tmp_path / "acs.fits"
    path.write_bytes(fits_bytes("F775W", key="FILTER1"))
    check_fits(path, "f775w")
    with pytest.raises(VerificationError):
        check_fits(path, "F814W")


def test_404_is_one_clear_line_naming_the_url(server, tmp_path, lock):
    dest = tmp_path / "missing.fits"
    url = server.url("/missing.fits")
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, lock_file=lock, **FAST)
    message = str(err.value)
    assert url in message and "404" in message
    assert "source: embedded" in message and "mirror" in message
    assert "\n" not in message
    assert len(server.requests) == 1  # a 4xx is not retried
    assert leftovers(dest) == []


def test_offline_gives_the_clear_error_after_retries(tmp_path, lock):
    url = closed_port_url("/hlsp_xdf.fits")
    dest = tmp_path / "hlsp_xdf.fits"
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, lock_file=lock, **{**FAST, "retries": 2})
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert url in message and "3 attempts" in message and "offline" in message
    assert "source: embedded" in message and "\n" not in message
    assert not dest.exists()


def test_server_errors_are_retried(server, tmp_path, lock):
    body = fits_bytes()
    server.add("/a.fits", body, fail_first=2)
    dest = tmp_path / "a.fits"
    fetch(server.url("/a.fits"), dest, lock_file=lock, **FAST)
    assert dest.read_bytes() == body
    assert server.resources["/a.fits"].hits == 3


def test_server_errors_beyond_the_retries_fail(server, tmp_path, lock):
    server.add("/a.fits", fits_bytes(), fail_first=10)
    dest = tmp_path / "a.fits"
    with pytest.raises(DownloadError, match="503"):
        fetch(server.url("/a.fits"), dest, lock_file=lock, **{**FAST, "retries": 1})
    assert server.resources["/a.fits"].hits == 2
    assert not dest.exists()


def test_backoff_doubles(server, tmp_path, lock, monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr("workflow_scripts.data.download.time.sleep", delays.append)
    server.add("/a.fits", fits_bytes(), fail_first=3)
    fetch(server.url("/a.fits"), tmp_path / "a.fits", lock_file=lock, **{**FAST, "backoff_s": 0.5})
    assert delays == [0.5, 1.0, 2.0]


def test_timeout_is_retried(server, tmp_path, lock):
    body = fits_bytes()
    server.add("/a.fits", body, stall_s={0: 1.5})
    dest = tmp_path / "a.fits"
    fetch(server.url("/a.fits"), dest, lock_file=lock, **{**FAST, "timeout_s": 0.5})
    assert dest.read_bytes() == body


def test_server_ignoring_range_restarts_from_zero(server, tmp_path, lock):
    body = fits_bytes()
    server.add("/a.fits", body, cut_after={0: 5000}, ignore_range=True)
    dest = tmp_path / "a.fits"
    fetch(server.url("/a.fits"), dest, lock_file=lock, **FAST)
    assert dest.read_bytes() == body
    assert server.requests[1].range == resume_range(5000)


def test_complete_partial_answered_416_is_verified_and_kept(server, tmp_path, lock):
    body = fits_bytes()
    server.add("/a.fits", body)
    dest = tmp_path / "a.fits"
    dest.with_name("a.fits.partial").write_bytes(body)
    fetch(server.url("/a.fits"), dest, lock_file=lock, **FAST)
    assert dest.read_bytes() == body
    assert [r.range for r in server.requests] == [resume_range(len(body))]


def test_bad_complete_partial_is_discarded_and_refetched(server, tmp_path, lock):
    body = fits_bytes()
    lock.write_text(json.dumps({"a.fits": {"url": "x", "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}}))
    server.add("/a.fits", body)
    dest = tmp_path / "a.fits"
    dest.with_name("a.fits.partial").write_bytes(corrupted(body))
    fetch(server.url("/a.fits"), dest, lock_file=lock, **FAST)
    assert dest.read_bytes() == body
    assert [r.range for r in server.requests] == [resume_range(len(body)), None]


def test_cuts_without_progress_fail_and_nothing_sits_under_the_final_name(server, tmp_path, lock):
    server.add("/a.fits", fits_bytes(), cut_after={i: 0 for i in range(20)})
    dest = tmp_path / "a.fits"
    with pytest.raises(DownloadError, match="attempts"):
        fetch(server.url("/a.fits"), dest, lock_file=lock, **{**FAST, "retries": 2})
    assert not dest.exists()
    assert server.resources["/a.fits"].hits == 3


def test_gzipped_fits_is_stored_byte_for_byte_and_resumed(server, tmp_path, lock):
    body = fits_bytes(npix=256, gz=True)
    server.add("/ceers_f444w_i2d.fits.gz", body, cut_after={0: len(body) // 3})
    dest = tmp_path / "ceers_f444w_i2d.fits.gz"
    fetch(server.url("/ceers_f444w_i2d.fits.gz"), dest, lock_file=lock, expect_filter="F775W", **FAST)
    assert dest.read_bytes() == body
    assert server.requests[1].range == resume_range(len(body) // 3)


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path, lock):
    body = fits_bytes()
    server.add("/a.fits", body)
    dest = tmp_path / "a.fits"
    fetch(server.url("/a.fits"), dest, lock_file=lock, **FAST)
    fetch(server.url("/a.fits"), dest, lock_file=lock, **FAST)
    assert server.resources["/a.fits"].hits == 1
    verify_existing(dest, lock)


def test_tampered_existing_file_is_detected_and_refetched(server, tmp_path, lock):
    body = fits_bytes()
    server.add("/a.fits", body)
    dest = tmp_path / "a.fits"
    fetch(server.url("/a.fits"), dest, lock_file=lock, **FAST)
    dest.write_bytes(corrupted(body))
    with pytest.raises(DownloadError, match="sha256"):
        verify_existing(dest, lock)
    fetch(server.url("/a.fits"), dest, lock_file=lock, **FAST)
    assert dest.read_bytes() == body
    assert server.resources["/a.fits"].hits == 2


def test_verify_existing_without_lock_entry_or_file(tmp_path, lock):
    dest = tmp_path / "a.fits"
    with pytest.raises(DownloadError, match="not found"):
        verify_existing(dest, lock)
    dest.write_bytes(fits_bytes())
    with pytest.raises(DownloadError, match="no entry"):
        verify_existing(dest, lock)


def test_file_url_mirror(tmp_path, lock):
    source = tmp_path / "mirror" / "a.fits"
    source.parent.mkdir()
    source.write_bytes(fits_bytes())
    dest = tmp_path / "raw" / "a.fits"
    fetch(source.as_uri(), dest, lock_file=lock, expect_filter="F775W", **FAST)
    assert sha256_file(dest) == sha256_file(source)


def test_parallel_lock_updates_keep_every_entry(tmp_path, lock):
    names = [f"f{i}.fits" for i in range(16)]
    threads = [threading.Thread(target=_record_lock, args=(lock, n, {"url": n, "size": 1, "sha256": "0"}))
               for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(read_lock(lock)) == sorted(names)


def test_download_step_adapter(server, tmp_path):
    from workflow_scripts.steps.data.download import main

    body = fits_bytes()
    server.add("/a.fits", body, cut_after={0: 3000})
    dest = tmp_path / "raw" / "a.fits"
    snakemake = SimpleNamespace(
        output=Namedlist([str(dest)]),
        params=Namedlist(fromdict={"url": server.url("/a.fits"), "expect_filter": "F775W",
                                   "lock_file": str(tmp_path / "lock.json"),
                                   "download": {"retries": 2, "backoff_s": 0, "timeout_s": 2, "chunk_mb": 0.01}}),
    )
    main(snakemake, logging.getLogger("test"))
    assert dest.read_bytes() == body
    assert "a.fits" in read_lock(tmp_path / "lock.json")


STEPS = Path(__file__).resolve().parents[1] / "workflow_scripts" / "steps"


@pytest.mark.parametrize("script", sorted(str(p.relative_to(STEPS)) for p in STEPS.glob("*/*.py")
                                          if not p.name.startswith("_")))
def test_step_scripts_survive_snakemakes_script_preamble(script):
    """Snakemake prepends code to `script:` files, so a `from __future__` import there is a SyntaxError."""
    compile("import sys\n" + (STEPS / script).read_text(), script, "exec")


def test_resume_with_the_wrong_bytes_under_a_right_content_range_is_refused(server, tmp_path, lock):
    """A 206 whose Content-Range is right but whose bytes start at offset 0: the overlap check catches it, the
    partial file is thrown away and the download restarts; the lock records the true file's hash."""
    body = fits_bytes(npix=256)  # 256 kB: the cut leaves more than the overlap on disk
    assert len(body) // 2 > RESUME_OVERLAP_BYTES
    server.add("/w.fits", body, cut_after={0: len(body) // 2}, wrong_offset={1})
    dest = tmp_path / "w.fits"
    fetch(server.url("/w.fits"), dest, lock_file=lock, expect_filter="F775W", **FAST)
    assert dest.read_bytes() == body
    assert [r.range for r in server.requests] == [None, resume_range(len(body) // 2), None]
    assert read_lock(lock)["w.fits"]["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_trickling_server_is_given_up_by_the_minimum_throughput(server, tmp_path, lock):
    server.add("/t.fits", fits_bytes(), trickle_s=0.02)   # ~50 bytes/s, never idle long enough for a timeout
    dest = tmp_path / "t.fits"
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"below the minimum of 1000 \(download.min_rate_kb_s\)"):
        fetch(server.url("/t.fits"), dest, lock_file=lock,
              **{**FAST, "retries": 1}, limits=Limits(min_rate=1000.0, window_s=0.5))
    assert time.monotonic() - t0 < 10
    assert not dest.exists() and not read_lock(lock)


def test_the_total_deadline_ends_a_slow_download(server, tmp_path, lock):
    server.add("/d.fits", fits_bytes(), trickle_s=0.005)
    dest = tmp_path / "d.fits"
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"deadline of 1 s \(download.deadline_s\)"):
        fetch(server.url("/d.fits"), dest, lock_file=lock, **FAST, limits=Limits(deadline_s=1.0))
    assert time.monotonic() - t0 < 5
    assert not dest.exists() and not read_lock(lock)


def test_a_published_checksum_is_checked_before_anything_is_recorded(server, tmp_path, lock):
    body = fits_bytes()
    server.add("/c.fits", body)
    dest = tmp_path / "c.fits"
    with pytest.raises(DownloadError, match="failed verification"):
        fetch(server.url("/c.fits"), dest, lock_file=lock, **{**FAST, "retries": 1}, sha256="0" * 64)
    assert not dest.exists() and not read_lock(lock)
    fetch(server.url("/c.fits"), dest, lock_file=lock, **FAST, sha256=hashlib.sha256(body).hexdigest())
    assert read_lock(lock)["c.fits"]["sha256"] == hashlib.sha256(body).hexdigest()
