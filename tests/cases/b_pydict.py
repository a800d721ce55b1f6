"""b_pydict: a real interpreter (CPython) holding a large dict survives C/R.

Usage: python3 b_pydict.py WORKDIR

Builds a dict of 200k entries (int and str keys, str/tuple/float values),
computes a checksum over it, prints "ready", then loops (a small computation,
10 ms sleep) polling WORKDIR/go. After go: the checksum recomputed from the
live dict must equal the recorded one, the loop counter must have continued,
and the dict must still grow (10k more keys). Last line: PASS or FAIL: reason.
"""

import os
import sys
import time
import zlib

N = 200_000


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def build():
    d = {}
    for i in range(N):
        if i % 3 == 0:
            d[i] = "v%d" % (i * 7)
        elif i % 3 == 1:
            d["k%d" % i] = (i, i * 1.5, str(i))
        else:
            d[i * 1_000_003] = float(i) / 7
    return d


def checksum(d):
    """CRC over repr of every item in insertion order (deterministic)."""
    crc = 0
    for k, v in d.items():
        crc = zlib.crc32(repr((k, v)).encode(), crc)
    return crc, len(d)


def main():
    if len(sys.argv) < 2:
        print("usage: b_pydict.py WORKDIR", file=sys.stderr)
        sys.exit(2)
    go = os.path.join(sys.argv[1], "go")
    d = build()
    before = checksum(d)
    pid = os.getpid()
    print("log: pid %d, %d entries, crc %#x" % (pid, before[1], before[0]), flush=True)
    print("ready", flush=True)

    loops = 0
    acc = 0
    while not os.path.exists(go):
        # small computation touching the dict
        acc = (acc + len(d[(loops % (N // 3)) * 3])) % 1_000_003
        loops += 1
        time.sleep(0.01)

    if os.getpid() != pid:
        fail("pid %d, was %d" % (os.getpid(), pid))
    after = checksum(d)
    if after != before:
        fail("checksum (crc, len) %r, was %r" % (after, before))
    expect_acc = 0
    for i in range(loops):
        expect_acc = (expect_acc + len(d[(i % (N // 3)) * 3])) % 1_000_003
    if acc != expect_acc:
        fail("loop state lost: %d loops, acc %d, expected %d" % (loops, acc, expect_acc))

    for i in range(10_000):
        d["new%d" % i] = [i] * 3
    if len(d) != N + 10_000 or d["new9999"] != [9999] * 3:
        fail("dict does not grow correctly: len %d" % len(d))
    if checksum(d) == before:
        fail("checksum insensitive to new keys")
    print("log: %d loops between ready and go" % loops, flush=True)
    print("PASS", flush=True)


main()
