#!/usr/bin/env bash
# chatd's performance suite: chatd against the C yardsticks, in two tables.
#
#   bash bench/run.sh [all|quick|scale|chat]     (make bench runs `all` after a release build)
#
#   all     every row of both tables (about 20 minutes)
#   quick   the first three rows: CONNECT and mixed throughput, unloaded round trip
#   scale   the 1,000,000-user rows: throughput, memory, snapshot write, load and pause
#   chat    the chat table only (C1 to C8: the room against ngircd, InspIRCd and chatfloor)
#
# Environment: ROUNDS (default 4) alternations of each comparison, DURATION
# (default 2) seconds per measurement, PIN=1 to pin servers to CPU 0 and
# generators to CPU 1 (taskset), BENCH_SHARED (default ../shared/bench beside
# the checkout) the folder with refserver.c, loadgen.c, chatfloor.c and irc/.
# The chat table has its own: CHAT_ROUNDS (default 3), CHAT_DURATION (default
# 10) seconds of sending per run, CHAT_RATES (default "1000 2000 4000", the
# open-loop rates of C1 to C3; the first is C1's and C4's, the second C2's),
# CHAT_BIG (default 10000) members of the big room (C6, C7), CHAT_HISTORY
# (default 20000) the chat table's chatd's [chat] history: a member further
# behind than that is dropped, so it is how far a member may lag, as the IRC
# configs' 32 MiB send queues are for them. QUIET_WAIT (default 0): before
# each chat measurement, wait up to that many seconds for a second in which
# the machine is less than 15 % busy (for a machine shared with other work;
# every run's other_cpu_s says how busy it was anyway); with it, a chat run
# during which other work took more than 1.5 CPU seconds is run again, twice
# at most, and the last run counts.
#
# The chat table needs ngircd and inspircd (Debian packages of those names):
# when missing they are installed with apt-get, never started as services
# (one that a package's install script started is stopped again); the suite
# runs its own in the foreground on free ports of 127.0.0.1 with copies of
# ../shared/bench/irc/*.conf, and builds ircload.c and chatfloor.c.
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
all | quick | scale | chat) ;;
-h | --help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "bench/run.sh: unknown suite '$suite' (all, quick, scale or chat)" >&2
    exit 64
    ;;
