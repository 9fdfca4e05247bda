"""The kernel reference server: echo (7), discard (9), ``GET /bytes/N`` and ``POST /sha256`` (80).

It plays ustack's part in the reference measurements, so that the same client talks to the
same services over the kernel's own TCP. One thread and one epoll loop over non-blocking
sockets: that holds 10,000 idle connections as easily as one busy one, and a single bulk
transfer moves through 1 MiB buffers, so the server costs a few system calls per megabyte and
the kernel's TCP, not this loop, sets the pace. The ``/bytes/N`` body is the same pattern
ustack's HTTP service sends (byte ``i`` is ``i % 251``); ``POST /sha256`` answers, as ustack's
does, with the hex SHA-256 of a Content-Length body, hashed as it arrives.

Run by the benchmarks inside a namespace: ``python bench/_refserver.py --address 10.8.0.2``
(or an IPv6 address such as ``fd00:8::2``).
It prints ``ready`` once listening and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import selectors
import socket
import sys

CHUNK = 1 << 20
BUFFER = 1 << 20
PERIOD = 251
PATTERN = memoryview(bytes(i % PERIOD for i in range(PERIOD)) * (CHUNK // PERIOD + 2))
MAX_HEAD = 8192
AGAIN = (BlockingIOError, InterruptedError)


class Conn:
    __slots__ = ("body_left", "body_off", "close_after", "digest", "eof", "inbuf", "kind",
                 "pending", "sock", "upload_left")  # fmt: skip

    def __init__(self, sock: socket.socket, kind: str) -> None:
        self.sock = sock
        self.kind = kind
        self.pending = b""  # bytes waiting for send space (echo replies, HTTP heads)
        self.inbuf = b""
        self.body_left = 0
        self.body_off = 0
        self.close_after = False
        self.eof = False
        self.upload_left = 0  # POST /sha256 body bytes still to come
        self.digest = hashlib.sha256()


class Server:
    def __init__(self, address: str, ports: dict[str, int]) -> None:
        self.sel = selectors.DefaultSelector()
        self.scratch = bytearray(BUFFER)
        for kind, port in ports.items():
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            lsock = socket.socket(family, socket.SOCK_STREAM)
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
            lsock.bind((address, port))
            lsock.listen(8192)
            lsock.setblocking(False)
            self.sel.register(lsock, selectors.EVENT_READ, ("listen", kind))

    def run(self) -> None:
        print("ready", flush=True)
        while True:
            for key, mask in self.sel.select():
                tag = key.data
                if tag[0] == "listen":
                    self.accept(key.fileobj, tag[1])  # type: ignore[arg-type]
                else:
                    conn: Conn = tag[1]
                    try:
                        if mask & selectors.EVENT_WRITE:
                            self.writable(conn)
                        if mask & selectors.EVENT_READ and conn.sock.fileno() >= 0:
                            self.readable(conn)
                    except OSError:
                        self.drop(conn)

    def accept(self, lsock: socket.socket, kind: str) -> None:
        for _ in range(256):
            try:
                sock, _addr = lsock.accept()
            except AGAIN:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED):
                    return
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(sock, kind)
            self.sel.register(sock, selectors.EVENT_READ, ("conn", conn))

    def drop(self, conn: Conn) -> None:
        if conn.sock.fileno() >= 0:
            self.sel.unregister(conn.sock)
            conn.sock.close()

    def want(self, conn: Conn, events: int) -> None:
        if conn.sock.fileno() >= 0:
            self.sel.modify(conn.sock, events, ("conn", conn))

    def readable(self, conn: Conn) -> None:
        if conn.kind == "discard":
            try:
                n = conn.sock.recv_into(self.scratch)
            except AGAIN:
                return
            if n == 0:
                self.drop(conn)
            return
        if conn.upload_left:
            self.upload(conn)
            return
        try:
            data = conn.sock.recv(65536)
        except AGAIN:
            return
        if not data:
            conn.eof = True
            if not conn.pending and not conn.body_left:
                self.drop(conn)
            return
        if conn.kind == "echo":
            self.send(conn, data)
        else:
            conn.inbuf += data
            self.http_requests(conn)

    def upload(self, conn: Conn) -> None:
        # Never read past the body, so a pipelined request after it stays in the socket.
        try:
            n = conn.sock.recv_into(self.scratch, min(conn.upload_left, BUFFER))
        except AGAIN:
            return
        if n == 0:
            self.drop(conn)  # the client gave up in the middle of the body
            return
        conn.digest.update(memoryview(self.scratch)[:n])
        conn.upload_left -= n
        if not conn.upload_left:
            self.uploaded(conn)

    def uploaded(self, conn: Conn) -> None:
        body = conn.digest.hexdigest().encode() + b"\n"
        extra = b"Connection: close\r\n" if conn.close_after else b""
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
        self.send(conn, head + b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body)

    def http_requests(self, conn: Conn) -> None:
        while (
            not conn.pending
            and not conn.body_left
            and not conn.upload_left
            and b"\r\n\r\n" in conn.inbuf
        ):
            head, _, conn.inbuf = conn.inbuf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split()
            close = any(x.lower().replace(" ", "") == "connection:close" for x in lines[1:])
            if len(parts) == 3 and parts[0] == "POST" and parts[1] == "/sha256":
                lengths = [x.split(":", 1)[1].strip() for x in lines[1:]
                           if x.lower().startswith("content-length:")]  # fmt: skip
                if len(lengths) != 1 or not lengths[0].isdigit():
                    conn.close_after = True
                    self.send(conn, b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\n\r\n")
                    return
                conn.close_after = close
                conn.digest = hashlib.sha256()
                conn.upload_left = int(lengths[0])
                # Body bytes that came with the head.
                first, conn.inbuf = conn.inbuf[: conn.upload_left], conn.inbuf[conn.upload_left :]
                conn.digest.update(first)
                conn.upload_left -= len(first)
                if not conn.upload_left:
                    self.uploaded(conn)
                continue
            if len(parts) == 3 and parts[0] == "GET" and parts[1].startswith("/bytes/"):
                size = int(parts[1][7:]) if parts[1][7:].isdigit() else -1
            else:
                size = -1
            if size < 0:
                conn.close_after = True
                self.send(conn, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            conn.close_after = close
            conn.body_left = size
            conn.body_off = 0
            extra = "Connection: close\r\n" if close else ""
            self.send(
                conn,
                f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {size}\r\n{extra}\r\n".encode(),
            )
        if len(conn.inbuf) > MAX_HEAD:
            self.drop(conn)

    def send(self, conn: Conn, data: bytes) -> None:
        conn.pending += data
        self.writable(conn)

    def writable(self, conn: Conn) -> None:
        sock = conn.sock
        try:
            while conn.pending:
                n = sock.send(conn.pending)
                conn.pending = conn.pending[n:]
            while conn.body_left:
                start = conn.body_off % PERIOD
                n = sock.send(PATTERN[start : start + min(conn.body_left, CHUNK)])
                conn.body_left -= n
                conn.body_off += n
        except AGAIN:
            # Wait for send space, and stop reading meanwhile: back-pressure to the client.
            self.want(conn, selectors.EVENT_WRITE)
            return
        if conn.close_after or conn.eof:
            self.drop(conn)
            return
        self.want(conn, selectors.EVENT_READ)
        if conn.kind == "http" and conn.inbuf:
            self.http_requests(conn)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="0.0.0.0")
    parser.add_argument("--echo", type=int, default=7)
    parser.add_argument("--discard", type=int, default=9)
    parser.add_argument("--http", type=int, default=80)
    args = parser.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    except (ValueError, OSError):
        pass  # 10,000 connections need the raise; smaller runs do not
    ports = {"echo": args.echo, "discard": args.discard, "http": args.http}
    try:
        Server(args.address, ports).run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
