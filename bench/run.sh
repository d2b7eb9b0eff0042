#!/usr/bin/env bash
# chatd's performance suite: chatd against the C yardstick, in one table.
#
#   bash bench/run.sh [all|quick|scale]     (make bench runs `all` after a release build)
#
#   all     every row (about 3 to 4 minutes)
#   quick   the first three rows: CONNECT and mixed throughput, unloaded round trip
#   scale   the 1,000,000-user rows: throughput, memory, snapshot write, load and pause
#
# Environment: ROUNDS (default 4) alternations of each comparison, DURATION
# (default 2) seconds per measurement, PIN=1 to pin servers to CPU 0 and
# generators to CPU 1 (taskset), BENCH_SHARED (default ../shared/bench beside
# the checkout) the folder with refserver.c and loadgen.c.
#
# It compiles refserver and loadgen with `cc -O2` into .build/bench/, starts
# every server itself (chatd with a temporary config on a free port of
# 127.0.0.1, snapshot in a temporary folder, log level warning to stderr),
# measures, stops them, and prints one Markdown table on stdout (also saved
# as .build/bench/results.md) followed by the medians behind it. Progress
# goes to stderr. Traffic stays on 127.0.0.0/8; every server is stopped by
# the exit trap however the script ends. docs/PERFORMANCE.md explains each row.
set -euo pipefail

suite=${1:-all}
case $suite in
all | quick | scale) ;;
-h | --help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "bench/run.sh: unknown suite '$suite' (all, quick or scale)" >&2
    exit 64
    ;;
esac
rounds=${ROUNDS:-4}
duration=${DURATION:-2}
[[ $rounds =~ ^[1-9][0-9]?$ ]] || { echo "bench/run.sh: ROUNDS must be 1 to 99" >&2; exit 64; }
[[ $duration =~ ^[1-9][0-9]?$ ]] || { echo "bench/run.sh: DURATION must be whole seconds, 1 to 99" >&2; exit 64; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${BENCH_SHARED:-$repo/../shared/bench}
out=$repo/.build/bench
chatd=$repo/.build/release/chatd
bench=$repo/.build/release/chatd-bench
big_users=1000000
small_users=1000

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
    printf 'bench/run.sh: %s\n' "$*" >&2
    exit 1
}

# --- Tools -------------------------------------------------------------------

if [[ ! -f $shared/refserver.c || ! -f $shared/loadgen.c ]]; then
    die "cannot find the C yardstick (refserver.c, loadgen.c) in $shared; it is the shared folder beside the checkout (../shared/bench); set BENCH_SHARED to its path"
fi
for binary in "$chatd" "$bench"; do
    [[ -x $binary ]] || die "$binary is missing: run 'make bench' (or 'make build' first)"
done
((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 501)) || die "needs bash 5.1 or later (wait -n -p), this is $BASH_VERSION"
command -v cc >/dev/null || die "no C compiler (cc) to build refserver and loadgen: apt-get install gcc"
mkdir -p "$out"
cc -O2 -o "$out/refserver" "$shared/refserver.c"
cc -O2 -o "$out/loadgen" "$shared/loadgen.c"
refserver=$out/refserver
loadgen=$out/loadgen
# With PIN=1 each side has a core of its own: steadier placement, but every
# wake-up crosses cores, so all servers' replies per CPU second are lower.
server_cpu=() generator_cpu=()
if [[ ${PIN:-0} == 1 ]]; then
    server_cpu=(taskset -c 0) generator_cpu=(taskset -c 1)
fi
# chatd-bench counts CPU time in ticks of 1/100 s (USER_HZ); loadgen asks sysconf.
[[ $(getconf CLK_TCK) == 100 ]] || die "getconf CLK_TCK is $(getconf CLK_TCK), but chatd-bench assumes 100"
"$bench" selftest >/dev/null || die "chatd-bench selftest failed: run it to see which check"

work=$(mktemp -d "${TMPDIR:-/tmp}/chatd-bench.XXXXXX")
results=$work/results
mkdir -p "$results"
declare -a started=()

