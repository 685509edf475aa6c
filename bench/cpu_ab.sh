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
# REDIS=1 runs each version as two processes sharing the room through a fresh
# redis-server, on scenario (b) ten times as long as the bench's (JSON, 1,000
# clients, 2 senders x 2,000 messages, clients split over both); the CPU is
# both processes' and redis-server's in the send phase (as load.ts reports
# it), in ns per delivery, then (in brackets) how many scripts Redis ran
# (EVALSHA/EVAL) and messages it published in the whole run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=${5:-5}
server_cpu=() load_cpu=()
if [ "${PIN:-0}" = 1 ]; then server_cpu=(taskset -c 0) load_cpu=(taskset -c 1); fi

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

ticks() { # pids -> user+system ticks of all of them
  local sum=0 pid
  for pid in "$@"; do sum=$((sum + $(awk '{print $14+$15}' "/proc/$pid/stat"))); done
  echo "$sum"
}

start_chat() { # dir main out [extra...] -> pid; waits for its port line
  local dir=$1 main=$2 out=$3 extra=""
  shift 3
  grep -q "connectRate" "$dir/$main" && extra="--connect-rate 1000000 --connect-burst 1000000"
  (cd "$dir" && exec "${server_cpu[@]}" deno run -A "$main" --hostname 127.0.0.1 --port 0 --ws-port 0 \
    --rate 1000000 --burst 1000000 --max-connections 100000 \
    --max-connections-per-ip 100000 --max-buffered-bytes 1073741824 \
    $extra --quiet "$@") >"$out" 2>&1 &
  echo $!
}

ws_port() { # out -> the chat port once it is logged
  for _ in $(seq 300); do grep -q "chat on port" "$1" && break; sleep 0.1; done
  sed -nE 's/.*chat on port ([0-9]+).*/\1/p' "$1"
}

one() { # dir main -> ns per delivery
  local dir=$1 main=$2 out pid ws t0 t1
  out=$(mktemp)
  pid=$(start_chat "$dir" "$main" "$out")
  ws=$(ws_port "$out")
  t0=$(ticks "$pid")
  "${load_cpu[@]}" deno run -A "$here/bench/load.ts" --url="ws://127.0.0.1:$ws/bench" --pid="$pid" \
    --protocol=json --quiet --workers=2 --clients=100 --senders=4 \
    --messages=8000 --json >/dev/null
  t1=$(ticks "$pid")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$out"
  # ticks of 10 ms over 3,200,000 deliveries, in ns per delivery
  echo $(((t1 - t0) * 10000000 / 3200000))
}

one_redis() { # dir main -> ns per delivery [scripts, publishes]
  local dir=$1 main=$2 port rpid out1 out2 p1 p2 ws1 ws2 ns stats
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  rpid=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  out1=$(mktemp) out2=$(mktemp)
  p1=$(start_chat "$dir" "$main" "$out1" --redis "redis://127.0.0.1:$port")
  p2=$(start_chat "$dir" "$main" "$out2" --redis "redis://127.0.0.1:$port")
  ws1=$(ws_port "$out1") ws2=$(ws_port "$out2")
  redis-cli -p "$port" config resetstat >/dev/null
  ns=$("${load_cpu[@]}" deno run -A "$here/bench/load.ts" --url="ws://127.0.0.1:$ws1/bench" \
    --url="ws://127.0.0.1:$ws2/bench" --pid="$p1,$p2,$rpid" \
    --protocol=json --quiet --workers=2 --clients=1000 --senders=2 \
    --messages=2000 --json |
    python3 -c 'import json, sys; print(round(json.load(sys.stdin)["server"]["cpuUsPerDelivery"] * 1000))')
  stats=$(redis-cli -p "$port" info commandstats | tr -d '\r' | awk -F'[:=,]' '
    /^cmdstat_(evalsha|eval):/ { s += $3 } /^cmdstat_publish:/ { p += $3 }
    END { printf "%d scripts, %d publishes", s, p }')
  kill -TERM "$p1" "$p2"; wait "$p1" "$p2" 2>/dev/null || true
  kill -TERM "$rpid"; wait "$rpid" 2>/dev/null || true
  rm -f "$out1" "$out2"
  echo "$ns [$stats]"
}

run=one
[ "${REDIS:-0}" = 1 ] && run=one_redis
for _ in $(seq "$rounds"); do
  echo "old $($run "$1" "$2")  new $($run "$3" "$4")"
done