esac
rounds=${ROUNDS:-4}
duration=${DURATION:-2}
[[ $rounds =~ ^[1-9][0-9]?$ ]] || { echo "bench/run.sh: ROUNDS must be 1 to 99" >&2; exit 64; }
[[ $duration =~ ^[1-9][0-9]?$ ]] || { echo "bench/run.sh: DURATION must be whole seconds, 1 to 99" >&2; exit 64; }
chat_rounds=${CHAT_ROUNDS:-3}
chat_duration=${CHAT_DURATION:-10}
read -r -a chat_rates <<<"${CHAT_RATES:-1000 2000 4000}"
chat_big=${CHAT_BIG:-10000}
chat_history=${CHAT_HISTORY:-20000}
[[ $chat_rounds =~ ^[1-9][0-9]?$ ]] || { echo "bench/run.sh: CHAT_ROUNDS must be 1 to 99" >&2; exit 64; }
[[ $chat_duration =~ ^[1-9][0-9]?$ ]] || { echo "bench/run.sh: CHAT_DURATION must be whole seconds, 1 to 99" >&2; exit 64; }
((${#chat_rates[@]} >= 2)) || { echo "bench/run.sh: CHAT_RATES needs at least two rates (C1's and C2's)" >&2; exit 64; }
for rate in "${chat_rates[@]}"; do
    [[ $rate =~ ^[1-9][0-9]{0,5}$ ]] || { echo "bench/run.sh: CHAT_RATES must be whole messages per second, got '$rate'" >&2; exit 64; }
done
[[ $chat_big =~ ^[1-9][0-9]{1,4}$ ]] || { echo "bench/run.sh: CHAT_BIG must be 10 to 60000 members" >&2; exit 64; }
[[ $chat_history =~ ^[1-9][0-9]{0,6}$ ]] || { echo "bench/run.sh: CHAT_HISTORY must be 1 to 9999999 messages" >&2; exit 64; }
quiet_wait=${QUIET_WAIT:-0}
[[ $quiet_wait =~ ^[0-9]{1,5}$ ]] || { echo "bench/run.sh: QUIET_WAIT must be whole seconds" >&2; exit 64; }
# Only the chat table's chatd gets a history other than the default (chatd_config).
chatd_history=

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${BENCH_SHARED:-$repo/../shared/bench}
out=$repo/.build/bench
chatd=$repo/.build/release/chatd
bench=$repo/.build/release/chatd-bench
chatctl=$repo/.build/release/chatctl
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

# The chat table's yardsticks: the two IRC servers Debian ships, their load
# generator, and the do-nothing C room.
if [[ $suite == all || $suite == chat ]]; then
    [[ -f $shared/chatfloor.c && -f $shared/irc/ircload.c && -f $shared/irc/ngircd.conf && -f $shared/irc/inspircd.conf ]] ||
        die "cannot find chatfloor.c and irc/ (ircload.c, ngircd.conf, inspircd.conf) in $shared"
    if ! command -v ngircd >/dev/null || ! command -v inspircd >/dev/null; then
        command -v apt-get >/dev/null || die "ngircd and inspircd are missing and there is no apt-get to install them"
        log "installing ngircd and inspircd with apt-get"
        # policy-rc.d usually keeps a package's install script from starting its
        # service; where it did not, the service is stopped and disabled below.
        { apt-get install -y --no-install-recommends ngircd inspircd ||
            { apt-get update && apt-get install -y --no-install-recommends ngircd inspircd; }; } >"$out/apt.log" 2>&1 ||
            die "apt-get install ngircd inspircd failed (see $out/apt.log)"
        for service in ngircd inspircd; do
            if [[ $(ps -p 1 -o comm= 2>/dev/null) == systemd ]]; then
                systemctl disable --now "$service" >/dev/null 2>&1 || true
            elif pgrep -x "$service" >/dev/null; then
                invoke-rc.d "$service" stop >/dev/null 2>&1 || service "$service" stop >/dev/null 2>&1 || true
            fi
        done
    fi
    cc -O2 -Wall -o "$out/chatfloor" "$shared/chatfloor.c"
    cc -O2 -Wall -o "$out/ircload" "$shared/irc/ircload.c"
    chatfloor=$out/chatfloor
    ircload=$out/ircload
    # One socket per member: the big room needs more descriptors than the usual 1024.
    if (($(ulimit -n) < chat_big + 64)); then
        ulimit -n $((chat_big + 64)) 2>/dev/null || die "the big room needs $((chat_big + 64)) file descriptors, ulimit -n allows $(ulimit -n)"
    fi
fi
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

# A TCP port nothing listens on (for the IRC servers).
free_tcp_port() {
    local port hex
    while :; do
        port=$((20000 + RANDOM % 40000))
        printf -v hex ':%04X ' "$port"
        grep -q "$hex" /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6 2>/dev/null || { echo "$port"; return; }
    done
}

# --- Servers -----------------------------------------------------------------
# start_* set: pid, port, startup_ms (launch to first answered request).

# Writes NAME's chatd config with snapshot_interval_s INTERVAL. The rate
# limits are off (a generator sends far more than 20 datagrams a second from
# each address, and a chat sender far more than 5 messages); durability stays
# at its default, "sync", so the mixed rows include the journal's fdatasyncs
# and every chat message is on disk before it is pushed.
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
[chat]
messages_per_s = 0
${chatd_history:+history = $chatd_history}
[control]
socket = "$work/$name/control"
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

start_chatfloor() {
    mkdir -p "$work/chatfloor"
    port=$(free_port)
    launched=$(now_ns)
    "${server_cpu[@]}" "$chatfloor" "$port" 2>"$work/chatfloor/chatfloor.log" &
    pid=$!
    started+=("$pid")
    wait_ready chatfloor "$pid" "$port"
    log "chatfloor: pid $pid on 127.0.0.1:$port"
}

# start_irc ngircd|inspircd: the server in the foreground with a copy of its
# config from ../shared/bench/irc on a free port; waits until it accepts
# connections.
start_irc() {
    local name=$1
    mkdir -p "$work/$name"
    port=$(free_tcp_port)
    case $name in
    ngircd)
        sed -E "s/^([[:space:]]*Ports[[:space:]]*=[[:space:]]*)[0-9]+/\1$port/" "$shared/irc/ngircd.conf" >"$work/$name/ngircd.conf"
        grep -q "Ports = $port" "$work/$name/ngircd.conf" || die "could not set the port in a copy of ngircd.conf"
        "${server_cpu[@]}" ngircd -n -f "$work/$name/ngircd.conf" >"$work/$name/$name.log" 2>&1 &
        ;;
    inspircd)
        sed -E "s/(<bind address=\"127.0.0.1\" port=\")[0-9]+/\1$port/" "$shared/irc/inspircd.conf" >"$work/$name/inspircd.conf"
        grep -q "port=\"$port\"" "$work/$name/inspircd.conf" || die "could not set the port in a copy of inspircd.conf"
        "${server_cpu[@]}" inspircd --nofork --nopid --runasroot --config="$work/$name/inspircd.conf" >"$work/$name/$name.log" 2>&1 &
        ;;
    esac
    pid=$!
    started+=("$pid")
    local tries
    for tries in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || { cat "$work/$name/$name.log" >&2; die "$name exited at start"; }
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            log "$name: pid $pid on 127.0.0.1:$port"
            return
        fi
        sleep 0.05
    done
    cat "$work/$name/$name.log" >&2
    die "$name did not accept connections on 127.0.0.1:$port within 10 s"
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

# JSON field of chatd-bench's or ircload's output (with or without a space after
# the colon), or loadgen's key=value.
jfield() { grep -o "\"$2\": *[^,}]*" "$1" | head -1 | sed 's/^.*: *//'; }
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
    grep -E '^-?[0-9.]+$' "$results/$1" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --- The table -------------------------------------------------------------------

table=$work/table.md
details=$work/details.md
chat_table=$work/chat-table.md
chat_details=$work/chat-details.md
: >"$table"
: >"$details"
: >"$chat_table"
: >"$chat_details"

# row FIGURE GENERATOR CHATD REFERENCE RATIO UNIT OP FACTOR TARGET_TEXT: RATIO
# (the median of the per-round ratios of CHATD to REFERENCE) is checked
# against OP (ge, le) FACTOR; with REFERENCE and RATIO "-", CHATD itself is;
# OP "report" checks nothing. The row goes to $row_file (default: the first table).
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
            if (op == "report") verdict = "report"
            printf "| %s | %s | %s | %s | %s | %s | %s |\n", f, g, show(a), (b == "-" ? "" : show(b)), shown, t, verdict
        }' >>"${row_file:-$table}"
}

