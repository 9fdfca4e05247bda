"""A small HTTP/1.1 server (RFC 9110, RFC 9112) for looking at and exercising the stack.

Routes:

- ``GET /``: an HTML page with the stack's live counters and connections, from an injected
  ``info()`` provider (see ``InfoProvider``); ``GET /stats.json`` is the same data as JSON.
- ``GET /bytes/N``: ``N`` bytes of the deterministic pattern of ``pattern_bytes`` (byte ``i`` of
  the body is ``i % 251``), streamed, so ``N`` may be far larger than memory.
- ``POST /sha256``: the hex SHA-256 of the request body, hashed as it arrives (Content-Length or
  chunked), so the body may be any size.
- ``HEAD`` for every ``GET`` route.

Theory of operation: one task per connection runs a loop of *read head, read body, respond*. The
head is read line by line from the StreamReader with hard limits (request line, header block,
header count) and a timeout, then validated into a ``_Request``; everything wrong with it is a
``_HttpError`` that carries its status code. Bodies are consumed through one async generator that
enforces the framing (Content-Length or chunked) and the route's size limit, and sends
``100 Continue`` only once the route has decided it wants the body. Responses always carry a
Content-Length, so the framing of the connection is never in doubt and keep-alive is the default
for HTTP/1.1.

Every error response is followed by closing the connection, because after a malformed head we can
no longer tell where the next request would start. Closing with unread bytes in the receive buffer
makes a TCP send RST, which can destroy the response before the client reads it, so that close is
a *lingering close*: FIN first, then read and discard (bounded in bytes and time) before closing.
When the response itself says ``Connection: close`` the server closes first, making it the side
that performs the active close.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from ustack import __version__
from ustack.apps.base import PEER_ERRORS, InfoProvider, close_quietly

log = logging.getLogger(__name__)

SERVER = f"ustack/{__version__}"

# Body byte i of GET /bytes/N is i % 251. A prime period never lines up with power-of-two chunk
# or segment sizes, so a lost, duplicated or reordered piece changes the bytes at its position.
PATTERN_PERIOD = 251
_PATTERN_ROW = bytes(range(PATTERN_PERIOD))
# A whole number of periods, so each write starts at phase 0 and the same object is reused.
_PATTERN_BLOCK = _PATTERN_ROW * 261
CHUNK = 65536

MAX_REQUEST_LINE = 8192
MAX_HEADER_BYTES = 16384
MAX_HEADERS = 100
# A GET route ignores a request body; it reads and discards at most this much of one.
MAX_IGNORED_BODY = 65536
MAX_BYTES_ROUTE = 1 << 50
IDLE_TIMEOUT = 30.0
# Limits on the lingering close after an error: enough to swallow a request in flight.
LINGER_BYTES = 1 << 20
LINGER_TIMEOUT = 2.0

GET_ROUTES_ALLOW = "GET, HEAD"
POST_ROUTES_ALLOW = "POST"

# RFC 9110 5.6.2: token = 1*tchar.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# RFC 9112 3: request-line = method SP request-target SP HTTP-version; the target is visible ASCII.
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(\d)\.(\d)\r?\n")
# RFC 9112 5.1: no whitespace is allowed between the field name and the colon. A line that starts
# with whitespace (obs-fold) does not match either; RFC 9112 5.2 allows rejecting it with 400.
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):(.*?)\r?\n", re.DOTALL)
# RFC 9110 5.5: field values must not contain CR, LF or NUL; other controls but HTAB are invalid.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,20}")


def pattern_bytes(offset: int, length: int) -> bytes:
    """Bytes ``offset .. offset+length`` of the ``/bytes/N`` body: byte ``i`` is ``i % 251``."""
    if offset < 0 or length < 0:
        raise ValueError("offset and length must be non-negative")
    start = offset % PATTERN_PERIOD
    rotated = _PATTERN_ROW[start:] + _PATTERN_ROW[:start]
    return (rotated * (length // PATTERN_PERIOD + 1))[:length]


class _HttpError(Exception):
    def __init__(self, status: int, detail: str = "", allow: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.allow = allow


class _ClientGone(Exception):
    """The client ended the stream in the middle of a request: there is nobody to answer."""


_QUIET: tuple[type[BaseException], ...] = (_ClientGone, *PEER_ERRORS)


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    path: str
    version: tuple[int, int]
    headers: dict[str, list[str]]
    keep_alive: bool = True
    content_length: int | None = None
    chunked: bool = False
    expect_continue: bool = False
    continue_sent: bool = False

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


class HttpApp:
    """The HTTP service as an asyncio-streams handler: ``await HttpApp(info)(reader, writer)``."""

    def __init__(
        self,
        info: InfoProvider | None = None,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_request_line: int = MAX_REQUEST_LINE,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_headers: int = MAX_HEADERS,
        max_upload: int | None = None,
        linger_timeout: float = LINGER_TIMEOUT,
    ) -> None:
        self.info = info
        self.idle_timeout = idle_timeout
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_upload = max_upload
        self.linger_timeout = linger_timeout

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        linger = False
        try:
            linger = await self._serve(reader, writer)
        except _QUIET:
            pass
        except Exception:
            # A bug here must not take the server down; the client gets a closed connection.
            log.exception("http: unexpected error")
        finally:
            if linger:
                await self._linger(reader, writer)
            await close_quietly(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve requests until one ends the connection; True if the close must linger."""
        while True:
            try:
                request = await self._read_head(reader)
            except _HttpError as e:
                await self._send_error(writer, e, None)
                return True
            if request is None:
                return False
            try:
                keep_alive = await self._dispatch(request, reader, writer)
            except _HttpError as e:
                # A refused request without a body leaves the framing intact (404 for a
                # browser's favicon must not cost a connection); with a body, part of it may
                # still be unread, so the connection ends.
                if request.has_body:
                    request.keep_alive = False
                await self._send_error(writer, e, request)
                if not request.keep_alive:
                    return request.has_body
                continue
            if not keep_alive:
                return False

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if writer.can_write_eof():
                writer.write_eof()
            budget = LINGER_BYTES
            async with asyncio.timeout(self.linger_timeout):
                while budget > 0 and (data := await reader.read(CHUNK)):
                    budget -= len(data)
        except PEER_ERRORS:
            pass

    async def _read_line(self, reader: asyncio.StreamReader, limit: int, status: int) -> bytes:
        """One line including its LF; ``status`` is the error if it is longer than ``limit``."""
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            # Longer than the StreamReader can buffer: too long to accept whatever our limit is.
            raise _HttpError(status, "line too long") from None
        except asyncio.IncompleteReadError:
            raise _ClientGone from None
        if len(line) > limit:
            raise _HttpError(status, "line too long")
        return line

    async def _read_head(self, reader: asyncio.StreamReader) -> _Request | None:
        try:
            async with asyncio.timeout(self.idle_timeout):
                line = await self._read_line(reader, self.max_request_line, 414)
                # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request.
                for _ in range(4):
                    if line not in (b"\r\n", b"\n"):
                        break
                    line = await self._read_line(reader, self.max_request_line, 414)
        except (TimeoutError, _ClientGone):
            # An idle keep-alive connection that times out or that the client closes (even in
            # the middle of a request line) simply ends: there is no one to answer.
            return None
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            raise _HttpError(400, "malformed request line")
        method, target, major, minor = match.groups()
        if major != b"1":
            raise _HttpError(505, "only HTTP/1.x is supported")
        version = (1, 0) if minor == b"0" else (1, 1)
        try:
            async with asyncio.timeout(self.idle_timeout):
                headers = await self._read_fields(reader)
        except TimeoutError:
            raise _HttpError(408, "request head not received in time") from None
        return self._validate(method.decode("ascii"), target.decode("ascii"), version, headers)

    async def _read_fields(self, reader: asyncio.StreamReader) -> dict[str, list[str]]:
        """Header (or trailer) fields up to the empty line, within the size and count limits."""
        fields: dict[str, list[str]] = {}
        total = count = 0
        while True:
            line = await self._read_line(reader, self.max_header_bytes, 431)
            total += len(line)
            if total > self.max_header_bytes:
                raise _HttpError(431, "header section too large")
            if line in (b"\r\n", b"\n"):
                return fields
            count += 1
            if count > self.max_headers:
                raise _HttpError(431, "too many header fields")
            match = _FIELD_LINE.fullmatch(line)
            if match is None:
                raise _HttpError(400, "malformed header field")
            value = match.group(2).strip(b" \t")
            if _BAD_VALUE.search(value):
                raise _HttpError(400, "invalid character in header field value")
            name = match.group(1).decode("ascii").lower()
            fields.setdefault(name, []).append(value.decode("latin-1"))

    def _validate(
        self, method: str, target: str, version: tuple[int, int], headers: dict[str, list[str]]
    ) -> _Request:
        # RFC 9112 3.2.2: a server MUST accept the absolute form; only its path matters here.
        path = target
        if "://" in target:
            after = target.split("://", 1)[1]
            slash = after.find("/")
            path = after[slash:] if slash >= 0 else "/"
        path = path.split("?", 1)[0].split("#", 1)[0]
        request = _Request(method, target, path, version, headers)

        hosts = headers.get("host", [])
        # RFC 9112 3.2: 400 for an HTTP/1.1 request without Host, or for more than one Host.
        if len(hosts) > 1 or (version >= (1, 1) and not hosts):
            raise _HttpError(400, "exactly one Host header field is required")

        tokens = {t.strip().lower() for v in headers.get("connection", []) for t in v.split(",")}
        if version >= (1, 1):
            request.keep_alive = "close" not in tokens
        else:
            request.keep_alive = "keep-alive" in tokens and "close" not in tokens

        codings = [
            c.strip().lower() for v in headers.get("transfer-encoding", []) for c in v.split(",")
        ]
        lengths = [c.strip() for v in headers.get("content-length", []) for c in v.split(",")]
        if codings:
            # RFC 9112 6.1: a server SHOULD answer a transfer coding it does not understand with
            # 501; chunked is the only one we understand, and it may be applied only once.
            if any(c != "chunked" for c in codings):
                raise _HttpError(501, "unsupported transfer coding")
            if len(codings) > 1:
                raise _HttpError(400, "chunked applied more than once")
            # RFC 9112 6.3: Content-Length with Transfer-Encoding may be smuggling; reject it.
            if lengths:
                raise _HttpError(400, "both Content-Length and Transfer-Encoding")
            request.chunked = True
            # RFC 9112 6.1: a server MUST NOT keep using a connection after a chunked HTTP/1.0
            # request, because an HTTP/1.0 intermediary might not have understood the framing.
            if version < (1, 1):
                request.keep_alive = False
        elif lengths:
            # RFC 9110 8.6: a list of identical values may be treated as one; anything else is
            # an unrecoverable framing error.
            if not all(_DIGITS.fullmatch(n) for n in lengths) or len(set(map(int, lengths))) != 1:
                raise _HttpError(400, "invalid Content-Length")
            request.content_length = int(lengths[0])

        expect = [e.strip().lower() for e in headers.get("expect", [])]
        if expect:
            # RFC 9110 10.1.1: 100-continue is the only expectation; an HTTP/1.0 client's one is
            # ignored, anything else gets 417.
            if any(e != "100-continue" for e in expect):
                raise _HttpError(417, "unsupported expectation")
            request.expect_continue = version >= (1, 1)
        return request

    async def _dispatch(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; True if the connection stays open for the next one."""
        path, method = request.path, request.method
        if path in ("/", "/stats.json") or path.startswith("/bytes/"):
            if method not in ("GET", "HEAD"):
                raise _HttpError(405, f"{method} not allowed", GET_ROUTES_ALLOW)
            # A GET route has no use for a body, but reading a small one keeps the connection.
            async for _ in self._body(request, reader, writer, MAX_IGNORED_BODY):
                pass
            if path == "/":
                status, ctype, body = self._page()
            elif path == "/stats.json":
                status, ctype, body = self._stats()
            else:
                return await self._send_pattern(request, writer)
        elif path == "/sha256":
            if method != "POST":
                raise _HttpError(405, f"{method} not allowed", POST_ROUTES_ALLOW)
            digest = hashlib.sha256()
            async for chunk in self._body(request, reader, writer, self.max_upload):
                digest.update(chunk)
            status, ctype, body = 200, "text/plain; charset=utf-8", f"{digest.hexdigest()}\n"
        else:
            raise _HttpError(404, f"no such resource: {path}")
        data = body.encode()
        head = self._head(request, status, ctype, len(data), [("Cache-Control", "no-store")])
        writer.write(head if method == "HEAD" else head + data)
        await self._drain(writer)
        return request.keep_alive

    async def _send_pattern(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        text = request.path[len("/bytes/") :]
        if not _DIGITS.fullmatch(text) or int(text) > MAX_BYTES_ROUTE:
            raise _HttpError(400, f"N must be a decimal integer from 0 to {MAX_BYTES_ROUTE}")
        remaining = int(text)
        writer.write(self._head(request, 200, "application/octet-stream", remaining))
        if request.method == "HEAD":
            remaining = 0
        block = _PATTERN_BLOCK
        while remaining >= len(block):
            writer.write(block)
            remaining -= len(block)
            await self._drain(writer)
        if remaining:
            writer.write(block[:remaining])
        await self._drain(writer)
        return request.keep_alive

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        # A client that stops reading for a whole idle period is treated as gone.
        async with asyncio.timeout(self.idle_timeout):
            await writer.drain()

    async def _read(self, reader: asyncio.StreamReader, n: int) -> bytes:
        async with asyncio.timeout(self.idle_timeout):
            data = await reader.read(n)
        if not data:
            raise _ClientGone
        return data

    async def _body(
        self,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limit: int | None,
    ) -> AsyncIterator[bytes]:
        """The request body in pieces, unframed; raises ``_HttpError`` for bad framing or size."""
        if not request.has_body:
            return
        known = request.content_length
        if known is not None and limit is not None and known > limit:
            raise _HttpError(413, f"body larger than {limit} bytes")
        if request.expect_continue and not request.continue_sent:
            # RFC 9110 10.1.1: the client waits for this before sending a (large) body.
            request.continue_sent = True
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self._drain(writer)
        if request.content_length is not None:
            remaining = request.content_length
            while remaining:
                data = await self._read(reader, min(remaining, CHUNK))
                remaining -= len(data)
                yield data
            return
        total = 0
        while True:
            # RFC 9112 7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF. Extensions
            # are ignored (7.1.1); the size line is bounded like a header line.
            line = await self._read_line(reader, self.max_request_line, 400)
            size_text = line.split(b";", 1)[0].strip(b" \t\r\n")
            if not _HEX.fullmatch(size_text):
                raise _HttpError(400, "malformed chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if limit is not None and total > limit:
                raise _HttpError(413, f"body larger than {limit} bytes")
            while size:
                data = await self._read(reader, min(size, CHUNK))
                size -= len(data)
                yield data
            if await self._read_line(reader, 2, 400) not in (b"\r\n", b"\n"):
                raise _HttpError(400, "chunk data not followed by CRLF")
        # RFC 9112 7.1.2: trailer fields may be discarded; they are bounded like the head.
        await self._read_fields(reader)

    def _head(
        self,
        request: _Request | None,
        status: int,
        ctype: str,
        length: int,
        extra: list[tuple[str, str]] | None = None,
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Date: {formatdate(usegmt=True)}",
            f"Server: {SERVER}",
            f"Content-Type: {ctype}",
            f"Content-Length: {length}",
        ]
        lines.extend(f"{k}: {v}" for k, v in extra or ())
        if request is None or not request.keep_alive:
            lines.append("Connection: close")
        elif request.version < (1, 1):
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_error(
        self, writer: asyncio.StreamWriter, error: _HttpError, request: _Request | None
    ) -> None:
        phrase = HTTPStatus(error.status).phrase
        body = f"{error.status} {phrase}: {error.detail}\n".encode()
        extra = [("Allow", error.allow)] if error.allow else []
        head = self._head(request, error.status, "text/plain; charset=utf-8", len(body), extra)
        writer.write(head if request is not None and request.method == "HEAD" else head + body)
        await self._drain(writer)

    def _snapshot(self) -> dict[str, Any] | None:
        if self.info is None:
            return None
        try:
            return self.info()
        except Exception as e:
            log.warning("http: info provider failed: %r", e)
            raise _HttpError(500, "the stack information provider failed") from None

    def _page(self) -> tuple[int, str, str]:
        return 200, "text/html; charset=utf-8", render_page(self._snapshot())

    def _stats(self) -> tuple[int, str, str]:
        info = self._snapshot()
        if info is None:
            body = json.dumps({"error": "no stack information provider"})
            return 503, "application/json", body + "\n"
        return 200, "application/json", json.dumps(info, indent=2, default=str) + "\n"


def _table(caption: str, columns: list[str], rows: list[list[object]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>\n" for row in rows
    )
    return f"<table>\n<caption>{esc(caption)}</caption>\n<tr>{head}</tr>\n{body}</table>\n"


def render_page(info: dict[str, Any] | None) -> str:
    """The ``GET /`` page: counters and connections as tables, every value HTML-escaped."""
    parts = [
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">',
        '<meta http-equiv="refresh" content="2">',
        f"<title>{html.escape(SERVER)}</title>",
        "<style>table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #999;padding:2px 8px;text-align:left}</style>",
        f"</head><body>\n<h1>{html.escape(SERVER)}</h1>\n",
    ]
    if info is None:
        parts.append(
            "<p>No stack information provider is attached to this server, so there are no "
            "counters or connections to show.</p>\n"
        )
    else:
        counters = info.get("counters") or {}
        rows: list[list[object]] = [[k, counters[k]] for k in sorted(counters)]
        parts.append(_table("Counters", ["counter", "value"], rows))
        connections = info.get("connections") or []
        columns: list[str] = []
        for conn in connections:
            columns.extend(k for k in conn if k not in columns)
        rows = [[conn.get(c, "") for c in columns] for conn in connections]
        parts.append(_table(f"Connections ({len(connections)})", columns, rows))
        rest = [[k, info[k]] for k in sorted(info) if k not in ("counters", "connections")]
        if rest:
            parts.append(_table("Stack", ["name", "value"], rest))
    parts.append("</body></html>\n")
    return "".join(parts)


def http_service(info: InfoProvider | None = None) -> HttpApp:
    return HttpApp(info)
