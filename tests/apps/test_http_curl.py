"""Real clients (curl, wget) against the HTTP service on the kernel's loopback TCP."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
from pathlib import Path

import pytest

from tests.apps.conftest import SAFETY, ServeService
from ustack.apps import HttpApp, pattern_bytes

CURL = shutil.which("curl")
WGET = shutil.which("wget")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl not installed")

MiB = 1 << 20


async def _run(*argv: str) -> tuple[int, bytes, bytes]:
    # Asynchronous, so the server on this event loop keeps serving while the client runs.
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(SAFETY):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@needs_curl
async def test_curl_download(serve_service: ServeService) -> None:
    port = await serve_service(HttpApp())
    n = 5 * MiB + 7
    rc, out, _ = await _run(CURL or "curl", "-sS", "--fail", f"http://127.0.0.1:{port}/bytes/{n}")
    assert rc == 0
    assert len(out) == n and _sha(out) == _sha(pattern_bytes(0, n))


@needs_curl
async def test_curl_head_and_errors(serve_service: ServeService) -> None:
    port = await serve_service(HttpApp())
    base = f"http://127.0.0.1:{port}"
    rc, out, _ = await _run(CURL or "curl", "-sSI", f"{base}/bytes/123")
    assert rc == 0
    assert re.search(rb"(?i)^content-length: 123\r$", out, re.M)
    rc, out, _ = await _run(
        CURL or "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/x"
    )
    assert out == b"404"
    rc, out, _ = await _run(
        CURL or "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", f"{base}/"
    )
    assert out == b"405"


@needs_curl
async def test_curl_reuses_the_connection(serve_service: ServeService) -> None:
    port = await serve_service(HttpApp())
    base = f"http://127.0.0.1:{port}"
    rc, out, err = await _run(CURL or "curl", "-sv", f"{base}/bytes/10", f"{base}/bytes/20")
    assert rc == 0
    assert out == pattern_bytes(0, 10) + pattern_bytes(0, 20)
    assert b"Re-using existing connection" in err


@needs_curl
async def test_curl_upload_file_with_expect_continue(
    serve_service: ServeService, tmp_path: Path
) -> None:
    port = await serve_service(HttpApp())
    body = pattern_bytes(99, 3 * MiB)
    path = tmp_path / "upload.bin"
    path.write_bytes(body)
    rc, out, err = await _run(
        CURL or "curl", "-sv", "--data-binary", f"@{path}", f"http://127.0.0.1:{port}/sha256"
    )
    assert rc == 0
    assert out.strip().decode() == _sha(body)
    # curl asks before sending more than 1 MiB, and the server must have invited the body.
    assert b"Expect: 100-continue" in err
    assert b"HTTP/1.1 100 Continue" in err


@needs_curl
async def test_curl_chunked_upload(serve_service: ServeService, tmp_path: Path) -> None:
    port = await serve_service(HttpApp())
    body = pattern_bytes(5, 2 * MiB + 3)
    path = tmp_path / "upload.bin"
    path.write_bytes(body)
    rc, out, err = await _run(
        CURL or "curl",
        "-sv",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        f"@{path}",
        f"http://127.0.0.1:{port}/sha256",
    )
    assert rc == 0
    assert b"Transfer-Encoding: chunked" in err
    assert out.strip().decode() == _sha(body)


@pytest.mark.skipif(WGET is None, reason="wget not installed")
async def test_wget_download(serve_service: ServeService, tmp_path: Path) -> None:
    port = await serve_service(HttpApp())
    target = tmp_path / "out.bin"
    rc, _, _ = await _run(
        WGET or "wget", "-q", "-O", str(target), f"http://127.0.0.1:{port}/bytes/{MiB}"
    )
    assert rc == 0
    assert target.read_bytes() == pattern_bytes(0, MiB)