detail() { printf '%s\n' "$*" >>"$details"; }
chat_detail() { printf '%s\n' "$*" >>"$chat_details"; }

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

    # probe NAME SECONDS: the 1-client probe (1 in flight, 10 % renames keep
    # the registry changed) of chatd-1M, into $work/NAME.json.
    probe() {
        "${generator_cpu[@]}" "$bench" run --port "$big_port" --clients 1 --window 1 --mix mixed --duration "$2" \
            --timeout-ms 5000 --json --quiet >"$work/$1.json"
    }

    # The longest pause: the probe first with snapshots off, then with one
    # snapshot written every second.
    log "probe of chatd-1M without snapshots, 3 s"
    probe probe-quiet 3
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
    probe probe-snapshots 6
    kill "$poller" 2>/dev/null || true
    wait "$poller" 2>/dev/null || true
    snapshots=$(cat "$work/snapshots-seen" 2>/dev/null || echo 0)
    # Snapshots off again, and time for one in progress to finish, before timing the final one.
    chatd_config chatd-1M "$big_port" 3600
    kill -HUP "$big_pid"
    sleep 2

    # chatctl users streams the registry between datagram batches: one
    # listing timed alone, then the probe while listings run back to back.
    # The snapshots above left some 300 MB for the disk to write back, and
    # the probe's renames wait for the journal's fsync behind it (row 8's
    # pauses): sync first, so that this row measures the listing. chatctl,
    # busy parsing what it reads, runs on the generators' CPU, as a client
    # does: on chatd's, it would be the scheduler that delays chatd.
    sync
    local control=$work/chatd-1M/control listing_t0 listed
    listing_t0=$(now_ns)
    listed=$("${generator_cpu[@]}" "$chatctl" users --socket "$control" | wc -l)
    local listing_ms=$((($(now_ns) - listing_t0) / 1000000))
    log "chatctl users: $listed lines in $listing_ms ms; probe of chatd-1M while listings run, 6 s"
    (
        count=0
        while "${generator_cpu[@]}" "$chatctl" users --socket "$control" >/dev/null; do
            count=$((count + 1))
            echo "$count" >"$work/listings-done"
        done
    ) &
    local lister=$!
    probe probe-listing 6
    kill "$lister" 2>/dev/null || true
    wait "$lister" 2>/dev/null || true
    local listings
    listings=$(cat "$work/listings-done" 2>/dev/null || echo 0)

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
    local listing_pause_ms=nan
    # The probes' INTRODUCEs added a few users to the million.
    if ((listed >= big_users)); then
        listing_pause_ms=$(awk -v a="$(jfield "$work/probe-listing.json" max_us)" 'BEGIN { printf "%.2f", a / 1000 }')
    fi
    row "longest pause while chatctl lists $big_users users" chatd-bench "$listing_pause_ms" - - " ms" le 20 "≤ 20 ms"

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
    detail "- chatctl users: $listed lines in $listing_ms ms alone; the probe while listings ran back to back ($listings finished in 6 s): max $(jfield "$work/probe-listing.json" max_us) µs, p99.9 $(jfield "$work/probe-listing.json" p999_us) µs, lost $(jfield "$work/probe-listing.json" lost)."
    detail ""
}