# Stops every server still running (SIGTERM, then SIGKILL after 10 s) and removes the work folder.
cleanup() {
    local pid
    for pid in "${started[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }

# A UDP port nothing on this machine is bound to.
free_port() {
    local port hex
    while :; do
        port=$((20000 + RANDOM % 40000))
        printf -v hex ':%04X ' "$port"
        grep -q "$hex" /proc/net/udp /proc/net/udp6 2>/dev/null || { echo "$port"; return; }
    done
}

# --- Servers -----------------------------------------------------------------
# start_* set: pid, port, startup_ms (launch to first answered request).

# Writes NAME's chatd config with snapshot_interval_s INTERVAL. The rate
# limit is off (a generator sends far more than 20 datagrams a second from
# each address); durability stays at its default, "sync", so the mixed rows
# include the journal's fdatasyncs.
chatd_config() {
    local name=$1 port=$2 interval=$3
    cat >"$work/$name/chatd.toml.new" <<EOF
[server]
bind = "127.0.0.1"
port = $port
[registry]
snapshot_path = "$work/$name/registry.json"
snapshot_interval_s = $interval
max_users = 2000000
[limits]
rate_per_ip = 0
[log]
level = "warning"
target = "stderr"
EOF
    mv "$work/$name/chatd.toml.new" "$work/$name/chatd.toml"
}

# wait_ready NAME PID PORT: waits for the server's first answer, or for it to
# exit (a bad config, a port taken), whichever comes first; sets startup_ms,
# the time from $launched to the answer.
wait_ready() {
    local name=$1 server_pid=$2 server_port=$3 answered waiter finished=none status=0
    "${generator_cpu[@]}" "$bench" wait --port "$server_port" --within-s 120 --json \
        >"$work/$name/wait.json" 2>"$work/$name/wait.err" &
    waiter=$!
    wait -n -p finished "$server_pid" "$waiter" || status=$?
    answered=$(now_ns)
    if [[ $finished != "$waiter" ]]; then
        kill "$waiter" 2>/dev/null || true
        wait "$waiter" 2>/dev/null || true
        forget "$server_pid"
        cat "$work/$name/"*.log >&2 2>/dev/null || true
        die "$name exited at start (status $status)"
    fi
    if ((status != 0)); then
        cat "$work/$name/"*.log >&2 2>/dev/null || true
        die "$name did not answer on 127.0.0.1:$server_port within 120 s"
    fi
    startup_ms=$(((answered - launched) / 1000000))
}

# start_chatd NAME [SNAPSHOT [INTERVAL]]
start_chatd() {
    local name=$1 snapshot=${2:-} interval=${3:-3600}
    mkdir -p "$work/$name"
    port=$(free_port)
    chatd_config "$name" "$port" "$interval"
    [[ -z $snapshot ]] || cp "$snapshot" "$work/$name/registry.json"
    launched=$(now_ns)
    "${server_cpu[@]}" "$chatd" --config "$work/$name/chatd.toml" 2>"$work/$name/chatd.log" &
    pid=$!
    started+=("$pid")
    wait_ready "$name" "$pid" "$port"
    log "$name: pid $pid on 127.0.0.1:$port, answering ${startup_ms} ms after launch"
}

start_refserver() {
    mkdir -p "$work/refserver"
    port=$(free_port)
    launched=$(now_ns)
    "${server_cpu[@]}" "$refserver" 127.0.0.1 "$port" 2>"$work/refserver/refserver.log" &
    pid=$!
    started+=("$pid")
    wait_ready refserver "$pid" "$port"
    log "refserver: pid $pid on 127.0.0.1:$port"
}

# stop_server PID: SIGTERM and wait (SIGKILL after 60 s); sets stop_ms and stop_status.
stop_server() {
    local server_pid=$1 t0 guard
    t0=$(now_ns)
    kill -TERM "$server_pid"
    (
        sleep 60 &
        trap 'kill $! 2>/dev/null; exit 0' TERM
        wait $!
        kill -KILL "$server_pid" 2>/dev/null
    ) &
    guard=$!
    stop_status=0
    wait "$server_pid" || stop_status=$?
    stop_ms=$((($(now_ns) - t0) / 1000000))
    kill -TERM "$guard" 2>/dev/null || true
    wait "$guard" 2>/dev/null || true
    forget "$server_pid"
}

# Drops a reaped server from the list the exit trap stops, so that a reused pid is never signalled.
forget() {
    local kept=() entry
    for entry in "${started[@]}"; do [[ $entry == "$1" ]] || kept+=("$entry"); done
    started=("${kept[@]}")
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# --- Measurements --------------------------------------------------------------
# Every run appends its figures to $results/KEY, one value per line; the table
# shows the median over the rounds.

record() { echo "$2" >>"$results/$1"; }

# JSON field of chatd-bench's output, or loadgen's key=value.
jfield() { grep -o "\"$2\": [^,}]*" "$1" | head -1 | sed 's/^.*: //'; }
lfield() { grep -oE "(^| )$2=[0-9.]+" "$1" | head -1 | sed 's/^.*=//'; }

# measure KEY GENERATOR PID PORT CLIENTS WINDOW MIX [SECONDS]: one run, figures recorded under KEY.
measure() {
    local key=$1 generator=$2 server_pid=$3 server_port=$4 clients=$5 window=$6 mix=$7 seconds=${8:-$duration}
    local file=$work/run-$key-$RANDOM.out
    if [[ $generator == loadgen ]]; then
        if ! "${generator_cpu[@]}" "$loadgen" -p "$server_port" -c "$clients" -w "$window" -d "$seconds" -m "$mix" -P "$server_pid" >"$file" 2>&1; then
            log "  $key: loadgen failed: $(tail -1 "$file")"
            return 0
        fi
        record "$key.rps" "$(lfield "$file" replies_per_s)"
        record "$key.cpu_rps" "$(lfield "$file" replies_per_server_cpu_s)"
        record "$key.p50" "$(lfield "$file" p50_us)"
        record "$key.p99" "$(lfield "$file" p99_us)"
        record "$key.max" "$(lfield "$file" max_us)"
        record "$key.lost" "$(lfield "$file" lost)"
        record "$key.errors" "$(lfield "$file" errors)"
    else
        # --timeout-ms 200 is loadgen's fixed timeout, so both count losses alike.
        if ! "${generator_cpu[@]}" "$bench" run --port "$server_port" --clients "$clients" --window "$window" --mix "$mix" \
            --duration "$seconds" --timeout-ms 200 --server-pid "$server_pid" --json --quiet >"$file" 2>&1; then
            log "  $key: chatd-bench failed: $(tail -1 "$file")"
            return 0
        fi
        record "$key.rps" "$(jfield "$file" replies_per_s)"
        record "$key.cpu_rps" "$(jfield "$file" replies_per_server_cpu_s)"
        record "$key.p50" "$(jfield "$file" p50_us)"
        record "$key.p99" "$(jfield "$file" p99_us)"
        record "$key.max" "$(jfield "$file" max_us)"
        record "$key.lost" "$(jfield "$file" lost)"
        record "$key.errors" "$(jfield "$file" errors)"
        record "$key.bench_cpu" "$(jfield "$file" bench_cpu_s)"
    fi
    log "  $key: $(tail -1 "$results/$key.rps") replies/s, $(tail -1 "$results/$key.cpu_rps") per server CPU s, p99 $(tail -1 "$results/$key.p99") µs, lost $(tail -1 "$results/$key.lost")"
}

# pair RESULT A B: records the ratio of the latest values of A and B (measured
# back to back in one round, so under the same conditions) as RESULT.
pair() {
    local a b
    a=$(tail -1 "$results/$2" 2>/dev/null || true)
    b=$(tail -1 "$results/$3" 2>/dev/null || true)
    [[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] || return 0
    record "$1" "$(awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.4f", a / b }')"
}

median() {
    [[ -s $results/$1 ]] || { echo nan; return; }
    grep -E '^[0-9.]+$' "$results/$1" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --- The table -------------------------------------------------------------------

table=$work/table.md
details=$work/details.md
: >"$table"
: >"$details"

# row FIGURE GENERATOR CHATD REFERENCE RATIO UNIT OP FACTOR TARGET_TEXT: RATIO
# (the median of the per-round ratios of CHATD to REFERENCE) is checked
# against OP (ge, le) FACTOR; with REFERENCE and RATIO "-", CHATD itself is.
row() {
    local figure=$1 generator=$2 ours=$3 reference=$4 ratio=$5 unit=$6 op=$7 factor=$8 target=$9
    awk -v f="$figure" -v g="$generator" -v a="$ours" -v b="$reference" -v r="$ratio" -v u="$unit" -v op="$op" -v k="$factor" -v t="$target" '
        function show(x) { if (x == "nan" || x == "") return "n/a"; return (x >= 100 ? sprintf("%.0f", x) : sprintf("%.3g", x)) u }
        BEGIN {
            v = (r == "-") ? a : r
            if (v == "nan" || v == "") { shown = "n/a"; verdict = "no data" }
            else {
                shown = (r == "-") ? "" : sprintf("%.2f", v)
                verdict = ((op == "ge" && v >= k) || (op == "le" && v <= k)) ? "PASS" : "MISS"
            }
            printf "| %s | %s | %s | %s | %s | %s | %s |\n", f, g, show(a), (b == "-" ? "" : show(b)), shown, t, verdict
        }' >>"$table"
}

detail() { printf '%s\n' "$*" >>"$details"; }

# The per-round ratios recorded under KEY, on one line.
ratios() { if [[ -s $results/$1 ]]; then awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), $1 }' "$results/$1"; else echo none; fi; }

# Medians of a comparison for the details section.
detail_runs() {
    local key label=$1
    shift
    for key in "$@"; do
        detail "| $label | ${key##*.} | $(median "$key.rps") | $(median "$key.cpu_rps") | $(median "$key.p50") | $(median "$key.p99") | $(median "$key.max") | $(median "$key.lost") | $(median "$key.errors") |"
    done
}

# --- Rows 1 to 3: chatd against refserver ---------------------------------------------

run_comparisons() {
    local main_pid main_port ref_pid ref_port round gen first
    start_chatd chatd-main
    main_pid=$pid main_port=$port
    empty_startup_ms=$startup_ms
    empty_rss_kib=$(rss_kib "$main_pid")
    start_refserver
    ref_pid=$pid ref_port=$port

    for round in $(seq "$rounds"); do
        for mix in connect mixed; do
            for gen in loadgen chatd-bench; do
                log "round $round/$rounds: $mix, 64 clients × 4, $gen"
                if [[ $mix == mixed ]]; then
                    # refserver never reuses the slot a rename frees in its name
                    # table, so every rename lengthens the probe chains of the
                    # renamed names and its mixed rate sinks run after run (by
                    # almost half over four runs of 3 s). A fresh one per mixed
                    # run keeps every round measuring the same thing.
                    stop_server "$ref_pid"
                    start_refserver
                    ref_pid=$pid ref_port=$port
                fi
                # Alternate which server goes first, so drift over the run favours neither.
                if ((round % 2)); then
                    measure "$mix.chatd.$gen" "$gen" "$main_pid" "$main_port" 64 4 "$mix"
                    measure "$mix.refserver.$gen" "$gen" "$ref_pid" "$ref_port" 64 4 "$mix"
                else
                    measure "$mix.refserver.$gen" "$gen" "$ref_pid" "$ref_port" 64 4 "$mix"
                    measure "$mix.chatd.$gen" "$gen" "$main_pid" "$main_port" 64 4 "$mix"
                fi
                pair "$mix.$gen.ratio" "$mix.chatd.$gen.cpu_rps" "$mix.refserver.$gen.cpu_rps"
            done
        done
        for gen in loadgen chatd-bench; do
            log "round $round/$rounds: unloaded round trip, 1 client × 1, $gen"
            if ((round % 2)); then
                measure "rtt.chatd.$gen" "$gen" "$main_pid" "$main_port" 1 1 connect
                measure "rtt.refserver.$gen" "$gen" "$ref_pid" "$ref_port" 1 1 connect
            else
                measure "rtt.refserver.$gen" "$gen" "$ref_pid" "$ref_port" 1 1 connect
                measure "rtt.chatd.$gen" "$gen" "$main_pid" "$main_port" 1 1 connect
            fi
            pair "rtt.$gen.ratio" "rtt.chatd.$gen.p99" "rtt.refserver.$gen.p99"
        done
    done

    for gen in loadgen chatd-bench; do
        row "CONNECT hits, replies per server CPU s (64 clients × 4)" "$gen" \
            "$(median "connect.chatd.$gen.cpu_rps")" "$(median "connect.refserver.$gen.cpu_rps")" "$(median "connect.$gen.ratio")" "" ge 0.8 "≥ 0.8 × refserver"
    done
    for gen in loadgen chatd-bench; do
        row "mixed 90/10, replies per server CPU s (64 × 4)" "$gen" \
            "$(median "mixed.chatd.$gen.cpu_rps")" "$(median "mixed.refserver.$gen.cpu_rps")" "$(median "mixed.$gen.ratio")" "" ge 0.7 "≥ 0.7 × refserver"
    done
    for gen in loadgen chatd-bench; do
        row "unloaded round trip p99 (1 client × 1)" "$gen" \
            "$(median "rtt.chatd.$gen.p99")" "$(median "rtt.refserver.$gen.p99")" "$(median "rtt.$gen.ratio")" " µs" le 1.2 "≤ 1.2 × refserver"
    done
    detail "Medians over $rounds rounds of $duration s (rows 1 to 3; latencies in µs):"
    detail ""
    detail "| run | generator | replies/s | replies/server CPU s | p50 | p99 | max | lost | errors |"
    detail "|---|---|---|---|---|---|---|---|---|"
    local mix_key server
    for mix_key in connect mixed rtt; do
        for server in chatd refserver; do
            detail_runs "$mix_key $server" "$mix_key.$server.loadgen" "$mix_key.$server.chatd-bench"
        done
    done
    detail ""
    detail "Per-round ratios, chatd ÷ refserver (the table shows their median):"
    detail ""
    for mix_key in connect mixed rtt; do
        detail "- $mix_key: loadgen $(ratios "$mix_key.loadgen.ratio"); chatd-bench $(ratios "$mix_key.chatd-bench.ratio")"
    done
    detail ""

    chatd_main_pid=$main_pid
    stop_server "$ref_pid"
}

# --- Rows 4 to 8: a million users ---------------------------------------------------------

run_scale() {
    local small_pid small_port big_pid big_port round gen snapshots
    if [[ -z ${chatd_main_pid:-} ]]; then
        start_chatd chatd-main
        chatd_main_pid=$pid
        empty_startup_ms=$startup_ms
        empty_rss_kib=$(rss_kib "$pid")
    fi
    log "making snapshots of $small_users and $big_users users"
    "$bench" snapshot "$small_users" "$work/registry-$small_users.json" >/dev/null
    "$bench" snapshot "$big_users" "$work/registry-$big_users.json" | sed 's/^/bench: /' >&2

    start_chatd chatd-1k "$work/registry-$small_users.json"
    small_pid=$pid small_port=$port
    start_chatd chatd-1M "$work/registry-$big_users.json"
    big_pid=$pid big_port=$port
    big_startup_ms=$startup_ms
    big_rss_kib=$(rss_kib "$big_pid")

    for round in $(seq "$rounds"); do
        for gen in loadgen chatd-bench; do
            log "round $round/$rounds: CONNECT with $small_users and with $big_users users, $gen"
            if ((round % 2)); then
                measure "scale.1M.$gen" "$gen" "$big_pid" "$big_port" 64 4 connect
                measure "scale.1k.$gen" "$gen" "$small_pid" "$small_port" 64 4 connect
            else
                measure "scale.1k.$gen" "$gen" "$small_pid" "$small_port" 64 4 connect
                measure "scale.1M.$gen" "$gen" "$big_pid" "$big_port" 64 4 connect
            fi
            pair "scale.$gen.ratio" "scale.1M.$gen.cpu_rps" "scale.1k.$gen.cpu_rps"
        done
    done
    stop_server "$small_pid"

    # The longest pause: a 1-client probe (1 in flight, 10 % renames keep the
    # registry changed) first with snapshots off, then with one every second.
    log "probe of chatd-1M without snapshots, 3 s"
    "${generator_cpu[@]}" "$bench" run --port "$big_port" --clients 1 --window 1 --mix mixed --duration 3 --timeout-ms 5000 \
        --json --quiet >"$work/probe-quiet.json"
    chatd_config chatd-1M "$big_port" 1
    kill -HUP "$big_pid"
    sleep 0.5
    log "probe of chatd-1M writing a snapshot every second, 6 s"
    local snapshot_file=$work/chatd-1M/registry.json
    (
        last="" count=0
        while :; do
            inode=$(stat -c %i "$snapshot_file" 2>/dev/null || echo none)
            if [[ $inode != "$last" ]]; then
                count=$((count + 1)) last=$inode
                echo $((count - 1)) >"$work/snapshots-seen"
            fi
            sleep 0.05
        done
    ) &
    local poller=$!
    "${generator_cpu[@]}" "$bench" run --port "$big_port" --clients 1 --window 1 --mix mixed --duration 6 --timeout-ms 5000 \
        --json --quiet >"$work/probe-snapshots.json"
    kill "$poller" 2>/dev/null || true
    wait "$poller" 2>/dev/null || true
    snapshots=$(cat "$work/snapshots-seen" 2>/dev/null || echo 0)
    # Snapshots off again, and time for one in progress to finish, before timing the final one.
    chatd_config chatd-1M "$big_port" 3600
    kill -HUP "$big_pid"
    sleep 2

    log "stopping chatd-1M (final snapshot of $big_users + 64 users)"
    stop_server "$big_pid"
    local big_stop_ms=$stop_ms big_stop_status=$stop_status
    local lines
    lines=$(wc -l <"$snapshot_file")
    log "stopping chatd-main"
    stop_server "$chatd_main_pid"
    local empty_stop_ms=$stop_ms

    for gen in loadgen chatd-bench; do
        row "CONNECT replies per server CPU s, $big_users users vs $small_users" "$gen" \
            "$(median "scale.1M.$gen.cpu_rps")" "$(median "scale.1k.$gen.cpu_rps")" "$(median "scale.$gen.ratio")" "" ge 0.9 "≥ 0.9 × with $small_users users"
    done
    local per_user
    per_user=$(awk -v a="$big_rss_kib" -v b="$empty_rss_kib" -v n="$big_users" 'BEGIN { printf "%.1f", (a - b) * 1024 / n }')
    row "resident memory per registered user at $big_users users" chatd "$per_user" - - " B" le 120 "≤ 120 B"
    local write_s=nan
    if [[ $big_stop_status == 0 && $lines -ge $((big_users + 2)) ]]; then
        write_s=$(awk -v a="$big_stop_ms" 'BEGIN { printf "%.3f", a / 1000 }')
    fi
    row "snapshot of $big_users users: write (SIGTERM to exit)" chatd "$write_s" - - " s" le 1.0 "≤ 1.0 s"
    local load_s
    load_s=$(awk -v a="$big_startup_ms" -v b="$empty_startup_ms" 'BEGIN { printf "%.3f", (a - b) / 1000 }')
    row "snapshot of $big_users users: load at start" chatd "$load_s" - - " s" le 1.5 "≤ 1.5 s"
    local pause_ms=nan
    if ((snapshots > 0)); then
        pause_ms=$(awk -v a="$(jfield "$work/probe-snapshots.json" max_us)" 'BEGIN { printf "%.2f", a / 1000 }')
    fi
    row "longest pause while $big_users-user snapshots are written" chatd-bench "$pause_ms" - - " ms" le 20 "≤ 20 ms"

    detail "Medians over $rounds rounds of $duration s (row 4; latencies in µs):"
    detail ""
    detail "| run | generator | replies/s | replies/server CPU s | p50 | p99 | max | lost | errors |"
    detail "|---|---|---|---|---|---|---|---|---|"
    for gen in 1M 1k; do
        detail_runs "CONNECT, $gen users" "scale.$gen.loadgen" "scale.$gen.chatd-bench"
    done
    detail ""
    detail "- Per-round ratios, $big_users ÷ $small_users users: loadgen $(ratios scale.loadgen.ratio); chatd-bench $(ratios scale.chatd-bench.ratio)."
    detail "- Memory: VmRSS $empty_rss_kib KiB empty, $big_rss_kib KiB with $big_users users, both read just after the first answer."
    detail "- Start to first answer: $empty_startup_ms ms empty, $big_startup_ms ms with $big_users users."
    detail "- SIGTERM to exit: $empty_stop_ms ms with 64 users, $big_stop_ms ms with $big_users + 64 (exit status $big_stop_status, snapshot of $lines lines)."
    detail "- Probe (1 client × 1, mixed): max $(jfield "$work/probe-quiet.json" max_us) µs, p99.9 $(jfield "$work/probe-quiet.json" p999_us) µs without snapshots; max $(jfield "$work/probe-snapshots.json" max_us) µs, p99.9 $(jfield "$work/probe-snapshots.json" p999_us) µs, lost $(jfield "$work/probe-snapshots.json" lost), with $snapshots snapshots written in 6 s."
    detail ""
}

# --- Main --------------------------------------------------------------------------------

suite_start=$(now_ns)
case $suite in
all)
    run_comparisons
    run_scale
    ;;
quick)
    run_comparisons
    stop_server "$chatd_main_pid"
    ;;
scale) run_scale ;;
esac
elapsed=$((($(now_ns) - suite_start) / 1000000000))

{
    echo "chatd performance suite ($suite): $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), chatd $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?'), $rounds rounds × $duration s$([[ ${PIN:-0} == 1 ]] && echo ', pinned'), ${elapsed} s in all"
    echo
    echo "| figure | generator | chatd | compared with | ratio | target | result |"
    echo "|---|---|---|---|---|---|---|"
    cat "$table"
    echo
    cat "$details"
} | tee "$out/results.md"
