#!/usr/bin/env python3
"""tcpstream.py: a TCP stream with a verified checksum, for the C/R tests.

  tcpstream.py server DIR   listens on 127.0.0.1 (port written to DIR/port),
                            sends the stream to one client and checks that
                            the client echoes it back byte for byte.
  tcpstream.py client DIR   connects, checks every byte of the stream and
                            echoes it back.

The stream is the concatenation of sha256(b"%d" % k) for k = 0, 1, 2...
Each side writes its progress to DIR/<side>.progress ("bytes N" or
"ERROR ...") atomically, at most every 50 ms, and exits 1 on any error
(connection reset or closed, a wrong byte).
"""
import hashlib, os, selectors, socket, sys, time


class Stream:
    """The expected bytes, produced on demand."""

    def __init__(self):
        self.k, self.buf, self.off = 0, b"", 0

    def take(self, n):
        while len(self.buf) < n:
            self.buf += b"".join(hashlib.sha256(b"%d" % (self.k + i)).digest() for i in range(256))
            self.k += 256
        out, self.buf = self.buf[:n], self.buf[n:]
        self.off += n
        return out


def report(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text + "\n")
    os.rename(path + ".tmp", path)


def main():
    side, d = sys.argv[1], sys.argv[2]
    prog = os.path.join(d, side + ".progress")
    try:
        run(side, d, prog)
    except Exception as e:  # any failure is reported, then exit 1
        report(prog, "ERROR %s: %r" % (side, e))
        sys.exit(1)


def run(side, d, prog):
    if side == "server":
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        report(os.path.join(d, "port"), str(ls.getsockname()[1]))
        s, _ = ls.accept()
        ls.close()
    else:
        port = int(open(os.path.join(d, "port")).read())
        s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    out = Stream()     # server: what it sends
    check = Stream()   # what must arrive
    pending = b""      # client: received, not yet echoed
    last = 0.0
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    while True:
        want_write = bool(pending) or (side == "server" and out.off - check.off < (1 << 20))
        sel.modify(s, selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0))
        for _, ev in sel.select(timeout=0.2):
            if ev & selectors.EVENT_READ:
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    data = None
                if data is not None:
                    if not data:
                        raise RuntimeError("connection closed by the peer at byte %d" % check.off)
                    want = check.take(len(data))
                    if data != want:
                        raise RuntimeError("wrong bytes at %d" % (check.off - len(data)))
                    if side == "client":
                        pending += data
            if ev & selectors.EVENT_WRITE:
                if side == "server" and len(pending) == 0:
                    pending = out.take(8192)
                if pending:
                    try:
                        n = s.send(pending)
                        pending = pending[n:]
                    except BlockingIOError:
                        pass
        if side == "server" and check.off > out.off:
            raise RuntimeError("echo ahead of the stream")
        now = time.monotonic()
        if now - last > 0.05:
            report(prog, "bytes %d" % check.off)
            last = now


main()