# --- The chat table: the room against ngircd, InspIRCd and chatfloor ------------------

# The figures every chat run records, under the names chatd-bench chat uses;
# ircload's are mapped onto them (its disconnects are members lost).
chat_fields=(deliveries_per_s deliveries_per_server_cpu_s p50_us p99_us max_us deliveries expected_deliveries
    members_dropped members_incomplete errors bench_cpu_s other_cpu_s server_cpu_s batch_members pushes acks_sent
    server_bytes_per_member server_rss_registered_kib server_rss_joined_kib)

# Waits, at most QUIET_WAIT seconds, for a second in which the whole machine
# (all cores, from /proc/stat) is less than 15 % busy.
wait_quiet() {
    ((quiet_wait > 0)) || return 0
    local deadline=$((SECONDS + quiet_wait)) before after cores
    cores=$(nproc)
    while ((SECONDS < deadline)); do
        before=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat)
        sleep 1
        after=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat)
        ((after - before < 15 * cores)) && return 0
    done
    log "  the machine stayed busy for $quiet_wait s: measuring anyway"
}

# Whether a run's other_cpu_s (FILE's) says the machine was busy with other
# work meanwhile, so that QUIET_WAIT's retry should run it again.
busy_run() {
    ((quiet_wait > 0)) || return 1
    awk -v o="$(jfield "$1" other_cpu_s)" 'BEGIN { exit !(o > 1.5) }'
}

# measure_chat KEY PID PORT RATE ACK MEMBERS BASE [WINDOW]: one chatd-bench chat run
# (4 senders, 60-byte texts, CHAT_DURATION s), figures recorded under KEY.
measure_chat() {
    local key=$1 server_pid=$2 server_port=$3 rate=$4 ack=$5 members=$6 base=$7 window=${8:-16}
    local file=$work/chat-$key-$RANDOM.json field attempt
    for attempt in 1 2 3; do
        wait_quiet
        if ! "${generator_cpu[@]}" "$bench" chat --port "$server_port" --members "$members" --senders 4 --rate "$rate" \
            --window "$window" --text-bytes 60 --ack "$ack" --duration "$chat_duration" --source-base "$base" \
            --setup-window 512 --server-pid "$server_pid" --json --quiet >"$file" 2>"$file.err"; then
            log "  $key: chatd-bench chat failed: $(tail -1 "$file.err")"
            return 0
        fi
        # Memory growth shows only on a server's first run (C7): kept from the first attempt.
        ((attempt > 1)) || record "$key.first_bytes_per_member" "$(jfield "$file" server_bytes_per_member)"
        ((attempt < 3)) && busy_run "$file" || break
        log "  $key: other work took $(jfield "$file" other_cpu_s) CPU s meanwhile: once more"
    done
    for field in "${chat_fields[@]}"; do record "$key.$field" "$(jfield "$file" "$field")"; done
    log "  $key: $(jfield "$file" deliveries_per_s) deliveries/s, $(jfield "$file" deliveries_per_server_cpu_s) per server CPU s, p99 $(jfield "$file" p99_us) µs, $(jfield "$file" deliveries)/$(jfield "$file" expected_deliveries) delivered, dropped $(jfield "$file" members_dropped), batch members $(jfield "$file" batch_members), bench CPU $(jfield "$file" bench_cpu_s) s, other CPU $(jfield "$file" other_cpu_s) s"
}

