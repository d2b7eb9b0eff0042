#!/usr/bin/env bash
# The flood test (make flood-test): chatd with its default limits takes
# 1,000,000 bad datagrams from 5,000 source addresses while one real client
# keeps asking. It passes when the client's p99 round trip stays under 50 ms
# with nothing lost, chatd's peak memory stays under 64 MiB, chatd exits 0
# on SIGTERM, and its log holds summaries (at most one line per kind per
# 10 s), not a line per datagram. Loopback only; bounded by the datagram
# count and by `timeout`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
release=$repo/.build/release
datagrams=${FLOOD_DATAGRAMS:-1000000}
work=$(mktemp -d /tmp/chatd-flood.XXXXXX)
chatd_pid=
cleanup() {
    [ -n "$chatd_pid" ] && kill -KILL "$chatd_pid" 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/chatd.toml" <<CONF
[server]
bind = "127.0.0.1"
port = $port
[registry]
snapshot_path = "$work/state/registry.json"
[log]
target = "stderr"
CONF

"$release/chatd" --config "$work/chatd.toml" 2>"$work/chatd.log" &
chatd_pid=$!
timeout 30 "$release/chatd-bench" wait --port "$port" --within-s 20 >/dev/null
start=$SECONDS
status=0
timeout 600 "$release/chatd-bench" flood --port "$port" --datagrams "$datagrams" --per-source 200 \
    --server-pid "$chatd_pid" --max-p99-ms 50 --max-lost 0 | tee "$work/flood.txt" || status=1
elapsed=$((SECONDS - start))
peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$chatd_pid/status")
kill -TERM "$chatd_pid"
exit_code=0
wait "$chatd_pid" || exit_code=$?
chatd_pid=

lines=$(wc -l <"$work/chatd.log")
malformed=$(grep -c "malformed datagrams received" "$work/chatd.log" || true)
limited=$(grep -c "over the per-address rate limit" "$work/chatd.log" || true)
allowed=$((elapsed / 10 + 2))
echo "chatd: peak memory ${peak_kib} KiB, exit status $exit_code"
echo "log: $lines lines in all; 'malformed' summaries $malformed, 'rate limit' summaries $limited (at most $allowed each for ${elapsed} s)"
grep -m 2 "malformed datagrams received\|over the per-address rate limit" "$work/chatd.log" | sed 's/^/  /'
[ "$peak_kib" -lt 65536 ] || { echo "FAIL: chatd's peak memory ${peak_kib} KiB is not under 64 MiB"; status=1; }
[ "$exit_code" -eq 0 ] || { echo "FAIL: chatd exited $exit_code after SIGTERM"; status=1; }
[ "$malformed" -le "$allowed" ] && [ "$limited" -le "$allowed" ] || { echo "FAIL: more than one summary per kind per 10 s"; status=1; }
[ "$lines" -lt 100 ] || { echo "FAIL: $lines log lines for one flood"; status=1; }
[ "$status" -eq 0 ] && echo "flood test: PASS" || echo "flood test: FAIL"
exit "$status"
