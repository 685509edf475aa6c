#!/usr/bin/env bash
# Server CPU per delivery of two versions of main.ts, alternating, on a run of
# scenario (a) four times as long as the bench's (JSON, 100 clients, 4 senders
# x 8,000 messages), to see small differences through this machine's noise.
#
#   bash bench/cpu_ab.sh OLD_DIR OLD_MAIN NEW_DIR NEW_MAIN [ROUNDS]
#   e.g. git worktree add /tmp/old 4a9d6fe
#        bash bench/cpu_ab.sh /tmp/old main.ts . main.ts 5
#
# Prints ns of server CPU (user+system, all threads, /proc) per delivery. A
# version without --connect-rate gets no such flags (it would refuse them).
# PIN=1 puts the server on CPU 0 and the load on CPU 1 (taskset): on this
# 2-core machine that takes out how the two happen to share the cores, which
# otherwise moves (a)'s JSON figure by half from run to run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=${5:-5}
server_cpu=() load_cpu=()
if [ "${PIN:-0}" = 1 ]; then server_cpu=(taskset -c 0) load_cpu=(taskset -c 1); fi

one() { # dir main -> ns per delivery
  local dir=$1 main=$2 out pid ws t0 t1 extra=""
  grep -q "connectRate" "$dir/$main" && extra="--connect-rate 1000000 --connect-burst 1000000"
  out=$(mktemp)
  (cd "$dir" && exec "${server_cpu[@]}" deno run -A "$main" --hostname 127.0.0.1 --port 0 --ws-port 0 \
    --rate 1000000 --burst 1000000 --max-connections 100000 \
    --max-connections-per-ip 100000 --max-buffered-bytes 1073741824 \
    $extra --quiet) >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do grep -q "chat on port" "$out" && break; sleep 0.1; done
  ws=$(sed -nE 's/.*chat on port ([0-9]+).*/\1/p' "$out")
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  "${load_cpu[@]}" deno run -A "$here/bench/load.ts" --url="ws://127.0.0.1:$ws/bench" --pid="$pid" \
    --protocol=json --quiet --workers=2 --clients=100 --senders=4 \
    --messages=8000 --json >/dev/null
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$out"
  # ticks of 10 ms over 3,200,000 deliveries, in ns per delivery
  echo $(((t1 - t0) * 10000000 / 3200000))
}

for _ in $(seq "$rounds"); do
  echo "old $(one "$1" "$2")  new $(one "$3" "$4")"
done