# measure_irc KEY ngircd|inspircd PID PORT RATE [WINDOW]: one ircload run, 100
# members, 4 senders, 60-byte texts (ngircd's senders OPER and set +F, so
# that it does not throttle them).
measure_irc() {
    local key=$1 name=$2 server_pid=$3 server_port=$4 rate=$5 window=${6:-16}
    local file=$work/irc-$key-$RANDOM.json oper=() attempt
    [[ $name == ngircd ]] && oper=(-o bench:benchpw)
    for attempt in 1 2 3; do
        wait_quiet
        if ! "${generator_cpu[@]}" "$ircload" -p "$server_port" -P "$server_pid" -m 100 -s 4 -d "$chat_duration" -r "$rate" \
            -w "$window" -l 60 "${oper[@]}" >"$file" 2>"$file.err"; then
            log "  $key: ircload failed: $(tail -1 "$file.err")"
            return 0
        fi
        # RSS after JOIN minus before connecting: only the first run against a
        # server shows it (later runs reuse the memory the first one freed).
        ((attempt > 1)) || record "$key.first_bytes_per_member" \
            "$(awk -v k="$(jfield "$file" server_rss_per_client_kb)" 'BEGIN { printf "%.0f", k * 1024 }')"
        ((attempt < 3)) && busy_run "$file" || break
        log "  $key: other work took $(jfield "$file" other_cpu_s) CPU s meanwhile: once more"
    done
    local name_in_ircload
    for field in "${chat_fields[@]}"; do
        case $field in
        p50_us | p99_us | max_us) name_in_ircload=lat_$field ;;
        members_dropped) name_in_ircload=disconnects ;;
        bench_cpu_s) name_in_ircload=client_cpu_s ;;
        server_bytes_per_member) continue ;;
        *) name_in_ircload=$field ;;
        esac
        record "$key.$field" "$(jfield "$file" "$name_in_ircload")"
    done
    log "  $key: $(jfield "$file" deliveries_per_s) deliveries/s, $(jfield "$file" deliveries_per_server_cpu_s) per server CPU s, p99 $(jfield "$file" lat_p99_us) µs, $(jfield "$file" deliveries)/$(jfield "$file" expected_deliveries) delivered, disconnects $(jfield "$file" disconnects), ircload CPU $(jfield "$file" client_cpu_s) s, other CPU $(jfield "$file" other_cpu_s) s"
}

# pair_best RESULT A B C OP: the ratio of A's latest value to the better of B's
# and C's (OP max: the larger, for throughput; min: the smaller, for latency).
pair_best() {
    local a b c
    a=$(tail -1 "$results/$2" 2>/dev/null || true)
    b=$(tail -1 "$results/$3" 2>/dev/null || true)
    c=$(tail -1 "$results/$4" 2>/dev/null || true)
    [[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ && $c =~ ^[0-9.]+$ ]] || return 0
    record "$1" "$(awk -v a="$a" -v b="$b" -v c="$c" -v op="$5" 'BEGIN {
        best = (op == "max") ? (b > c ? b : c) : (b < c ? b : c)
        if (best > 0) printf "%.4f", a / best }')"
}

# Which IRC server did better over the rounds, by the median of FIELD at KEY.
better_irc() {
    local key=$1 field=$2 op=$3 n i
    n=$(median "$key.ngircd.$field")
    i=$(median "$key.inspircd.$field")
    awk -v n="$n" -v i="$i" -v op="$op" 'BEGIN {
        if (n == "nan") { print "inspircd"; exit } if (i == "nan") { print "ngircd"; exit }
        print ((op == "max" ? n + 0 >= i + 0 : n + 0 <= i + 0) ? "ngircd" : "inspircd") }'
}

# One round of one load against every server, in an order that rotates each
# round so that drift over the run favours none. SERVERS are names from
# server_pids/server_ports; chatd-pp is chatd with --ack per-push (the
# chat issue's format), run only when chatd speaks BATCH (otherwise chatd's
# own run already is that format).
chat_round() {
    local round=$1 label=$2 rate=$3 window=$4
    shift 4
    local servers=("$@") count=$# offset index name
    offset=$(((round - 1) % count))
    for ((index = 0; index < count; index++)); do
        name=${servers[$(((index + offset) % count))]}
        log "chat round $round/$chat_rounds: $label, $name"
        case $name in
        chatd) measure_chat "$label.chatd" "${server_pids[chatd]}" "${server_ports[chatd]}" "$rate" cumulative 100 127.3.0.1 "$window" ;;
        chatd-pp) measure_chat "$label.chatd-pp" "${server_pids[chatd]}" "${server_ports[chatd]}" "$rate" per-push 100 127.3.0.1 "$window" ;;
        chatfloor) measure_chat "$label.chatfloor" "${server_pids[chatfloor]}" "${server_ports[chatfloor]}" "$rate" per-push 100 127.3.0.1 "$window" ;;
        ngircd | inspircd) measure_irc "$label.$name" "$name" "${server_pids[$name]}" "${server_ports[$name]}" "$rate" "$window" ;;
        esac
    done
}

