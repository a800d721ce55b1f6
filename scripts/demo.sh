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

# A container: a busybox counter run by runc, checkpointed and restored from
# its bundle twice, managed by runc again afterwards.
if command -v runc >/dev/null && command -v busybox >/dev/null; then
  b="$work/bundle"; id="ctr-cr-demo-$$"
  mkdir -p "$b/rootfs/bin" "$b/rootfs/proc" "$b/rootfs/sys" "$b/rootfs/dev" "$b/rootfs/tmp"
  cp "$(command -v busybox)" "$b/rootfs/bin/busybox"
  for c in sh sleep echo; do ln -s busybox "$b/rootfs/bin/$c"; done
  runc spec --bundle "$b"
  python3 - "$b/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"]
c["root"]["readonly"] = False
c["hostname"] = "ctr-cr-demo"
json.dump(c, open(p, "w"), indent=1)
PY
  trap 'runc delete --force "$id" >/dev/null 2>&1 || true; kill -9 $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
  runc run -d --bundle "$b" "$id" </dev/null >/dev/null 2>&1
  sleep 1
  echo "== container $id running under runc, counter at $(cat "$b/rootfs/tmp/count")"
  for round in 1 2; do
    # the second round checkpoints into the same $b/checkpoint: the new
    # image replaces the first once complete
    "$BIN" checkpoint --print-stats "$id"
    echo "== checkpointed: runc list shows $(runc list -q | grep -c "^$id$") container(s) named $id; counter stopped at $(cat "$b/rootfs/tmp/count")"
    "$BIN" restore -d "$b"
    sleep 1
    echo "== restored: runc state says $(runc state "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'); counter at $(cat "$b/rootfs/tmp/count")"
  done
  runc ps "$id"
  runc kill "$id" KILL; sleep 0.3; runc delete "$id"
  echo "== runc kill and delete worked on the restored container"
else
  echo "== (no runc or busybox: the container part is skipped)"
fi
echo "== demo done"
