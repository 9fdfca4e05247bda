"""A small HTTP/1.1 server (RFC 9110, RFC 9112) for looking at and exercising the stack.

Routes:

- ``GET /``: an HTML page with the stack's live counters and connections, from an injected
  ``info()`` provider (see ``InfoProvider``); ``GET /stats.json`` is the same data as JSON.
- ``GET /bytes/N``: ``N`` bytes of the deterministic pattern of ``pattern_bytes`` (byte ``i`` of
  the body is ``i % 251``), streamed, so ``N`` may be far larger than memory.
- ``POST /sha256``: the hex SHA-256 of the request body, hashed as it arrives (Content-Length or
  chunked), so the body may be any size.
- ``HEAD`` for every ``GET`` route.

Theory of operation. The service is an asyncio protocol, :class:`HttpProtocol`, one small object
per connection: no task, reader or writer. Input is parsed incrementally where it arrives, in
``data_received``, by a state machine: *head* (request line, then header fields), then the
*body* (Content-Length, or chunked with its size lines, CRLFs and trailers), then the answer.
The head is read line by line with hard limits (request line, header block, header count) and
validated into a ``_Request``; everything wrong with a request is a ``_HttpError`` that carries
its status code, raised by the parser or the route and answered in one place (``_fail``). The
route decides whether it wants the body (and sends ``100 Continue`` only then); bodies are
consumed as they arrive, so a POST of any size is hashed in pieces. Responses always carry a
Content-Length, so the framing of the connection is never in doubt and keep-alive is the
default for HTTP/1.1.

The common case is cheap: a whole request head that arrives in one piece is parsed by one
regular expression (``_FAST_HEAD``), which accepts only what the line-by-line parser accepts
with the same result -- anything else (a head split across segments, bare LFs, a limit
exceeded, a malformed line) goes the line-by-line way, which finds the exact error. A small
response is one ``transport.write`` of head and body, made inside ``data_received``, so ustack
sends it in the same flush as the ACK of the request. ``GET /bytes/N`` for a large ``N`` writes
whole pattern blocks until the transport calls ``pause_writing`` and carries on at
``resume_writing``; while a response waits for the client to read, no further request is
parsed and input is buffered only up to ``MAX_BUFFERED``, then reading pauses too.

Time limits are one deadline per connection and one ``loop.call_at`` timer that is moved only
when the deadline comes earlier (a later one re-arms when the timer fires), so a keep-alive
request costs a clock read, not a timer: ``idle_timeout`` for the request line, for the rest
of the head (then 408), for each piece of a body and for each wait for the client to read.

Every error response is followed by closing the connection, because after a malformed head we can
no longer tell where the next request would start -- except a refused request without a body
(404 for a browser's favicon must not cost a connection). Closing with unread bytes in the
receive buffer makes a TCP send RST, which can destroy the response before the client reads it,
so that close is a *lingering close*: FIN first, then read and discard (bounded in bytes and
time) before closing. When the response itself says ``Connection: close`` the server closes
first, making it the side that performs the active close. A client that ends the stream in the
middle of a request, or goes quiet for ``idle_timeout``, has nobody waiting for an answer: the
connection just closes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import html
import json
import logging
import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from ustack import __version__
from ustack.apps.base import InfoProvider, Service, ServiceProtocol, serve_protocol

log = logging.getLogger(__name__)

SERVER = f"ustack/{__version__}"

# Body byte i of GET /bytes/N is i % 251. A prime period never lines up with power-of-two chunk
# or segment sizes, so a lost, duplicated or reordered piece changes the bytes at its position.
PATTERN_PERIOD = 251
_PATTERN_ROW = bytes(range(PATTERN_PERIOD))
# A whole number of periods, so each write starts at phase 0 and the same object is reused.
_PATTERN_BLOCK = _PATTERN_ROW * 261
_BLOCK_LEN = len(_PATTERN_BLOCK)
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
# Input kept while a response waits for the client to read; beyond it, reading pauses.
MAX_BUFFERED = 65536

GET_ROUTES_ALLOW = "GET, HEAD"
POST_ROUTES_ALLOW = "POST"

# RFC 9110 5.6.2: token = 1*tchar.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# RFC 9112 3: request-line = method SP request-target SP HTTP-version; the target is visible
# ASCII. Lines are matched without their line end (LF, or CRLF).
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(\d)\.(\d)")
# RFC 9112 5.1: no whitespace is allowed between the field name and the colon. A line that starts
# with whitespace (obs-fold) does not match either; RFC 9112 5.2 allows rejecting it with 400.
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):(.*)", re.DOTALL)
# RFC 9110 5.5: field values must not contain CR, LF or NUL; other controls but HTAB are invalid.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_VALUE_CHARS = rb"[\t\x20-\x7e\x80-\xff]"
# A whole head with CRLF line ends, no leading empty line, and only valid field lines: exactly
# the heads the line-by-line parser accepts (up to the limits, checked separately), in one match.
_FAST_HEAD = re.compile(
    rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(\d)\.(\d)\r\n"
    rb"((?:" + _TOKEN + rb":" + _VALUE_CHARS + rb"*\r\n)*)\r\n"
)
# One field line of a block _FAST_HEAD accepted: the name, and the value without OWS around it.
_FAST_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _VALUE_CHARS + rb"*?)[ \t]*\r\n")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(rb"[0-9]{1,20}")

_REASONS = {s.value: s.phrase.encode("latin-1") for s in HTTPStatus}
_SERVER = SERVER.encode("latin-1")
_TEXT = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"
_OCTETS = b"application/octet-stream"
_NO_STORE = b"Cache-Control: no-store\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"

# The Date field (RFC 9110 6.6.1) has a resolution of one second: format it once per second.
# [the time it stops being right, the formatted value]
_date: list[Any] = [0.0, b""]


def _http_date(now: float) -> bytes:
    second = int(now)
    value = formatdate(second, usegmt=True).encode("latin-1")
    _date[0] = second + 1.0
    _date[1] = value
    return value


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


@dataclass(slots=True)
class _Request:
    method: bytes
    target: bytes
    path: bytes
    http11: bool  # HTTP/1.1 (or a later 1.x); else HTTP/1.0
    keep_alive: bool
    content_length: int | None = None
    chunked: bool = False
    expect_continue: bool = False
    has_body: bool = False


def _validate(
    method: bytes, target: bytes, minor: bytes, fields: dict[bytes, list[bytes]]
) -> _Request:
    """The request a valid request line and header section describe; ``_HttpError`` if the
    fields contradict each other or ask for what we do not do."""
    # RFC 9112 3.2.2: a server MUST accept the absolute form; only its path matters here.
    path = target
    if b"://" in target:
        after = target.split(b"://", 1)[1]
        slash = after.find(b"/")
        path = after[slash:] if slash >= 0 else b"/"
    if b"?" in path:
        path = path.split(b"?", 1)[0]
    if b"#" in path:
        path = path.split(b"#", 1)[0]
    http11 = minor != b"0"

    # RFC 9112 3.2: 400 for an HTTP/1.1 request without Host, or for more than one Host.
    hosts = fields.get(b"host")
    if (hosts is None and http11) or (hosts is not None and len(hosts) > 1):
        raise _HttpError(400, "exactly one Host header field is required")

    connection = fields.get(b"connection")
    if connection is None:
        keep_alive = http11
    else:
        value = connection[0].lower() if len(connection) == 1 else b",".join(connection).lower()
        if value == b"close":  # what every closing client sends, without a token list
            keep_alive = False
        else:
            tokens = {t.strip() for t in value.split(b",")}
            keep_alive = b"close" not in tokens and (http11 or b"keep-alive" in tokens)
    request = _Request(method, target, path, http11, keep_alive)
    if b"transfer-encoding" in fields or b"content-length" in fields or b"expect" in fields:
        _framing(request, fields)
    return request


def _framing(request: _Request, fields: dict[bytes, list[bytes]]) -> None:
    codings = [
        c.strip().lower() for v in fields.get(b"transfer-encoding", ()) for c in v.split(b",")
    ]
    lengths = [c.strip() for v in fields.get(b"content-length", ()) for c in v.split(b",")]
    if codings:
        # RFC 9112 6.1: a server SHOULD answer a transfer coding it does not understand with
        # 501; chunked is the only one we understand, and it may be applied only once.
        if any(c != b"chunked" for c in codings):
            raise _HttpError(501, "unsupported transfer coding")
        if len(codings) > 1:
            raise _HttpError(400, "chunked applied more than once")
        # RFC 9112 6.3: Content-Length with Transfer-Encoding may be smuggling; reject it.
        if lengths:
            raise _HttpError(400, "both Content-Length and Transfer-Encoding")
        request.chunked = request.has_body = True
        # RFC 9112 6.1: a server MUST NOT keep using a connection after a chunked HTTP/1.0
        # request, because an HTTP/1.0 intermediary might not have understood the framing.
        if not request.http11:
            request.keep_alive = False
    elif lengths:
        # RFC 9110 8.6: a list of identical values may be treated as one; anything else is
        # an unrecoverable framing error.
        if not all(_DIGITS.fullmatch(n) for n in lengths) or len(set(map(int, lengths))) != 1:
            raise _HttpError(400, "invalid Content-Length")
        request.content_length = int(lengths[0])
        request.has_body = request.content_length > 0

    expect = [e.strip().lower() for e in fields.get(b"expect", ())]
    if expect:
        # RFC 9110 10.1.1: 100-continue is the only expectation; an HTTP/1.0 client's one is
        # ignored, anything else gets 417.
        if any(e != b"100-continue" for e in expect):
            raise _HttpError(417, "unsupported expectation")
        request.expect_continue = request.http11


# Connection states. _HEAD covers the request line and the header fields (``_fields`` is None
# until the request line has been read); the body states follow the route's decision to read it.
_HEAD = 0
_BODY = 1  # Content-Length body: _remaining bytes to go
_CHUNK_SIZE = 2  # chunked: the next chunk-size line
_CHUNK_DATA = 3  # chunked: _remaining bytes of chunk data
_CHUNK_END = 4  # chunked: the CRLF after chunk data
_TRAILERS = 5  # chunked: trailer fields up to the empty line
_STREAM = 6  # writing a /bytes/N body, waiting for resume_writing
_LINGER = 7  # after an error: FIN sent, reading and discarding
_CLOSED = 8


class HttpProtocol(ServiceProtocol):
    """One HTTP/1.1 connection of an :class:`HttpApp`; see the module docstring."""

    __slots__ = (
        "_app",
        "_buf",
        "_count",
        "_deadline",
        "_digest",
        "_empty_lines",
        "_eof",
        "_fields",
        "_limit",
        "_line",
        "_linger_left",
        "_loop",
        "_read_paused",
        "_remaining",
        "_request",
        "_scan",
        "_state",
        "_timer",
        "_timer_when",
        "_total",
        "_write_paused",
    )

    def __init__(self, app: HttpApp) -> None:
        super().__init__()
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = _HEAD
        self._buf = b""  # input not consumed yet
        # Bytes at the start of _buf already searched for a line end, in vain.
        self._scan = 0
        self._empty_lines = 0
        self._line: tuple[bytes, bytes, bytes] = (b"", b"", b"")  # method, target, minor
        self._fields: dict[bytes, list[bytes]] | None = None
        self._total = 0  # bytes of header (or trailer) section so far
        self._count = 0  # header (or trailer) fields so far
        self._request: _Request | None = None
        self._remaining = 0  # of a Content-Length body, a chunk, or a /bytes/N body
        self._limit: int | None = None  # on the body's size
        self._digest: Any = None  # what the body goes into (POST /sha256), else discarded
        self._linger_left = 0
        self._write_paused = False
        self._read_paused = False
        self._eof = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._deadline = 0.0

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._loop = loop = asyncio.get_running_loop()
        self._deadline = self._timer_when = when = loop.time() + self._app.idle_timeout
        self._timer = loop.call_at(when, self._on_timer)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _HEAD and not self._buf:
            # The common case, a new request arriving whole: nothing buffered to join.
            self._run(data)
            return
        if _BODY <= state <= _TRAILERS:
            # Each piece of a body gets idle_timeout to arrive, or the connection ends.
            self._set_deadline(self._app.idle_timeout)
        self._run(self._buf + data if self._buf else data)

    def eof_received(self) -> bool:
        self._eof = True
        self._run(self._buf)
        return True  # the close is ours to make, once what is owed has been sent

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._state < _LINGER:
            # The client has idle_timeout to make room again before it is taken to be gone.
            self._set_deadline(self._app.idle_timeout)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._state == _STREAM:
            self._pump()
        if self._state != _STREAM and self._state != _CLOSED:
            self._run(self._buf)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._buf = b""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def close(self) -> None:
        self._state = _CLOSED
        self._buf = b""
        super().close()

    # -- input ---------------------------------------------------------------------------------

    def _run(self, buf: bytes) -> None:
        """Consume ``buf`` as far as the state allows: parse, answer, and go on with the next
        request; keep the rest for later."""
        pos = 0
        end = len(buf)
        while True:
            state = self._state
            try:
                if state == _HEAD:
                    if pos >= end or self._write_paused:
                        break
                    request, pos = self._read_head(buf, pos, end)
                    if request is None:
                        break
                    self._request = request
                    self._begin(request)
                elif state <= _TRAILERS:
                    if pos >= end:
                        break
                    pos, done = self._read_body(buf, pos, end)
                    if not done:
                        break
                    assert self._request is not None
                    self._respond(self._request)
                elif state == _LINGER:
                    self._linger_left -= end - pos
                    pos = end
                    if self._linger_left <= 0:
                        self.close()
                    break
                else:
                    break  # _STREAM keeps the input for later, _CLOSED drops it
            except _HttpError as error:
                self._fail(error)
            except Exception:
                # A bug here must not take the server down; the client gets a closed connection.
                log.exception("http: unexpected error")
                self.close()
                return
        state = self._state
        if state == _CLOSED:
            return
        if pos:
            buf = buf[pos:]
        self._buf = buf
        # A response still being written (or waiting for the client to read) holds up input.
        blocked = state == _STREAM or (state == _HEAD and self._write_paused)
        if self._eof:
            # The client has said all it will say: finish what is owed (a response, requests
            # it sent before its FIN), then close. Anything else left is part of a request
            # nobody is waiting for.
            if not blocked or (state == _HEAD and not buf):
                self.close()
        elif blocked:
            if len(buf) > MAX_BUFFERED and not self._read_paused:
                assert self.transport is not None
                self._read_paused = True
                self.transport.pause_reading()
        elif self._read_paused:
            assert self.transport is not None
            self._read_paused = False
            self.transport.resume_reading()

    def _line_end(self, buf: bytes, pos: int, end: int, limit: int, status: int) -> int:
        """Where the line at ``pos`` ends (its LF), or -1 until it has arrived; ``_HttpError``
        with ``status`` once it is longer than ``limit`` bytes with its line end."""
        nl = buf.find(b"\n", pos + self._scan, end)
        if nl < 0:
            if end - pos > limit:
                raise _HttpError(status, "line too long")
            self._scan = end - pos
            return -1
        self._scan = 0
        if nl + 1 - pos > limit:
            raise _HttpError(status, "line too long")
        return nl

    def _read_head(self, buf: bytes, pos: int, end: int) -> tuple[_Request | None, int]:
        """The request whose head starts at ``pos`` and where it ends, or (None, how far the
        parse got) until the rest arrives."""
        app = self._app
        if self._fields is None:
            if not self._scan and not self._empty_lines:
                match = _FAST_HEAD.match(buf, pos)
                if match is not None:
                    request = self._fast_head(match, pos)
                    if request is not None:
                        return request, match.end()
            while True:
                nl = self._line_end(buf, pos, end, app.max_request_line, 414)
                if nl < 0:
                    return None, pos
                line = buf[pos : nl - 1 if nl > pos and buf[nl - 1] == 13 else nl]
                pos = nl + 1
                # RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request.
                if line or self._empty_lines >= 4:
                    break
                self._empty_lines += 1
            match = _REQUEST_LINE.fullmatch(line)
            if match is None:
                raise _HttpError(400, "malformed request line")
            method, target, major, minor = match.groups()
            if major != b"1":
                raise _HttpError(505, "only HTTP/1.x is supported")
            self._line = (method, target, minor)
            self._fields = {}
            self._total = self._count = 0
            # The rest of the head gets a time limit of its own; missing it is a 408.
            self._set_deadline(app.idle_timeout)
        pos, done = self._read_fields(buf, pos, end)
        if not done:
            return None, pos
        fields = self._fields
        assert fields is not None
        self._fields = None
        method, target, minor = self._line
        return _validate(method, target, minor, fields), pos

    def _fast_head(self, match: re.Match[bytes], pos: int) -> _Request | None:
        method, target, major, minor, block = match.groups()
        app = self._app
        if major != b"1" or match.end() - pos > app._fast_limit:
            return None
        pairs = _FAST_FIELD.findall(block)
        if len(pairs) > app.max_headers:
            return None
        fields: dict[bytes, list[bytes]] = {}
        for name, value in pairs:
            name = name.lower()
            if name in fields:
                fields[name].append(value)
            else:
                fields[name] = [value]
        return _validate(method, target, minor, fields)

    def _read_fields(self, buf: bytes, pos: int, end: int) -> tuple[int, bool]:
        """Header (or trailer) fields into ``_fields`` up to the empty line, within the size and
        count limits; (where the parse got, whether the empty line was reached)."""
        app = self._app
        limit = app.max_header_bytes
        fields = self._fields
        assert fields is not None
        while True:
            nl = self._line_end(buf, pos, end, limit, 431)
            if nl < 0:
                return pos, False
            self._total += nl + 1 - pos
            if self._total > limit:
                raise _HttpError(431, "header section too large")
            line = buf[pos : nl - 1 if nl > pos and buf[nl - 1] == 13 else nl]
            pos = nl + 1
            if not line:
                return pos, True
            self._count += 1
            if self._count > app.max_headers:
                raise _HttpError(431, "too many header fields")
            match = _FIELD_LINE.fullmatch(line)
            if match is None:
                raise _HttpError(400, "malformed header field")
            value = match.group(2).strip(b" \t")
            if _BAD_VALUE.search(value):
                raise _HttpError(400, "invalid character in header field value")
            fields.setdefault(match.group(1).lower(), []).append(value)

    def _read_body(self, buf: bytes, pos: int, end: int) -> tuple[int, bool]:
        """Consume body bytes from ``pos``; (where it got, whether the body is complete)."""
        state = self._state
        digest = self._digest
        while pos < end:
            if state in (_BODY, _CHUNK_DATA):
                take = end - pos
                remaining = self._remaining
                if take > remaining:
                    take = remaining
                if digest is not None:
                    digest.update(
                        buf if take == end and not pos else memoryview(buf)[pos : pos + take]
                    )
                pos += take
                self._remaining = remaining = remaining - take
                if remaining:
                    continue
                if state == _BODY:
                    return pos, True
                state = self._state = _CHUNK_END
            elif state == _CHUNK_SIZE:
                # RFC 9112 7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF. Extensions
                # are ignored (7.1.1); the size line is bounded like a request line.
                nl = self._line_end(buf, pos, end, self._app.max_request_line, 400)
                if nl < 0:
                    return pos, False
                size_text = buf[pos:nl].split(b";", 1)[0].strip(b" \t\r\n")
                pos = nl + 1
                if not _HEX.fullmatch(size_text):
                    raise _HttpError(400, "malformed chunk size")
                size = int(size_text, 16)
                if size == 0:
                    # RFC 9112 7.1.2: trailer fields may be discarded; they are bounded like
                    # the head.
                    self._fields = {}
                    self._total = self._count = 0
                    state = self._state = _TRAILERS
                    continue
                self._total += size
                if self._limit is not None and self._total > self._limit:
                    raise _HttpError(413, f"body larger than {self._limit} bytes")
                self._remaining = size
                state = self._state = _CHUNK_DATA
            elif state == _CHUNK_END:
                first = buf[pos]
                if first == 10:  # LF
                    pos += 1
                elif first == 13 and pos + 1 < end and buf[pos + 1] == 10:  # CRLF
                    pos += 2
                elif first == 13 and pos + 1 == end:
                    return pos, False  # the LF has yet to come
                else:
                    raise _HttpError(400, "chunk data not followed by CRLF")
                state = self._state = _CHUNK_SIZE
            else:
                pos, done = self._read_fields(buf, pos, end)
                if done:
                    self._fields = None
                return pos, done
        return pos, False

    # -- routes --------------------------------------------------------------------------------

    def _begin(self, request: _Request) -> None:
        """Route a request whose head has been read: answer it, or start reading its body."""
        path, method = request.path, request.method
        if path.startswith(b"/bytes/") or path == b"/" or path == b"/stats.json":
            if method != b"GET" and method != b"HEAD":
                raise _HttpError(405, f"{method.decode()} not allowed", GET_ROUTES_ALLOW)
            # A GET route has no use for a body, but reading a small one keeps the connection.
            limit: int | None = MAX_IGNORED_BODY
            digest = None
        elif path == b"/sha256":
            if method != b"POST":
                raise _HttpError(405, f"{method.decode()} not allowed", POST_ROUTES_ALLOW)
            limit = self._app.max_upload
            digest = hashlib.sha256()
        else:
            raise _HttpError(404, f"no such resource: {path.decode()}")
        if not request.has_body:
            self._digest = digest
            self._respond(request)
            return
        known = request.content_length
        if known is not None and limit is not None and known > limit:
            raise _HttpError(413, f"body larger than {limit} bytes")
        if request.expect_continue:
            # RFC 9110 10.1.1: the client waits for this before sending a (large) body.
            assert self.transport is not None
            self.transport.write(_CONTINUE)
        self._digest = digest
        self._limit = limit
        if request.chunked:
            self._total = 0
            self._state = _CHUNK_SIZE
        else:
            assert known is not None
            self._remaining = known
            self._state = _BODY
        self._set_deadline(self._app.idle_timeout)

    def _respond(self, request: _Request) -> None:
        """Answer a request whose body (if any) has been read."""
        path = request.path
        if path.startswith(b"/bytes/"):
            self._send_pattern(request)
            return
        if path == b"/":
            status, ctype, body = self._page()
        elif path == b"/stats.json":
            status, ctype, body = self._stats()
        else:
            status, ctype = 200, _TEXT
            body = f"{self._digest.hexdigest()}\n"
            self._digest = None
        data = body.encode()
        head = self._head(request, status, ctype, len(data), _NO_STORE)
        assert self.transport is not None
        self.transport.write(head if request.method == b"HEAD" else head + data)
        self._done(request)

    def _send_pattern(self, request: _Request) -> None:
        text = request.path[7:]
        n = int(text) if _DIGITS.fullmatch(text) else -1
        if not 0 <= n <= MAX_BYTES_ROUTE:
            raise _HttpError(400, f"N must be a decimal integer from 0 to {MAX_BYTES_ROUTE}")
        head = self._head(request, 200, _OCTETS, n)
        transport = self.transport
        assert transport is not None
        if request.method == b"HEAD" or not n:
            transport.write(head)
        elif n <= _BLOCK_LEN:
            transport.write(head + _PATTERN_BLOCK[:n])
        else:
            transport.write(head)
            self._remaining = n
            self._state = _STREAM
            self._pump()
            return
        self._done(request)

    def _pump(self) -> None:
        """Write the /bytes/N body on until it is all written or the transport asks to pause."""
        transport = self.transport
        left = self._remaining
        while left and not self._write_paused:
            if transport is None or transport.is_closing():
                return  # gone: connection_lost follows
            if left >= _BLOCK_LEN:
                transport.write(_PATTERN_BLOCK)
                left -= _BLOCK_LEN
            else:
                transport.write(_PATTERN_BLOCK[:left])
                left = 0
        self._remaining = left
        if not left:
            assert self._request is not None
            self._done(self._request)

    def _done(self, request: _Request) -> None:
        """The response is written: close (the server closes first), or wait for the next."""
        self._request = None
        if not request.keep_alive:
            self.close()
            return
        self._state = _HEAD
        self._empty_lines = 0
        self._set_deadline(self._app.idle_timeout)

    # -- errors, time and closing --------------------------------------------------------------

    def _fail(self, error: _HttpError) -> None:
        """Answer ``error``; then go on with the next request, or close (lingering)."""
        request = self._request
        self._request = None
        self._fields = None
        self._digest = None
        self._scan = 0
        if request is not None and request.has_body:
            # Part of the body may still be unread: the framing is lost.
            request.keep_alive = False
        status = error.status
        body = b"%d %s: %s\n" % (status, _REASONS[status], error.detail.encode())
        extra = b"Allow: %s\r\n" % error.allow.encode() if error.allow else b""
        head = self._head(request, status, _TEXT, len(body), extra)
        transport = self.transport
        assert transport is not None
        transport.write(head if request is not None and request.method == b"HEAD" else head + body)
        if request is not None and request.keep_alive:
            # A refused request without a body leaves the framing intact.
            self._state = _HEAD
            self._empty_lines = 0
            self._set_deadline(self._app.idle_timeout)
        elif request is None or request.has_body:
            self._linger()
        else:
            self.close()

    def _linger(self) -> None:
        """FIN first, then read and discard what is in flight, bounded in bytes and time."""
        self._state = _LINGER
        self._linger_left = LINGER_BYTES
        assert self.transport is not None
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._set_deadline(self._app.linger_timeout)

    def _set_deadline(self, delay: float) -> None:
        loop = self._loop
        assert loop is not None
        self._deadline = when = loop.time() + delay
        if self._timer is None or when < self._timer_when:
            # Only a deadline earlier than the armed timer needs a new one; a later one is
            # noticed when the armed timer fires.
            if self._timer is not None:
                self._timer.cancel()
            self._timer_when = when
            self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._state == _CLOSED:
            return
        if self._deadline > self._timer_when:
            assert self._loop is not None
            self._timer_when = self._deadline
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        if self._state == _HEAD and self._fields is not None and not self._write_paused:
            self._buf = b""
            self._fail(_HttpError(408, "request head not received in time"))
        else:
            # Idle between requests, a body or a reader stalled, or the linger over: there is
            # nobody to answer.
            self.close()

    # -- responses -----------------------------------------------------------------------------

    def _head(
        self,
        request: _Request | None,
        status: int,
        ctype: bytes,
        length: int,
        extra: bytes = b"",
    ) -> bytes:
        if request is None or not request.keep_alive:
            connection = _CLOSE
        elif not request.http11:
            connection = _KEEP_ALIVE
        else:
            connection = b""
        now = time.time()
        date = _date[1] if now < _date[0] else _http_date(now)
        return (
            b"HTTP/1.1 %d %s\r\nDate: %s\r\nServer: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n"
            % (
                status,
                _REASONS[status],
                date,
                _SERVER,
                ctype,
                length,
                extra,
                connection,
            )
        )

    def _snapshot(self) -> dict[str, Any] | None:
        info = self._app.info
        if info is None:
            return None
        try:
            return info()
        except Exception as e:
            log.warning("http: info provider failed: %r", e)
            raise _HttpError(500, "the stack information provider failed") from None

    def _page(self) -> tuple[int, bytes, str]:
        return 200, _HTML, render_page(self._snapshot())

    def _stats(self) -> tuple[int, bytes, str]:
        info = self._snapshot()
        if info is None:
            body = json.dumps({"error": "no stack information provider"})
            return 503, _JSON, body + "\n"
        return 200, _JSON, json.dumps(info, indent=2, default=str) + "\n"


class HttpApp(Service):
    """The HTTP service: ``HttpApp(info).protocol_factory()`` makes an :class:`HttpProtocol`
    (what ustack's ``start_server`` runs, and what ``loop.create_server`` takes); awaiting
    ``HttpApp(info)(reader, writer)`` serves a connection a streams server handed over."""

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
        super().__init__(self._serve_streams, functools.partial(HttpProtocol, self))
        self.__name__ = "http"
        self.info = info
        self.idle_timeout = idle_timeout
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_upload = max_upload
        self.linger_timeout = linger_timeout
        # A head no longer than this is within both the request-line and header-section limits.
        self._fast_limit = min(max_request_line, max_header_bytes)

    async def _serve_streams(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await serve_protocol(HttpProtocol(self), reader, writer)

    def __repr__(self) -> str:
        return f"<HttpApp info={'yes' if self.info else 'no'}>"


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