# Push and ACK datagrams per delivery (chatd-bench's runs only), from the medians.
per_delivery() {
    [[ -s $results/$1.pushes ]] && grep -qE '^[0-9]' "$results/$1.pushes" || return 0
    awk -v p="$(median "$1.pushes")" -v a="$(median "$1.acks_sent")" -v d="$(median "$1.deliveries")" \
        'BEGIN { if (d > 0) printf "%.3f, %.3f", p / d, a / d }'
}

# Medians of one load for the details section.
chat_detail_runs() {
    local label=$1 title=$2 name
    for name in chatd chatd-pp chatfloor ngircd inspircd; do
        [[ -s $results/$label.$name.deliveries_per_s ]] || continue
        chat_detail "| $title | $name | $(median "$label.$name.deliveries_per_s") | $(median "$label.$name.deliveries_per_server_cpu_s") | $(median "$label.$name.p50_us") | $(median "$label.$name.p99_us") | $(median "$label.$name.max_us") | $(median "$label.$name.deliveries")/$(median "$label.$name.expected_deliveries") | $(median "$label.$name.members_dropped") | $(median "$label.$name.server_cpu_s") | $(median "$label.$name.bench_cpu_s") | $(median "$label.$name.other_cpu_s") | $(per_delivery "$label.$name") |"
    done
}

