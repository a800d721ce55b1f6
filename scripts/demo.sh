#!/usr/bin/env bash
# make demo: checkpoint a running Python program, restore it, and show that
# it continues where it was (same pid, same counter, same in-memory data).
set -euo pipefail
BIN=${1:-bin/ctr-cr}
[ "$(id -u)" = 0 ] || { echo "demo: run as root (ptrace, clone3 set_tid)"; exit 1; }
command -v python3 >/dev/null || { echo "demo: python3 is needed"; exit 1; }
# Processes we start must not inherit this shell's extra fds (a pipe to a
# terminal multiplexer is an fd the engine would refuse to dump).
for fd in $(ls /proc/$$/fd); do
  if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done
work=$(mktemp -d /tmp/ctr-cr-demo.XXXXXX)
trap 'kill -9 $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/workload.py" <<'PY'
import hashlib, os, sys, time
data = {i: str(i) * 8 for i in range(200000)}          # a large dict in memory
digest = hashlib.sha256(repr(sorted(data.items())[:1000]).encode()).hexdigest()[:16]
n = 0
while True:
    n += 1
    data[n % 200000] = str(n)
    print(f"pid {os.getpid()} tick {n} dict {len(data)} entries digest {digest}", flush=True)
    time.sleep(0.2)
PY
setsid python3 "$work/workload.py" </dev/null >"$work/log" 2>&1 &
echo $! >"$work/pid"
pid=$(cat "$work/pid")
sleep 2
echo "== workload running (pid $pid):"; tail -n 3 "$work/log"
for round in 1 2; do
  echo "== round $round: ctr-cr dump -t $pid -D $work/img$round"
  "$BIN" dump -t "$pid" -D "$work/img$round" --print-stats
  wait "$pid" 2>/dev/null || true           # the original is gone (reaped)
  echo "== image summary:"; { "$BIN" show "$work/img$round" || true; } | head -n 8
  sleep 1
  echo "== log while the process is gone:"; tail -n 1 "$work/log"
  echo "== ctr-cr restore -D $work/img$round -d"
  "$BIN" restore -D "$work/img$round" -d --print-stats
  sleep 2
  echo "== after restore (same pid, counter continues):"; tail -n 3 "$work/log"
  [ -d "/proc/$pid" ] || { echo "demo: FAILED, pid $pid is not running"; exit 1; }
done
kill -9 "$pid"
wait "$pid" 2>/dev/null || true

# A process tree: a shell pipeline dumped mid-flight, pipes full of data.
echo "== a tree: sh -c 'seq 1 30000000 | gzip -1 | sha256sum'"
seq 1 30000000 | gzip -1 | sha256sum >"$work/ref.sum"
setsid sh -c "seq 1 30000000 | gzip -1 | sha256sum > $work/out.sum" </dev/null >/dev/null 2>&1 &
echo $! >"$work/pid"
tpid=$(cat "$work/pid")
sleep 0.5
"$BIN" dump -t "$tpid" -D "$work/tree" --print-stats
wait "$tpid" 2>/dev/null || true
{ "$BIN" show "$work/tree" || true; } | sed -n '2,8p'
"$BIN" restore -D "$work/tree" --print-stats     # foreground: until the pipeline ends
echo "== uninterrupted: $(cut -c1-16 "$work/ref.sum")  dumped+restored: $(cut -c1-16 "$work/out.sum")"
cmp -s "$work/ref.sum" "$work/out.sum" || { echo "demo: FAILED, the pipeline's result differs"; exit 1; }
echo "== demo done"