run_chat() {
    declare -gA server_pids=() server_ports=()
    local name round rate first=${chat_rates[0]} second=${chat_rates[1]} batch
    chatd_history=$chat_history
    start_chatd chatd-chat
    server_pids[chatd]=$pid server_ports[chatd]=$port
    start_chatfloor
    server_pids[chatfloor]=$pid server_ports[chatfloor]=$port
    for name in ngircd inspircd; do
        start_irc "$name"
        server_pids[$name]=$pid server_ports[$name]=$port
    done

    # Does this chatd speak BATCH? A short run tells (it also warms the room up).
    local probe=$work/chat-probe.json
    "$bench" chat --port "${server_ports[chatd]}" --members 10 --senders 2 --rate 100 --duration 1 --settle 0 \
        --source-base 127.3.0.1 --json --quiet >"$probe" 2>"$probe.err" || die "chatd-bench chat cannot run against chatd: $(tail -1 "$probe.err")"
    batch=$(jfield "$probe" batch_members)
    local open_servers=(chatd ngircd inspircd chatfloor)
    if [[ $batch != 0 ]]; then
        open_servers+=(chatd-pp)
        log "chatd speaks BATCH: C8 runs chatd with --ack per-push as well"
    else
        log "chatd does not offer BATCH (JOIN answers without it): every chatd run is in the basic format, and C8 compares those"
    fi

    for round in $(seq "$chat_rounds"); do
        for rate in "${chat_rates[@]}"; do
            chat_round "$round" "open.$rate" "$rate" 16 "${open_servers[@]}"
            pair_best "open.$rate.ratio_irc" "open.$rate.chatd.deliveries_per_server_cpu_s" \
                "open.$rate.ngircd.deliveries_per_server_cpu_s" "open.$rate.inspircd.deliveries_per_server_cpu_s" max
            pair_best "open.$rate.ratio_p99" "open.$rate.chatd.p99_us" "open.$rate.ngircd.p99_us" "open.$rate.inspircd.p99_us" min
            pair "open.$rate.ratio_floor" "open.$rate.chatd.deliveries_per_server_cpu_s" "open.$rate.chatfloor.deliveries_per_server_cpu_s"
            if [[ $batch != 0 ]]; then
                pair "open.$rate.ratio_floor_pp" "open.$rate.chatd-pp.deliveries_per_server_cpu_s" "open.$rate.chatfloor.deliveries_per_server_cpu_s"
            else
                pair "open.$rate.ratio_floor_pp" "open.$rate.chatd.deliveries_per_server_cpu_s" "open.$rate.chatfloor.deliveries_per_server_cpu_s"
            fi
        done
        chat_round "$round" closed 0 16 chatd ngircd inspircd chatfloor
    done
    for name in chatfloor ngircd inspircd; do stop_server "${server_pids[$name]}"; done
    stop_server "${server_pids[chatd]}"

    # The big room, on a chatd of its own, so that its memory figures start
    # from an empty room: C6 (throughput, nobody dropped) and C7 (memory per
    # member, from the first round: later rounds find the members registered).
    start_chatd chatd-big
    local big_pid=$pid big_port=$port
    for round in $(seq "$chat_rounds"); do
        log "chat round $round/$chat_rounds: a room of $chat_big members at 10 messages/s, chatd"
        measure_chat "big.chatd" "$big_pid" "$big_port" 10 cumulative "$chat_big" 127.4.0.1
        pair "big.ratio" "big.chatd.deliveries_per_server_cpu_s" "open.$first.chatd.deliveries_per_server_cpu_s"
    done
    stop_server "$big_pid"
    chatd_history=

    row_file=$chat_table
    local irc
    for rate in "${chat_rates[@]}"; do
        local id target op factor
        case $rate in
        "$first") id=C1 target="≥ 1.2 × the better IRC server" op=ge factor=1.2 ;;
        "$second") id=C2 target="≥ 1.0 × the better IRC server" op=ge factor=1.0 ;;
        *) id=C3 target="report" op=report factor=0 ;;
        esac
        irc=$(better_irc "open.$rate" deliveries_per_server_cpu_s max)
        row "$id: deliveries per server CPU s, M = 100, S = 4, R = $rate" "chatd-bench / ircload" \
            "$(median "open.$rate.chatd.deliveries_per_server_cpu_s")" "$(median "open.$rate.$irc.deliveries_per_server_cpu_s")" \
            "$(median "open.$rate.ratio_irc")" "" "$op" "$factor" "$target ($irc)"
    done
    irc=$(better_irc "open.$first" p99_us min)
    row "C4: delivery latency p99, R = $first" "chatd-bench / ircload" "$(median "open.$first.chatd.p99_us")" \
        "$(median "open.$first.$irc.p99_us")" "$(median "open.$first.ratio_p99")" " µs" le 1.0 "≤ the better IRC server's p99 ($irc)"
    for name in chatd ngircd inspircd chatfloor; do
        row "C5: closed loop (16 per sender), deliveries/s | per server CPU s" "$([[ $name == ngircd || $name == inspircd ]] && echo ircload || echo chatd-bench)" \
            "$(median "closed.$name.deliveries_per_s")" "$(median "closed.$name.deliveries_per_server_cpu_s")" - "" report 0 "report ($name)"
    done
    local dropped_rounds incomplete_rounds
    dropped_rounds=$(awk '$1 > 0' "$results/big.chatd.members_dropped" 2>/dev/null | wc -l)
    incomplete_rounds=$(awk '$1 > 0' "$results/big.chatd.members_incomplete" 2>/dev/null | wc -l)
    row "C6: deliveries per server CPU s, M = $chat_big, R = 10" chatd-bench "$(median "big.chatd.deliveries_per_server_cpu_s")" \
        "$(median "open.$first.chatd.deliveries_per_server_cpu_s")" "$(median big.ratio)" "" ge 0.8 "≥ 0.8 × C1's chatd figure"
    local drop_verdict=PASS
    [[ -s $results/big.chatd.members_dropped ]] || drop_verdict="no data"
    ((dropped_rounds + incomplete_rounds == 0)) || drop_verdict=MISS
    printf '| C6: members dropped / incomplete, M = %s | chatd-bench | %s / %s | | | none dropped | %s |\n' "$chat_big" \
        "$(sort -g "$results/big.chatd.members_dropped" 2>/dev/null | tail -1)" "$(sort -g "$results/big.chatd.members_incomplete" 2>/dev/null | tail -1)" \
        "$drop_verdict" >>"$chat_table"
    row "C7: memory per member (RSS joined − registered) ÷ $chat_big" chatd "$(head -1 "$results/big.chatd.first_bytes_per_member" 2>/dev/null)" \
        - - " B" le 1024 "≤ 1 KiB"
    for rate in "$first" "$second"; do
        row "C8: chat issue's format vs chatfloor, R = $rate" chatd-bench \
            "$(median "open.$rate.$([[ $batch != 0 ]] && echo chatd-pp || echo chatd).deliveries_per_server_cpu_s")" \
            "$(median "open.$rate.chatfloor.deliveries_per_server_cpu_s")" "$(median "open.$rate.ratio_floor_pp")" "" ge 0.8 "≥ 0.8 × chatfloor"
    done
    row_file=

    chat_detail "Medians over $chat_rounds rounds of $chat_duration s of sending (M = 100, S = 4, 60-byte texts; latencies in µs; CPU in s; chatd-pp is chatd with --ack per-push):"
    chat_detail ""
    chat_detail "| load | server | deliveries/s | per server CPU s | p50 | p99 | max | delivered/expected | dropped | server CPU | generator CPU | other CPU | pushes, ACKs per delivery |"
    chat_detail "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for rate in "${chat_rates[@]}"; do chat_detail_runs "open.$rate" "$rate msg/s"; done
    chat_detail_runs closed "closed loop"
    chat_detail_runs big "$chat_big members, 10 msg/s"
    chat_detail ""
    chat_detail "Per-round ratios:"
    chat_detail ""
    for rate in "${chat_rates[@]}"; do
        chat_detail "- $rate msg/s: chatd ÷ better IRC (CPU) $(ratios "open.$rate.ratio_irc"); p99 $(ratios "open.$rate.ratio_p99"); chatd ÷ chatfloor $(ratios "open.$rate.ratio_floor"); basic format ÷ chatfloor $(ratios "open.$rate.ratio_floor_pp")"
    done
    chat_detail "- $chat_big members ÷ C1: $(ratios big.ratio)"
    chat_detail "- Datagrams per delivery (chatd, $first msg/s): pushes $(awk -v p="$(median "open.$first.chatd.pushes")" -v d="$(median "open.$first.chatd.deliveries")" 'BEGIN { if (d > 0) printf "%.3f", p / d }'), ACKs $(awk -v p="$(median "open.$first.chatd.acks_sent")" -v d="$(median "open.$first.chatd.deliveries")" 'BEGIN { if (d > 0) printf "%.3f", p / d }'); members in BATCH: $(median "open.$first.chatd.batch_members")"
    chat_detail "- Memory per member: chatd $(head -1 "$results/big.chatd.first_bytes_per_member" 2>/dev/null || echo n/a) B with $chat_big members (the first run; RSS $(head -1 "$results/big.chatd.server_rss_registered_kib" 2>/dev/null) KiB registered, $(head -1 "$results/big.chatd.server_rss_joined_kib" 2>/dev/null) KiB joined in the first round); ngircd $(head -1 "$results/open.$first.ngircd.first_bytes_per_member" 2>/dev/null || echo n/a) B and InspIRCd $(head -1 "$results/open.$first.inspircd.first_bytes_per_member" 2>/dev/null || echo n/a) B per connected client (ircload's first run against each: RSS after JOIN minus before connecting, ÷ 100)"
    chat_detail ""
}

# --- Main --------------------------------------------------------------------------------

suite_start=$(now_ns)
case $suite in
all)
    run_comparisons
    run_scale
    run_chat
    ;;
chat) run_chat ;;
quick)
    run_comparisons
    stop_server "$chatd_main_pid"
    ;;
scale) run_scale ;;
esac
elapsed=$((($(now_ns) - suite_start) / 1000000000))

{
    echo "chatd performance suite ($suite): $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), chatd $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?'), $([[ $suite != chat ]] && echo "$rounds rounds × $duration s, ")$([[ $suite == all || $suite == chat ]] && echo "chat $chat_rounds rounds × $chat_duration s, ")$([[ ${PIN:-0} == 1 ]] && echo 'pinned, ')${elapsed} s in all"
    if [[ -s $table ]]; then
        echo
        echo "| figure | generator | chatd | compared with | ratio | target | result |"
        echo "|---|---|---|---|---|---|---|"
        cat "$table"
        echo
        cat "$details"
    fi
    if [[ -s $chat_table ]]; then
        echo
        echo "The chat table: $chat_rounds rounds × $chat_duration s of sending per server and load, servers alternated"
        echo
        echo "| figure | generator | chatd | compared with | ratio | target | result |"
        echo "|---|---|---|---|---|---|---|"
        cat "$chat_table"
        echo
        cat "$chat_details"
    fi
} | tee "$out/results.md"
