#!/usr/bin/env bash
# The system test: chatd installed with `make install` and run by a real
# systemd, booted in private namespaces so that the machine is left as it was.
#
#   sudo bash Tests/system/run.sh        (or: make system-test)
#
# Host side. It builds (when not run by make, whose target already did),
# makes a cgroup for the booted systemd, starts Tests/system/boot.sh as PID 1
# of new PID, mount, UTS, IPC and network namespaces (boot.sh makes the
# machine's files private or read-only there and execs systemd), then drives
# the steps below from outside with nsenter, and powers the namespace off.
# Then it powers off and boots again for steps 11-15, the Debian package's
# life cycle (`make deb`'s .deb installed with apt-get, chatctl, an upgrade
# to a higher version, remove, purge), on fresh overlays.
# Every step prints PASS/FAIL lines; the last line is "N passed, M failed";
# the exit status is 0 only when nothing failed.
#
# Every command has a time bound, and the teardown (a trap) runs however the
# script ends: poweroff, SIGKILL as a last resort, the cgroup removed, and
# checks that no process, mount or cgroup of the test is left.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

readonly name=chatd-system-test
readonly target=$name.target
readonly port=7447
readonly alice_ip=127.0.0.2       # alice's address: the server knows clients by it
readonly sender_ip=127.0.0.3      # step 6's sender
readonly carol_ip=127.0.0.4       # step 10's two members
readonly dave_ip=127.0.0.5
readonly bob_ip=127.0.0.20        # the package's steps: a registration kept across the upgrade
# Paths inside the namespace. The checkout is at the same path there
# ($repo): boot.sh makes sure of it.
readonly work=/run/chatd-test
readonly client_conf=$work/client.toml
readonly test_conf=$work/chatd.toml.test   # the good config every step returns to
readonly etc_conf=/etc/chatd/chatd.toml
readonly dropin_dir=/run/systemd/system/chatd.service.d
# Where the host keeps the booted system's console output (build output,
# ignored by git; never /tmp).
readonly logdir=$repo/.build/system-test
readonly console_log=$logdir/console.log
# The Debian package (`make deb`, which `make system-test` runs first), and
# the higher version of it that steps 11-15 upgrade to, made here.
readonly version=$(sed -n 's/^ *public static let string = "\([^"]*\)".*/\1/p' "$repo/Sources/ChatCore/Version.swift")
readonly deb_arch=$(dpkg --print-architecture)
readonly deb=$repo/.build/deb/chatd_${version}_${deb_arch}.deb
readonly dbgsym_deb=$repo/.build/deb/chatd-dbgsym_${version}_${deb_arch}.deb
readonly upgrade_version=$version+test1
readonly upgrade_deb=$logdir/chatd_${upgrade_version}_${deb_arch}.deb

# MESSAGE_IDs chatd gives its events (see the README), and systemd's own.
readonly MID_REGISTERED=9087fbe303834dc0b5dcf7d797fed52c
readonly MID_RELOADED=47ffa336124c4f56900bc0f561b1643b
readonly MID_RELOAD_REFUSED=3ca392d551fd4dd08f70fb4bee08bef9
readonly MID_SNAPSHOT=5b88f024490d4c34a3114b93046e5c36
readonly MID_SD_UNIT_STARTED=39f53479d3a045ac8e11786248231fbf

passed=0
failed=0
unshare_pid=
ns_pid=
ns_pid_ns=        # the namespace's pid:[inode], to find processes left in it
cgroup_rel=()     # cgroups made for the booted systemd, relative to a hierarchy's root
finished=
host_mounts_before=
host_cgroups_before=

pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
step() { echo; echo "== $*"; }
note() { echo "      $*"; }
indent() { sed 's/^/      /'; }

# ---------------------------------------------------------------------------
# Talking to the namespace

# inside SECONDS CMD...: runs CMD in the namespace (as a process of its PID
# namespace, so systemctl, journalctl, kill and chat see what chatd sees).
# The inner timeout bounds CMD itself; the outer one nsenter, in case.
inside() {
    local seconds=$1
    shift
    timeout -k 5 $((seconds + 10)) \
        nsenter -t "$ns_pid" -m -u -i -n -p --wd=/ -- \
        env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS SYSTEMD_PAGER= SYSTEMD_COLORS=0 \
        timeout -k 2 "$seconds" "$@"
}

# prop UNIT PROPERTY: one property of a unit, as systemctl show prints it.
prop() { inside 10 systemctl show -P "$2" "$1" 2>/dev/null || true; }

# The journal, as JSON lines; extra journalctl arguments pass through.
journal_json() { inside 15 journalctl --no-pager -o json "$@" 2>/dev/null || true; }

# The cursor of the journal's last entry: later lookups start after it, so a
# step only sees the entries its own actions caused.
journal_cursor() { journal_json -n 1 | python3 "$here/journal.py" cursor; }

# journal_wait SECONDS CURSOR [--field F] [--last] FILTER...: waits (bounded)
# for an entry of chatd.service (chatd's own, or systemd's about the unit)
# after CURSOR matching every FILTER (see journal.py); prints it.
journal_wait() {
    local seconds=$1 cursor=$2
    shift 2
    local deadline=$((SECONDS + seconds)) args=(-u chatd.service)
    [ -n "$cursor" ] && args+=("--after-cursor=$cursor")
    while :; do
        if journal_json "${args[@]}" | python3 "$here/journal.py" find "$@"; then
            return 0
        fi
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.3
    done
}

# Explains a failure: chatd's recent journal (its entries and systemd's).
show_journal() {
    note "journal of chatd.service (last ${1:-25} entries):"
    journal_json -u chatd.service | python3 "$here/journal.py" show "${1:-25}" | indent
}

# chat_as ADDRESS VERB [ARGS]: the installed client, from ADDRESS, with a
# config of its own (the server's config is broken on purpose in step 4, and
# chat reads [client] from it by default). Sets chat_out and chat_rc.
chat_as() {
    local address=$1
    shift
    chat_rc=0
    chat_out=$(inside 30 /usr/bin/chat "$@" --config "$client_conf" \
        --server 127.0.0.1 --port "$port" --bind "$address" 2>&1) || chat_rc=$?
}

# expect_alice WHAT: `chat connect` from alice's address answers alice.
expect_alice() {
    chat_as "$alice_ip" connect
    if [ "$chat_rc" -eq 0 ] && [ "$(tail -n 1 <<<"$chat_out")" = alice ]; then
        pass "$1: chat connect --bind $alice_ip says alice"
    else
        fail "$1: chat connect --bind $alice_ip: exit $chat_rc, output: $chat_out"
        show_journal
    fi
}

# expect_running WHAT: chatd.service is active (running).
expect_running() {
    local state
    state="$(prop chatd.service ActiveState)/$(prop chatd.service SubState)"
    if [ "$state" = active/running ]; then
        pass "$1: chatd.service is active (running)"
    else
        fail "$1: chatd.service is $state, not active/running"
        show_journal
        return 1
    fi
}

# wait_until SECONDS CMD...: polls CMD every 0.3 s until it succeeds.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.3
    done
}

# A systemd time span ("1min 30s", "100ms", "infinity") in whole seconds, rounded up.
seconds_of() {
    local usec
    [ "$1" = infinity ] && { echo 0; return; }
    usec=$(systemd-analyze timespan "$1" 2>/dev/null | awk '$1 == "μs:" { print $2 }')
    echo $(((${usec:-0} + 999999) / 1000000))
}

# set_conf KEY VALUE FILE (inside): sets KEY in its section of the TOML file.
# Only the key's own line changes, so keys chatd learns later stay as shipped.
set_conf() {
    inside 10 sed -i "s|^$1 = .*|$1 = $2|" "$3"
}

# ---------------------------------------------------------------------------
# Boot and teardown

# A cgroup of our own for the booted systemd: it runs its units below the
# cgroup it starts in, so everything it creates is under this one directory
# of each hierarchy, which the teardown removes. (At the root it would leave
# system.slice and friends in the machine's cgroup tree.)
make_cgroup() {
    local id controller path mount
    while IFS=: read -r id controller path; do
        case "$controller" in
            name=systemd) mount=$(findmnt -rn -t cgroup -o TARGET,OPTIONS | awk '$2 ~ /(^|,)name=systemd(,|$)/ { print $1; exit }') ;;
            "") mount=$(findmnt -rn -t cgroup2 -o TARGET | head -n 1) ;;
            *) continue ;;
        esac
        [ -n "$mount" ] || continue
        cgroup_rel+=("${path%/}/$name.$$")
        mkdir "$mount${path%/}/$name.$$"
    done </proc/self/cgroup
}

# Removes our cgroup (its subtree, deepest first) from every hierarchy:
# systemd creates the same path in the controllers' hierarchies it uses.
remove_cgroup() {
    local mount rel dir deadline=$((SECONDS + 10)) left
    while :; do
        left=
        while read -r mount; do
            for rel in "${cgroup_rel[@]}"; do
                dir=$mount$rel
                [ -d "$dir" ] || continue
                find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
                [ -d "$dir" ] && left+=" $dir"
            done
        done < <(findmnt -rn -t cgroup,cgroup2 -o TARGET)
        [ -z "$left" ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "teardown: cgroups left behind:$left"
            return 1
        fi
        sleep 0.2
    done
}

boot() {
    step "boot: systemd in private namespaces"
    mkdir -p "$logdir"
    make_cgroup
    local procs=() rel mount
    for rel in "${cgroup_rel[@]}"; do
        for mount in $(findmnt -rn -t cgroup,cgroup2 -o TARGET); do
            [ -d "$mount$rel" ] && procs+=("$mount$rel/cgroup.procs")
        done
    done
    # The subshell joins the cgroup, then becomes unshare, which forks boot.sh
    # as PID 1 of the new PID namespace. --kill-child: should unshare die,
    # its child (and with it the whole namespace) is killed too.
    (
        for file in "${procs[@]}"; do echo "$BASHPID" >"$file"; done
        exec unshare --pid --mount --uts --ipc --net --fork --kill-child --mount-proc --propagation private \
            bash "$here/boot.sh" "$repo" "$target"
    ) </dev/null >"$console_log" 2>&1 &
    unshare_pid=$!

    # The namespace's PID 1 is unshare's only child, once the subshell has
    # become unshare (before, its children are the subshell's) and the
    # child is in a PID namespace other than ours.
    local deadline=$((SECONDS + 10)) unshare_bin child
    unshare_bin=$(readlink -f "$(command -v unshare)")
    while :; do
        child=
        if [ "$(readlink -f "/proc/$unshare_pid/exe" 2>/dev/null)" = "$unshare_bin" ]; then
            child=$(cat "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null || true)
            child=${child// /}
        fi
        if [ -n "$child" ] && [ "$(readlink "/proc/$child/ns/pid" 2>/dev/null)" != "$(readlink /proc/self/ns/pid)" ]; then
            ns_pid=$child
            ns_pid_ns=$(readlink "/proc/$ns_pid/ns/pid")
            break
        fi
        if ! kill -0 "$unshare_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            fail "boot: unshare did not start boot.sh; console:"
            indent <"$console_log"
            return 1
        fi
        sleep 0.05
    done

    # Wait until systemd has booted into our target (bounded): before that
    # its bus is not up and systemctl fails.
    local state=
    deadline=$((SECONDS + 60))
    while :; do
        state=$(inside 5 systemctl is-system-running 2>/dev/null || true)
        case "$state" in running | degraded) break ;; esac
        if ! kill -0 "$ns_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            fail "boot: systemd did not finish booting (state: '${state:-no answer}'); console:"
            sleep 0.5
            tail -n 40 "$console_log" | indent
            return 1
        fi
        sleep 0.3
    done
    pass "boot: systemd is up in the namespace (is-system-running: $state)"
    if [ "$state" = degraded ]; then
        note "failed units: $(inside 10 systemctl list-units --state=failed --no-legend --plain | awk '{ print $1 }' | tr '\n' ' ')"
    fi

    # What keeps the machine safe, checked rather than assumed.
    local private=() path fstype
    for path in /run /tmp /var/tmp /dev /var/log/journal; do
        fstype=$(inside 5 findmnt -n -o FSTYPE --mountpoint "$path" | tail -n 1 || true)
        [ "$fstype" = tmpfs ] || private+=("$path is '${fstype:-not a mount}'")
    done
    for path in /usr /etc /var; do
        fstype=$(inside 5 findmnt -n -o FSTYPE --mountpoint "$path" | tail -n 1 || true)
        [ "$fstype" = overlay ] || private+=("$path is '${fstype:-not a mount}'")
    done
    if [ ${#private[@]} -eq 0 ]; then
        pass "boot: /run /tmp /var/tmp /dev /var/log/journal are tmpfs and /usr /etc /var overlays, private to the namespace"
    else
        fail "boot: not private: ${private[*]}"
        return 1
    fi
}

teardown() {
    if [ -z "$unshare_pid" ]; then
        [ ${#cgroup_rel[@]} -eq 0 ] || remove_cgroup || true
        return 0
    fi
    step "teardown"
    local deadline
    if [ -n "$ns_pid" ] && kill -0 "$ns_pid" 2>/dev/null; then
        # PID 1 ignores SIGTERM; poweroff is the clean way out.
        inside 15 systemctl poweroff --no-block >/dev/null 2>&1 || true
        deadline=$((SECONDS + 30))
        while kill -0 "$unshare_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        if kill -0 "$unshare_pid" 2>/dev/null; then
            fail "teardown: systemd did not power off within 30 s; killing the namespace"
            # SIGKILL to a PID namespace's init kills every process in it.
            kill -KILL "$ns_pid" 2>/dev/null || true
        fi
    fi
    deadline=$((SECONDS + 10))
    while kill -0 "$unshare_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -KILL "$unshare_pid" 2>/dev/null || true
    wait "$unshare_pid" 2>/dev/null || true
    unshare_pid=

    remove_cgroup && pass "teardown: the namespace is gone and its cgroups removed"

    # Nothing of ours may be left on the machine: no process in the
    # namespace, the same mounts with the same options (a remount without
    # MS_BIND inside would show here), the same cgroup tree top.
    local leftover= pid
    if [ -n "$ns_pid_ns" ]; then
        for pid in $(ls /proc | grep -E '^[0-9]+$'); do
            [ "$(readlink "/proc/$pid/ns/pid" 2>/dev/null)" = "$ns_pid_ns" ] &&
                leftover+="$(ps -o pid=,args= -p "$pid" 2>/dev/null || true); "
        done
    fi
    if [ -z "$leftover" ]; then
        pass "teardown: no process of the namespace is left"
    else
        fail "teardown: processes left: $leftover"
    fi
    if [ "$(host_mounts)" = "$host_mounts_before" ]; then
        pass "teardown: the machine's mount table is as before ($(host_mounts | grep -c ' overlay ' || true) overlay mounts)"
    else
        fail "teardown: the machine's mount table changed:"
        diff <(echo "$host_mounts_before") <(host_mounts) | indent || true
    fi
    if [ "$(host_cgroups)" = "$host_cgroups_before" ]; then
        pass "teardown: the machine's /sys/fs/cgroup is as before"
    else
        fail "teardown: the machine's /sys/fs/cgroup changed:"
        diff <(echo "$host_cgroups_before") <(host_cgroups) | indent || true
    fi
}

host_mounts() { findmnt -rn -o TARGET,SOURCE,FSTYPE,OPTIONS | sort; }
# The top of the cgroup tree: the hierarchies and the cgroups right below them.
host_cgroups() { find /sys/fs/cgroup -maxdepth 2 \( -type d -o -type l \) 2>/dev/null | sort; }

on_exit() {
    local status=$?
    trap - EXIT INT TERM HUP
    if [ -z "$finished" ]; then
        fail "the test stopped early (exit status $status); tearing down"
    fi
    teardown || true
    echo
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && exit 0
    exit 1
}

# ---------------------------------------------------------------------------
# The steps

install_chatd() {
    step "install: make install PREFIX=/usr into the namespace's overlays"
    local out rc=0
    out=$(inside 600 make -C "$repo" install PREFIX=/usr 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "install: make install PREFIX=/usr exited $rc:"
        tail -n 30 <<<"$out" | indent
        return 1
    fi
    pass "install: make install PREFIX=/usr${out:+ ($(grep -m1 -o 'Build complete.*' <<<"$out" || echo "no swift build output"))}"
    local missing=() file
    for file in /usr/bin/chatd /usr/bin/chat "$etc_conf"; do
        inside 5 test -e "$file" || missing+=("$file")
    done
    inside 30 systemctl daemon-reload
    for file in chatd.service chatd.socket; do
        [ "$(prop "$file" LoadState)" = loaded ] || missing+=("$file (LoadState $(prop "$file" LoadState))")
    done
    if [ ${#missing[@]} -ne 0 ]; then
        fail "install: missing after make install: ${missing[*]}"
        return 1
    fi
    pass "install: chatd, chat, $etc_conf, chatd.service and chatd.socket ($(prop chatd.service FragmentPath))"

    # The test's config: the installed one with a snapshot every second, so
    # the registration is on disk before step 5 kills chatd. Kept as
    # $test_conf, which step 4 restores.
    set_conf snapshot_interval_s 1 "$etc_conf"
    if inside 5 grep -qx 'snapshot_interval_s = 1' "$etc_conf"; then
        pass "install: test config: $etc_conf with snapshot_interval_s = 1"
    else
        fail "install: $etc_conf has no 'snapshot_interval_s = ' line to set to 1"
    fi
    inside 5 cp "$etc_conf" "$test_conf"
    inside 5 sh -c "printf '[client]\ntimeout_ms = 300\nmax_attempts = 6\nbackoff = 2.0\nkeepalive_s = 2\n' >$client_conf"

    # Like a machine with `systemctl enable chatd.socket`: the socket listens
    # before chatd runs.
    if inside 30 systemctl start chatd.socket && [ "$(prop chatd.socket ActiveState)" = active ]; then
        pass "install: chatd.socket started"
    else
        fail "install: systemctl start chatd.socket failed"
        inside 10 systemctl status --no-pager chatd.socket 2>&1 | indent || true
        return 1
    fi
}

step1_start() {
    step "1. systemctl start chatd: active (running) after READY=1, with a status line"
    local type cursor rc=0 status
    type=$(prop chatd.service Type)
    [ "$type" = notify ] && pass "1: chatd.service is Type=notify" || fail "1: chatd.service is Type=$type, not notify"
    cursor=$(journal_cursor)
    inside 60 systemctl start chatd.service || rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "1: systemctl start chatd exited $rc"
        show_journal
        return 1
    fi
    # A notify service becomes active (running) only on READY=1; checked at
    # once, with no sleep in between.
    expect_running "1: right after systemctl start returned" || return 1
    status=$(prop chatd.service StatusText)
    if [[ "$status" == serving* ]]; then
        pass "1: StatusText: $status"
    else
        fail "1: StatusText does not start with 'serving': '$status'"
    fi
    if inside 10 systemctl status --no-pager chatd.service 2>&1 | grep -Eq '^ *Status: "serving'; then
        pass "1: systemctl status shows: $(inside 10 systemctl status --no-pager chatd.service 2>&1 | grep -E '^ *Status:' | sed 's/^ *//')"
    else
        fail "1: systemctl status has no 'Status: \"serving…' line:"
        inside 10 systemctl status --no-pager chatd.service 2>&1 | indent || true
    fi
    # systemd logs "Started chatd.service" when it got READY=1; chatd's own
    # start-up entries come before it.
    local chatd_seq started_seq
    chatd_seq=$(journal_wait 5 "$cursor" --field SEQNUM _SYSTEMD_UNIT=chatd.service) || chatd_seq=
    started_seq=$(journal_wait 5 "$cursor" --field SEQNUM MESSAGE_ID=$MID_SD_UNIT_STARTED) || started_seq=
    if [ -n "$chatd_seq" ] && [ -n "$started_seq" ] && [ "$chatd_seq" -lt "$started_seq" ]; then
        pass "1: chatd logged (#$chatd_seq) before systemd logged it started (#$started_seq)"
    else
        fail "1: no chatd entry before systemd's 'Started' entry (chatd #${chatd_seq:-none}, Started #${started_seq:-none})"
        show_journal
    fi
}

step2_join() {
    step "2. chat join alice through the socket unit"
    local state
    state=$(prop chatd.socket ActiveState)
    [ "$state" = active ] && pass "2: chatd.socket is active" || fail "2: chatd.socket is '$state', not active"
    # The socket on the port is systemd's (PID 1 holds it, chatd got a copy).
    local owners
    owners=$(inside 10 ss -Hulnp "sport = :$port" 2>/dev/null || true)
    if grep -q '"systemd",pid=1,' <<<"$owners"; then
        pass "2: port $port is held by systemd: $(tr -s ' ' <<<"$owners" | head -n 1)"
    else
        fail "2: port $port is not held by systemd (PID 1): ${owners:-nothing listens}"
    fi
    if journal_wait 5 "" "MESSAGE~=listening on sockets from systemd" >/dev/null; then
        pass "2: chatd took its socket from systemd: $(journal_wait 1 "" "MESSAGE~=listening on sockets from systemd")"
    else
        fail "2: chatd's journal has no 'listening on sockets from systemd'"
        show_journal
    fi
    chat_as "$alice_ip" join alice
    if [ "$chat_rc" -eq 0 ] && [ "$(tail -n 1 <<<"$chat_out")" = alice ]; then
        pass "2: chat join alice --bind $alice_ip says alice"
    else
        fail "2: chat join alice --bind $alice_ip: exit $chat_rc, output: $chat_out"
        show_journal
    fi
}

step3_journal() {
    step "3. the registration in the journal, as structured fields"
    local entry
    if entry=$(journal_wait 5 "" "MESSAGE=user registered" CHATD_USERNAME=alice CHATD_CLIENT_IP=$alice_ip \
        MESSAGE_ID=$MID_REGISTERED PRIORITY=6); then
        pass "3: journalctl -u chatd -o json: $entry"
    else
        fail "3: no entry MESSAGE='user registered' CHATD_USERNAME=alice CHATD_CLIENT_IP=$alice_ip MESSAGE_ID=$MID_REGISTERED PRIORITY=6"
        journal_json -u chatd.service | python3 "$here/journal.py" find --last "MESSAGE~=registered" >/dev/null &&
            note "closest: $(journal_json -u chatd.service | python3 "$here/journal.py" find --last 'MESSAGE~=registered')"
        show_journal
    fi
}

# reload_chatd: systemctl reload chatd, bounded; sets reload_rc.
reload_chatd() {
    reload_rc=0
    local started=$SECONDS
    inside 30 systemctl reload chatd.service || reload_rc=$?
    note "systemctl reload chatd exited $reload_rc after $((SECONDS - started)) s"
}

step4_reload() {
    step "4. systemctl reload chatd: applied when it returns; a broken config is refused"
    local cursor entry status

    set_conf level '"debug"' "$etc_conf"
    cursor=$(journal_cursor)
    # "Returns only when reloaded", made deterministic: chatd is frozen
    # (SIGSTOP) while systemctl reload runs, so it cannot reload; the reload
    # must still be waiting after a while, and finish once chatd runs again.
    # (A reload that only sends SIGHUP returns at once, however quick chatd
    # is; timing a reload of a running chatd could not tell the two apart.)
    local pid frozen=2 rc_file=$work/reload.rc reloader
    pid=$(prop chatd.service MainPID)
    if [ -z "$pid" ] || [ "$pid" = 0 ]; then
        fail "4: chatd has no MainPID; not reloading"
        show_journal
        return 1
    fi
    inside 5 rm -f "$rc_file"
    inside 5 kill -STOP "$pid"
    inside 40 sh -c "systemctl reload chatd.service; echo \$? >$rc_file" &
    reloader=$!
    sleep "$frozen"
    if inside 5 test -e "$rc_file"; then
        fail "4: systemctl reload returned (exit $(inside 5 cat "$rc_file")) while chatd was frozen, i.e. before chatd had reloaded"
        note "(systemd 252 has no Type=notify-reload: a reload job ends when ExecReload= exits, RELOADING=1"
        note " notwithstanding, so ExecReload=kill -HUP returns at once; ExecReload= itself must wait for chatd)"
    else
        pass "4: systemctl reload still waits after ${frozen} s with chatd frozen"
    fi
    inside 5 kill -CONT "$pid"
    wait "$reloader" || true
    reload_rc=$(inside 5 cat "$rc_file" 2>/dev/null || echo none)
    [ "$reload_rc" = 0 ] && pass "4: systemctl reload chatd (log.level = debug) succeeded once chatd ran again" ||
        fail "4: systemctl reload chatd exited ${reload_rc}"
    expect_running "4: after the reload"
    if entry=$(journal_wait 5 "$cursor" MESSAGE_ID=$MID_RELOADED); then
        pass "4: $entry"
    else
        fail "4: no 'config reloaded' entry (MESSAGE_ID=$MID_RELOADED) after the reload"
        show_journal
    fi
    cursor=$(journal_cursor)
    expect_alice "4: at debug level"
    if entry=$(journal_wait 5 "$cursor" "MESSAGE=request answered" PRIORITY=7); then
        pass "4: debug entries are written now: $entry"
    else
        fail "4: no debug entry 'request answered' (PRIORITY=7) after chat connect"
        show_journal
    fi

    # A broken config: refused, the running one stays in force.
    inside 5 sh -c "printf '[server]\nport = \"x\"\n' >$etc_conf"
    cursor=$(journal_cursor)
    reload_chatd
    # ExecReload= is `chatd --reload`, which fails when chatd refuses the config.
    [ "$reload_rc" -ne 0 ] && pass "4: systemctl reload of the broken config failed (exit $reload_rc), as it should" ||
        fail "4: systemctl reload of a broken config succeeded"
    expect_running "4: after the refused reload"
    if entry=$(journal_wait 5 "$cursor" MESSAGE_ID=$MID_RELOAD_REFUSED "MESSAGE^=reload refused"); then
        pass "4: $entry"
    else
        fail "4: no 'reload refused…' entry (MESSAGE_ID=$MID_RELOAD_REFUSED)"
        show_journal
    fi
    status=$(prop chatd.service StatusText)
    [[ "$status" == *"reload refused"* ]] && pass "4: StatusText: $status" ||
        fail "4: StatusText does not mention 'reload refused': '$status'"
    expect_alice "4: with the broken config refused"

    # Back to the good config (info level).
    inside 5 cp "$test_conf" "$etc_conf"
    cursor=$(journal_cursor)
    reload_chatd
    status=$(prop chatd.service StatusText)
    if [ "$reload_rc" -eq 0 ] && journal_wait 5 "$cursor" MESSAGE_ID=$MID_RELOADED >/dev/null && [[ "$status" == serving* ]]; then
        pass "4: the good config restored and reloaded; StatusText: $status"
    else
        fail "4: restoring the good config: reload exit $reload_rc, StatusText '$status'"
        show_journal
    fi
}

step5_watchdog() {
    step "5. watchdog: a stopped chatd is killed and restarted, alice survives"
    local watchdog=3 restart_sec abort_sec bound n0 pid0 cursor
    inside 5 mkdir -p "$dropin_dir"
    inside 5 sh -c "printf '[Service]\nWatchdogSec=${watchdog}s\n' >$dropin_dir/watchdog.conf"
    inside 30 systemctl daemon-reload
    if ! inside 60 systemctl restart chatd.service; then
        fail "5: systemctl restart chatd (WatchdogSec=${watchdog}s) failed"
        show_journal
        return 1
    fi
    [ "$(prop chatd.service WatchdogUSec)" = "${watchdog}s" ] && pass "5: WatchdogSec=${watchdog}s from a drop-in" ||
        fail "5: WatchdogUSec is '$(prop chatd.service WatchdogUSec)', not ${watchdog}s"
    # After the watchdog's signal (SIGABRT) systemd waits up to
    # TimeoutAbortSec= for chatd to exit before SIGKILL, then RestartSec=.
    restart_sec=$(seconds_of "$(prop chatd.service RestartUSec)")
    abort_sec=$(seconds_of "$(prop chatd.service TimeoutAbortUSec)")
    bound=$((3 * watchdog + abort_sec + restart_sec + 10))
    n0=$(prop chatd.service NRestarts)
    pid0=$(prop chatd.service MainPID)
    cursor=$(journal_cursor)
    if [ -z "$pid0" ] || [ "$pid0" = 0 ]; then
        fail "5: chatd has no MainPID"
        return 1
    fi
    inside 5 kill -STOP "$pid0"
    note "SIGSTOP to MainPID $pid0; NRestarts $n0; waiting up to $bound s (3 × WatchdogSec + TimeoutAbortSec + RestartSec + 10 s)"
    local started=$SECONDS
    restarted() {
        local n pid state
        n=$(prop chatd.service NRestarts)
        pid=$(prop chatd.service MainPID)
        state="$(prop chatd.service ActiveState)/$(prop chatd.service SubState)"
        [ "${n:-0}" -gt "${n0:-0}" ] && [ "$state" = active/running ] && [ "$pid" != "$pid0" ] && [ "$pid" != 0 ]
    }
    if wait_until "$bound" restarted; then
        pass "5: restarted after $((SECONDS - started)) s: NRestarts $n0 → $(prop chatd.service NRestarts), MainPID $pid0 → $(prop chatd.service MainPID), active (running)"
    else
        fail "5: not restarted within $bound s: NRestarts $(prop chatd.service NRestarts), MainPID $(prop chatd.service MainPID), $(prop chatd.service ActiveState)/$(prop chatd.service SubState)"
        show_journal
        inside 5 kill -CONT "$pid0" 2>/dev/null || true
    fi
    local entry
    entry=$(journal_wait 2 "$cursor" "MESSAGE~=atchdog timeout") &&
        pass "5: systemd: $entry" || fail "5: systemd logged no watchdog timeout"
    # How the frozen chatd ended: by the watchdog signal itself, or only by
    # SIGKILL once TimeoutAbortSec= ran out.
    entry=$(journal_wait 2 "$cursor" _PID=1 "MESSAGE~=Main process exited") && note "systemd: $entry"
    if journal_wait 1 "$cursor" _PID=1 "MESSAGE~=timed out. Killing" >/dev/null; then
        note "note: chatd did not exit on the watchdog signal; systemd killed it (SIGKILL) after TimeoutAbortSec=${abort_sec}s"
    fi
    expect_alice "5: after the watchdog restart"

    # Back to the shipped watchdog for the remaining steps.
    inside 5 rm -f "$dropin_dir/watchdog.conf"
    inside 30 systemctl daemon-reload
    inside 60 systemctl restart chatd.service || { fail "5: restart without the drop-in failed"; show_journal; }
}

step6_restart_under_load() {
    step "6. systemctl restart chatd while datagrams arrive: none lost"
    local pid0 pid1 out rc=0
    pid0=$(prop chatd.service MainPID)
    # The sender runs inside (network namespace) and starts the restart
    # itself, halfway through its 300 datagrams.
    out=$(inside 60 python3 "$here/sender.py" --bind "$sender_ip" --server 127.0.0.1 --port "$port" \
        --count 300 --interval 0.01 --restart-at 150 --deadline 10 -- systemctl restart chatd.service 2>&1) || rc=$?
    echo "$out" | indent
    pid1=$(prop chatd.service MainPID)
    if [ "$pid1" != "$pid0" ] && [ "$pid1" != 0 ]; then
        pass "6: chatd restarted during the run (MainPID $pid0 → $pid1)"
    else
        fail "6: chatd's MainPID is $pid1 (was $pid0): no restart happened"
    fi
    if [ "$rc" -eq 0 ]; then
        pass "6: every one of the 300 datagrams answered exactly once"
    else
        fail "6: datagrams lost or answered twice across the restart (sender exit $rc)"
        show_journal
    fi
    expect_running "6: after the restart" || true
}

step7_stop() {
    step "7. systemctl stop chatd: final snapshot, exit status 0; alice back after start"
    local cursor rc=0 entry status result registry
    cursor=$(journal_cursor)
    # (systemctl warns that chatd.socket can still activate chatd: expected.)
    inside 60 systemctl stop chatd.service 2>&1 | indent || rc=$?
    [ "$rc" -eq 0 ] && pass "7: systemctl stop chatd" || fail "7: systemctl stop chatd exited $rc"
    status=$(prop chatd.service ExecMainStatus)
    result=$(prop chatd.service Result)
    if [ "$status" = 0 ] && [ "$result" = success ]; then
        pass "7: ExecMainStatus=0, Result=success"
    else
        fail "7: ExecMainStatus=$status, Result=$result (want 0, success)"
        show_journal
    fi
    if entry=$(journal_wait 5 "$cursor" "MESSAGE=snapshot written" MESSAGE_ID=$MID_SNAPSHOT); then
        pass "7: $entry"
    else
        fail "7: no 'snapshot written' entry (MESSAGE_ID=$MID_SNAPSHOT) at stop"
        show_journal
    fi
    note "/var/lib/chatd → $(inside 5 readlink /var/lib/chatd || echo '(not a symlink)')"
    registry=$(inside 5 cat /var/lib/chatd/registry.json 2>&1) || registry=
    if python3 -c '
import json, sys
users = json.loads(sys.argv[1])["users"]
sys.exit(0 if {"ip": sys.argv[2], "username": "alice"} in users else 1)
' "$registry" "$alice_ip" 2>/dev/null; then
        pass "7: /var/lib/chatd/registry.json holds alice at $alice_ip"
    else
        fail "7: /var/lib/chatd/registry.json does not hold alice at $alice_ip: ${registry:-(unreadable)}"
    fi
    [ "$(prop chatd.socket ActiveState)" = active ] && pass "7: chatd.socket still listens while chatd is stopped" ||
        fail "7: chatd.socket is $(prop chatd.socket ActiveState) after stopping chatd"
    if inside 60 systemctl start chatd.service; then
        pass "7: systemctl start chatd"
    else
        fail "7: systemctl start chatd failed"
        show_journal
    fi
    expect_alice "7: after stop and start"
}

step8_security() {
    step "8. systemd-analyze security --offline=yes: exposure ≤ 1.0"
    local unit out exposure
    unit=$(prop chatd.service FragmentPath)
    out=$(inside 60 systemd-analyze security --no-pager --offline=yes "$unit" 2>&1) || true
    exposure=$(grep -o 'Overall exposure level for [^:]*: [0-9.]*' <<<"$out" | awk '{ print $NF }')
    if [ -z "$exposure" ]; then
        fail "8: systemd-analyze security --offline=yes $unit printed no exposure:"
        tail -n 20 <<<"$out" | indent
    elif awk -v e="$exposure" 'BEGIN { exit !(e <= 1.0) }'; then
        pass "8: $unit: $(grep 'Overall exposure' <<<"$out")"
    else
        fail "8: $unit: exposure $exposure > 1.0; what counts most:"
        grep '^✗' <<<"$out" | awk '{ print $NF "\t" $0 }' | sort -rn | cut -f 2- | head -n 15 | indent
    fi
}

# ---------------------------------------------------------------------------

step9_crash_trace() {
    step "9. a crash leaves a symbolicated backtrace in the journal"
    # MemoryDenyWriteExecute=yes rules out Swift's in-process backtracer;
    # the unit points SWIFT_BACKTRACE at the static one installed beside
    # chatd. A SIGSEGV sent with kill is traced like a real fault, but it is
    # not one, so chatd goes on serving afterwards (a real fault faults again
    # and ends the process; restarting after a failure is step 5's business).
    local pid cursor entry
    pid=$(prop chatd.service MainPID)
    cursor=$(journal_cursor)
    if [ -z "$pid" ] || [ "$pid" = 0 ]; then
        fail "9: chatd has no MainPID"
        return 1
    fi
    inside 5 kill -SEGV "$pid"
    entry=$(journal_wait 10 "$cursor" "MESSAGE~=Program crashed") &&
        pass "9: journal: $entry" || { fail "9: no 'Program crashed' line from the backtracer"; show_journal; }
    entry=$(journal_wait 5 "$cursor" "MESSAGE~=Server.run()" "MESSAGE~=Server.swift:") &&
        pass "9: a frame with function, file and line: $entry" ||
        fail "9: the backtrace has no symbolicated frame in Server.run()"
    expect_alice "9: after the trace"
}

step10_chat() {
    step "10. two members talk through chatd.socket; systemctl restart chatd in the middle loses nothing"
    local out rc=0 received missing=() i
    # dave listens (JSON lines); carol says 30 lines, restarting chatd after
    # the 15th; then dave must hold all 30, in order, each once.
    out=$(inside 120 bash -c '
        work=$1 conf=$2 port=$3 carol=$4 dave=$5
        /usr/bin/chat talk dave --listen --json --config "$conf" --server 127.0.0.1 --port "$port" \
            --bind "$dave" >"$work/dave.out" 2>"$work/dave.err" &
        listener=$!
        for _ in $(seq 50); do grep -q "joined" "$work/dave.err" 2>/dev/null && break; sleep 0.1; done
        {
            for i in $(seq 1 15); do echo "line $i"; sleep 0.05; done
            systemctl restart chatd.service
            for i in $(seq 16 30); do echo "line $i"; sleep 0.05; done
        } | /usr/bin/chat talk carol --config "$conf" --server 127.0.0.1 --port "$port" --bind "$carol" \
            >"$work/carol.out" 2>"$work/carol.err"
        echo "carol exit $?"
        for _ in $(seq 150); do grep -q "\"line 30\"" "$work/dave.out" && break; sleep 0.1; done
        kill -TERM "$listener"
        wait "$listener"
        echo "dave exit $?"
    ' _ "$work" "$client_conf" "$port" "$carol_ip" "$dave_ip" 2>&1) || rc=$?
    echo "$out" | indent
    received=$(inside 10 python3 -c '
import json, sys
for line in open(sys.argv[1]):
    print(json.loads(line)["text"])
' "$work/dave.out" 2>&1) || true
    for i in $(seq 1 30); do
        grep -qx "line $i" <<<"$received" || missing+=("$i")
    done
    if [ "$rc" -eq 0 ] && grep -q "carol exit 0" <<<"$out" && grep -q "dave exit 0" <<<"$out"; then
        pass "10: chat talk carol and chat talk dave --listen ran through the restart and exited 0"
    else
        fail "10: chat talk exited badly (rc $rc)"
        inside 5 cat "$work/carol.err" "$work/dave.err" 2>&1 | indent || true
    fi
    if [ ${#missing[@]} -eq 0 ] && [ "$(sort <<<"$received" | uniq -d | wc -l)" -eq 0 ] \
        && [ "$received" = "$(seq 1 30 | sed 's/^/line /')" ]; then
        pass "10: dave received all 30 of carol's lines, in order, each once, across the restart"
    else
        fail "10: dave's transcript is wrong (missing: ${missing[*]:-none}):"
        echo "$received" | indent
        inside 5 cat "$work/dave.err" 2>&1 | indent || true
        show_journal
    fi
}

# ---------------------------------------------------------------------------
# The Debian package's life cycle (steps 11-15), in a second boot: its
# overlays are fresh, so nothing that make install and steps 1-10 left
# (binaries in /usr/bin, units in /usr/lib/systemd/system, the test's
# config, chatd's state, drop-ins) mixes with what the package installs,
# and remove and purge are checked on a system that only ever had the package.

# chatctl_as VERB ARGS...: the installed chatctl (as root, over the control
# socket the package's chatd-control.socket holds). Sets ctl_out and ctl_rc.
chatctl_as() {
    ctl_rc=0
    ctl_out=$(inside 30 /usr/bin/chatctl "$@" 2>&1) || ctl_rc=$?
}

# apt_inside SECONDS ARGS...: apt-get in the namespace, non-interactive, with
# no terminal to prompt on. Sets apt_out and apt_rc.
apt_inside() {
    local seconds=$1
    shift
    apt_rc=0
    apt_out=$(inside "$seconds" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0 "$@" \
        </dev/null 2>&1) || apt_rc=$?
}

# units_state: "chatd.service=active chatd.socket=active chatd-control.socket=active".
units_state() {
    local unit out=()
    for unit in chatd.service chatd.socket chatd-control.socket; do
        out+=("$unit=$(prop "$unit" ActiveState)")
    done
    echo "${out[*]}"
}

# The socket's inode (ss -e: ino:N): the same number before and after the
# upgrade means the very socket, with its queue, was kept.
socket_inode() { inside 10 ss -Hulne "sport = :$port" 2>/dev/null | grep -o 'ino:[0-9]*' | head -n 1; }

# The upgrade's package, made from the built one: the same files, a higher
# Version. (The binaries inside still report the base version; only dpkg
# sees the difference, which is all an upgrade needs.)
make_upgrade_deb() {
    local root=$logdir/upgrade
    rm -rf "$root" "$upgrade_deb"
    dpkg-deb -R "$deb" "$root" &&
        sed -i "s/^Version: .*/Version: $upgrade_version/" "$root/DEBIAN/control" &&
        dpkg-deb -Znone -b "$root" "$upgrade_deb" >/dev/null &&
        rm -rf "$root"
}

step10b_control() {
    step "10b. chatctl over chatd-control.socket: held by systemd, root's only, and it starts chatd"
    local state listing cursor
    state=$(prop chatd-control.socket ActiveState)
    [ "$state" = active ] && pass "10b: chatd-control.socket is active" || fail "10b: chatd-control.socket is '$state'"
    listing=$(inside 5 stat -c '%A %U' /run/chatd/control 2>&1 || true)
    [ "$listing" = "srw------- root" ] && pass "10b: /run/chatd/control is $listing" ||
        fail "10b: /run/chatd/control is '$listing', not 'srw------- root'"
    chatctl_as lookup alice
    [ "$ctl_rc" -eq 0 ] && [ "$(tail -n 1 <<<"$ctl_out")" = "$alice_ip" ] && pass "10b: chatctl lookup alice: $ctl_out" ||
        fail "10b: chatctl lookup alice: exit $ctl_rc, output: $ctl_out"
    chatctl_as status --json
    grep -q '"durability": "sync"' <<<"$ctl_out" && pass "10b: chatctl status --json answers (exit $ctl_rc)" ||
        fail "10b: chatctl status --json: exit $ctl_rc, output: $ctl_out"
    # PrivateUsers=yes maps everyone but root and chatd's user to nobody:
    # the file's mode stops nobody first, as any other user.
    ctl_rc=0
    ctl_out=$(inside 30 setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/chatctl status 2>&1) || ctl_rc=$?
    [ "$ctl_rc" -eq 77 ] && pass "10b: chatctl as nobody exits 77: $ctl_out" ||
        fail "10b: chatctl as nobody: exit $ctl_rc (want 77), output: $ctl_out"
    cursor=$(journal_cursor)
    chatctl_as reload
    if [ "$ctl_rc" -eq 0 ] && journal_wait 5 "$cursor" "MESSAGE_ID=$MID_RELOADED" >/dev/null; then
        pass "10b: chatctl reload: $ctl_out, and the journal says config reloaded"
    else
        fail "10b: chatctl reload: exit $ctl_rc, output: $ctl_out; journal:"
        show_journal 5
    fi
    # With chatd stopped, the socket stays, and a chatctl connecting starts it.
    inside 30 systemctl stop chatd.service
    state=$(prop chatd.service ActiveState)
    [ "$state" = inactive ] || fail "10b: chatd.service is '$state' after systemctl stop"
    chatctl_as lookup alice
    state=$(prop chatd.service ActiveState)
    if [ "$ctl_rc" -eq 0 ] && [ "$state" = active ]; then
        pass "10b: with chatd stopped, chatctl lookup alice started it through the socket: $ctl_out"
    else
        fail "10b: chatctl against a stopped chatd: exit $ctl_rc, output: $ctl_out, chatd.service $state"
    fi
}

package_prepare() {
    step "11. the package: maintainer scripts, apt-get install ./$(basename "$deb")"
    if [ ! -f "$deb" ]; then
        fail "11: $deb does not exist (make deb)"
        return 1
    fi
    # What dh_installsystemd generated, read from the .deb: the sockets are
    # started on install and never stopped or restarted by an upgrade;
    # chatd.service alone is restarted after one; everything stops on remove.
    local scripts=$logdir/control stops guarded
    rm -rf "$scripts"
    dpkg-deb -e "$deb" "$scripts"
    if grep -q "deb-systemd-invoke start 'chatd-control.socket' 'chatd.socket'" "$scripts/postinst" &&
        [ "$(grep -c 'deb-systemd-invoke \$_dh_action' "$scripts/postinst")" = 1 ] &&
        grep -q "deb-systemd-invoke \$_dh_action 'chatd.service'" "$scripts/postinst" &&
        grep -q '_dh_action=restart' "$scripts/postinst"; then
        pass "11: postinst starts chatd-control.socket and chatd.socket, and restarts (on upgrade) or starts chatd.service only"
    else
        fail "11: postinst does not start the sockets and restart only chatd.service:"
        grep -n 'deb-systemd-invoke\|_dh_action=' "$scripts/postinst" | indent
    fi
    if [ ! -e "$scripts/preinst" ] || ! grep -q 'deb-systemd-invoke stop' "$scripts/preinst"; then
        pass "11: no preinst stops a unit before an upgrade"
    else
        fail "11: preinst stops units before an upgrade:"
        grep -n 'deb-systemd-invoke' "$scripts/preinst" | indent
    fi
    stops=$(grep -c 'deb-systemd-invoke stop' "$scripts/prerm" || true)
    guarded=$(grep -B1 'deb-systemd-invoke stop' "$scripts/prerm" | grep -c '"$1" = remove' || true)
    if [ "$stops" -ge 2 ] && [ "$stops" = "$guarded" ]; then
        pass "11: prerm stops the units on remove only ($stops stop lines, each under \"\$1\" = remove)"
    else
        fail "11: prerm: $stops stop lines, $guarded of them on remove only"
        indent <"$scripts/prerm"
    fi
    grep -qx /etc/chatd/chatd.toml "$scripts/conffiles" && pass "11: /etc/chatd/chatd.toml is a conffile" ||
        fail "11: /etc/chatd/chatd.toml is not in conffiles"
    grep -q 'rm -rf /var/lib/private/chatd' "$scripts/postrm" && pass "11: postrm removes /var/lib/private/chatd (on purge)" ||
        fail "11: postrm does not remove /var/lib/private/chatd"

    # The machine's /usr/sbin/policy-rc.d (a container image's "exit 101")
    # forbids deb-systemd-invoke to start anything; a Debian server has none.
    # Removed in the namespace's /usr overlay only.
    if inside 5 test -e /usr/sbin/policy-rc.d; then
        inside 5 rm -f /usr/sbin/policy-rc.d
        note "removed /usr/sbin/policy-rc.d in the namespace (the machine's says: $(grep -v '^#' /usr/sbin/policy-rc.d | grep -v '^$' | tr '\n' ' '))"
    fi
    # Nothing of chatd before: the second boot starts clean.
    if inside 5 test -e /usr/bin/chatd || inside 5 test -e /etc/chatd || inside 5 test -e /var/lib/private/chatd; then
        fail "11: the namespace already has chatd files before the package is installed"
        return 1
    fi

    # apt-get install of a file works offline: every dependency is installed
    # on the machine already (the namespace's /usr and /var are overlays of it).
    local started=$SECONDS
    apt_inside 300 install --no-install-recommends "$deb" "$dbgsym_deb"
    if [ "$apt_rc" -ne 0 ]; then
        fail "11: apt-get install $(basename "$deb") exited $apt_rc:"
        tail -n 20 <<<"$apt_out" | indent
        return 1
    fi
    pass "11: apt-get install ./$(basename "$deb") ./$(basename "$dbgsym_deb") ($((SECONDS - started)) s)"
    local state
    state=$(inside 10 systemctl is-active chatd chatd.socket chatd-control.socket | tr '\n' ' ')
    if [ "$state" = "active active active " ]; then
        pass "11: systemctl is-active chatd chatd.socket chatd-control.socket: $state"
    else
        fail "11: systemctl is-active chatd chatd.socket chatd-control.socket: $state"
        show_journal
        return 1
    fi
    state=$(inside 10 systemctl is-enabled chatd chatd.socket chatd-control.socket | tr '\n' ' ')
    [ "$state" = "enabled enabled enabled " ] && pass "11: enabled: $state" || fail "11: systemctl is-enabled: $state"
    local pkg_version bin_version
    pkg_version=$(inside 5 dpkg-query -W -f='${Version}' chatd)
    bin_version=$(inside 5 /usr/bin/chatd --version)
    [ "$pkg_version" = "$version" ] && [ "$bin_version" = "$version" ] &&
        pass "11: dpkg-query: chatd $pkg_version; chatd --version: $bin_version" ||
        fail "11: dpkg-query says $pkg_version, chatd --version $bin_version, Version.swift $version"
    [ "$(prop chatd.service FragmentPath)" = /lib/systemd/system/chatd.service ] &&
        pass "11: chatd.service from /lib/systemd/system" ||
        fail "11: chatd.service is $(prop chatd.service FragmentPath)"
    # `man chatd.toml` as the README's newcomer types it, and the command pages.
    local page
    for page in chatd.toml chatd chat chatctl; do
        inside 10 man -w "$page" >/dev/null 2>&1 && pass "11: man -w $page: $(inside 10 man -w "$page")" ||
            fail "11: man $page: no such page in the package"
    done
    inside 5 sh -c "mkdir -p $work && printf '[client]\ntimeout_ms = 300\nmax_attempts = 6\nbackoff = 2.0\nkeepalive_s = 2\n' >$client_conf"
}

step12_package_registry() {
    step "12. chat join alice, chatctl lookup, chatctl remove, lookup again"
    chat_as "$alice_ip" join alice
    if [ "$chat_rc" -eq 0 ] && [ "$(tail -n 1 <<<"$chat_out")" = alice ]; then
        pass "12: chat join alice --bind $alice_ip says alice"
    else
        fail "12: chat join alice --bind $alice_ip: exit $chat_rc, output: $chat_out"
        show_journal
    fi
    chatctl_as lookup alice
    if [ "$ctl_rc" -eq 0 ] && [ "$(tail -n 1 <<<"$ctl_out")" = "$alice_ip" ]; then
        pass "12: chatctl lookup alice: $alice_ip"
    else
        fail "12: chatctl lookup alice: exit $ctl_rc, output: $ctl_out (want $alice_ip, exit 0)"
    fi
    chatctl_as remove alice
    [ "$ctl_rc" -eq 0 ] && pass "12: chatctl remove alice${ctl_out:+: $ctl_out}" ||
        fail "12: chatctl remove alice: exit $ctl_rc, output: $ctl_out"
    chatctl_as lookup alice
    [ "$ctl_rc" -eq 65 ] && pass "12: chatctl lookup alice after the removal exits 65${ctl_out:+: $ctl_out}" ||
        fail "12: chatctl lookup alice after the removal: exit $ctl_rc (want 65), output: $ctl_out"
    chat_as "$alice_ip" connect
    [ "$chat_rc" -eq 3 ] && pass "12: chat connect --bind $alice_ip: no username any more (exit 3)" ||
        fail "12: chat connect --bind $alice_ip after the removal: exit $chat_rc (want 3), output: $chat_out"
    # bob is kept through the upgrade (step 13), remove (14), not purge (15).
    chat_as "$bob_ip" join bob
    [ "$chat_rc" -eq 0 ] && [ "$(tail -n 1 <<<"$chat_out")" = bob ] && pass "12: chat join bob --bind $bob_ip says bob" ||
        fail "12: chat join bob --bind $bob_ip: exit $chat_rc, output: $chat_out"

    # chatd-dbgsym: the package's binaries are stripped (Debian policy); with
    # the dbgsym package installed, the static backtracer finds the symbols
    # under /usr/lib/debug/.build-id and names the functions of a crash
    # trace. (Swift 6.3.1's backtracer takes no file:line from a separate
    # debug file, so unlike step 9's unstripped binary there is none.)
    local pid cursor entry
    pid=$(prop chatd.service MainPID)
    cursor=$(journal_cursor)
    inside 5 kill -SEGV "$pid"
    if entry=$(journal_wait 10 "$cursor" "MESSAGE~=Server.run() + "); then
        pass "12: with chatd-dbgsym, the crash trace names the function: $entry"
    else
        fail "12: with chatd-dbgsym installed, the crash trace has no frame naming Server.run()"
        journal_wait 3 "$cursor" "MESSAGE~=Program crashed" >/dev/null && note "(the backtracer ran: 'Program crashed' is in the journal)"
    fi
    # Its Depends names chatd (= this version): out of the way of the upgrade.
    apt_inside 60 remove chatd-dbgsym
    [ "$apt_rc" -eq 0 ] || { fail "12: apt-get remove chatd-dbgsym exited $apt_rc"; tail -n 10 <<<"$apt_out" | indent; }
}

step13_package_upgrade() {
    step "13. upgrade to $upgrade_version while datagrams arrive: chatd restarts, its sockets do not"
    if ! make_upgrade_deb; then
        fail "13: could not make $upgrade_deb from $deb"
        return 1
    fi
    local pid0 pid1 sock0 sock1 ctl0 ctl1 ino0 ino1 out rc=0 window_end count=3000
    pid0=$(prop chatd.service MainPID)
    sock0=$(prop chatd.socket ActiveEnterTimestamp)
    ctl0=$(prop chatd-control.socket ActiveEnterTimestamp)
    ino0=$(socket_inode)
    # The sender (step 6's) sends 3000 CONNECTs over 30 s, each once, and
    # starts the upgrade at the 50th; every one must be answered exactly
    # once, those that came while chatd restarted by the new chatd.
    out=$(inside 240 env DEBIAN_FRONTEND=noninteractive python3 "$here/sender.py" --bind "$sender_ip" \
        --server 127.0.0.1 --port "$port" --count "$count" --interval 0.01 --restart-at 50 --deadline 30 -- \
        apt-get -q -y -o Dpkg::Use-Pty=0 install "$upgrade_deb" </dev/null 2>&1) || rc=$?
    grep '^sender:' <<<"$out" | indent
    pid1=$(prop chatd.service MainPID)
    sock1=$(prop chatd.socket ActiveEnterTimestamp)
    ctl1=$(prop chatd-control.socket ActiveEnterTimestamp)
    ino1=$(socket_inode)
    local pkg_version
    pkg_version=$(inside 5 dpkg-query -W -f='${Version}' chatd)
    if [ "$pkg_version" = "$upgrade_version" ]; then
        pass "13: apt-get install $(basename "$upgrade_deb"): chatd $version → $pkg_version"
    else
        fail "13: after the upgrade dpkg-query says chatd $pkg_version, not $upgrade_version:"
        grep -v '^sender:' <<<"$out" | tail -n 20 | indent
    fi
    if [ "$pid1" != "$pid0" ] && [ -n "$pid1" ] && [ "$pid1" != 0 ]; then
        pass "13: chatd.service was restarted (MainPID $pid0 → $pid1)"
    else
        fail "13: chatd.service's MainPID is $pid1 (was $pid0): not restarted by the upgrade"
    fi
    [ -n "$sock0" ] && [ "$sock1" = "$sock0" ] && pass "13: chatd.socket was not stopped (active since $sock1)" ||
        fail "13: chatd.socket's ActiveEnterTimestamp changed: '$sock0' → '$sock1'"
    [ -n "$ctl0" ] && [ "$ctl1" = "$ctl0" ] && pass "13: chatd-control.socket was not stopped (active since $ctl1)" ||
        fail "13: chatd-control.socket's ActiveEnterTimestamp changed: '$ctl0' → '$ctl1'"
    [ -n "$ino0" ] && [ "$ino1" = "$ino0" ] && pass "13: port $port is the same socket ($ino1)" ||
        fail "13: port $port's socket changed: '$ino0' → '$ino1'"
    # The upgrade must have ended while the sender was still sending, or the
    # restart may have fallen after the last datagram.
    window_end=$(grep -o 'ids [0-9]*\.\.[0-9]*' <<<"$out" | sed 's/.*\.\.//')
    if [ "$rc" -eq 0 ] && [ -n "$window_end" ] && [ "$window_end" -lt "$count" ]; then
        pass "13: every one of the $count datagrams answered exactly once, the upgrade (and restart) within them"
    elif [ "$rc" -eq 0 ]; then
        fail "13: the upgrade did not end before the last datagram (ids ..${window_end:-?} of $count): the restart may not have been covered"
    else
        fail "13: datagrams lost or answered twice across the upgrade (sender exit $rc)"
        grep -v '^sender:' <<<"$out" | tail -n 20 | indent
        show_journal
    fi
    local state
    state=$(inside 10 systemctl is-active chatd chatd.socket chatd-control.socket | tr '\n' ' ')
    [ "$state" = "active active active " ] && pass "13: after the upgrade: $state" || fail "13: after the upgrade: $state"
    chat_as "$bob_ip" connect
    [ "$chat_rc" -eq 0 ] && [ "$(tail -n 1 <<<"$chat_out")" = bob ] && pass "13: chat connect --bind $bob_ip still says bob" ||
        fail "13: chat connect --bind $bob_ip after the upgrade: exit $chat_rc, output: $chat_out"
    chatctl_as lookup bob
    [ "$ctl_rc" -eq 0 ] && [ "$(tail -n 1 <<<"$ctl_out")" = "$bob_ip" ] && pass "13: chatctl lookup bob: $bob_ip" ||
        fail "13: chatctl lookup bob after the upgrade: exit $ctl_rc, output: $ctl_out (want $bob_ip)"
}

step14_package_remove() {
    step "14. apt-get remove chatd: stopped; the config and the state stay"
    apt_inside 120 remove chatd
    if [ "$apt_rc" -eq 0 ]; then
        pass "14: apt-get remove chatd"
    else
        fail "14: apt-get remove chatd exited $apt_rc:"
        tail -n 20 <<<"$apt_out" | indent
    fi
    local status state
    status=$(inside 5 dpkg-query -W -f='${db:Status-Abbrev}' chatd 2>/dev/null || true)
    [ "$status" = "rc " ] && pass "14: dpkg: chatd removed, its config files kept (status '$status')" ||
        fail "14: dpkg status of chatd is '$status', not 'rc '"
    state=$(units_state)
    [ "$state" = "chatd.service=inactive chatd.socket=inactive chatd-control.socket=inactive" ] &&
        pass "14: $state" || fail "14: not stopped: $state"
    inside 5 test -e /usr/bin/chatd && fail "14: /usr/bin/chatd is still there" || pass "14: /usr/bin/chatd is gone"
    inside 5 test -f /etc/chatd/chatd.toml && pass "14: /etc/chatd/chatd.toml is kept" ||
        fail "14: /etc/chatd/chatd.toml is gone after remove"
    if inside 5 grep -q '"bob"' /var/lib/private/chatd/registry.json; then
        pass "14: /var/lib/private/chatd is kept, its registry.json holds bob"
    else
        fail "14: /var/lib/private/chatd/registry.json is gone or lacks bob after remove:"
        inside 5 ls -la /var/lib/private/chatd 2>&1 | indent || true
    fi
}

step15_package_purge() {
    step "15. apt-get purge chatd: the config and the state are gone"
    apt_inside 120 purge chatd
    if [ "$apt_rc" -eq 0 ]; then
        pass "15: apt-get purge chatd"
    else
        fail "15: apt-get purge chatd exited $apt_rc:"
        tail -n 20 <<<"$apt_out" | indent
    fi
    local status left=() path
    status=$(inside 5 dpkg-query -W -f='${db:Status-Abbrev}' chatd 2>/dev/null || true)
    [ -z "$status" ] || [ "$status" = "un " ] || [ "$status" = "pn " ] && pass "15: dpkg no longer knows chatd${status:+ (status '$status')}" ||
        fail "15: dpkg status of chatd is '$status' after purge"
    for path in /etc/chatd /var/lib/private/chatd /var/lib/chatd /etc/systemd/system/sockets.target.wants/chatd.socket \
        /etc/systemd/system/sockets.target.wants/chatd-control.socket /etc/systemd/system/multi-user.target.wants/chatd.service; do
        inside 5 test -e "$path" -o -L "$path" && left+=("$path")
    done
    [ ${#left[@]} -eq 0 ] && pass "15: gone: /etc/chatd, /var/lib/private/chatd, /var/lib/chatd and the units' enablement links" ||
        fail "15: left after purge: ${left[*]}"
}

main() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "run.sh: must run as root (it boots systemd in namespaces)" >&2
        exit 1
    fi
    local tool
    for tool in unshare nsenter findmnt timeout python3 ip dpkg-deb; do
        command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing" >&2; exit 1; }
    done
    # `make system-test` has built already (and made the package); run by
    # hand, build here, on the host: inside, make install must only copy.
    if [ -z "${MAKELEVEL:-}" ]; then
        make -C "$repo" deb
    fi
    host_mounts_before=$(host_mounts)
    host_cgroups_before=$(host_cgroups)
    trap on_exit EXIT
    trap 'exit 130' INT TERM HUP

    if boot && install_chatd; then
        step1_start
        step2_join
        step3_journal
        step4_reload
        step5_watchdog
        step6_restart_under_load
        step7_stop
        step8_security
        step9_crash_trace
        step10_chat
        step10b_control
    else
        fail "steps 1-10 not run: boot or install failed"
        [ -n "$ns_pid" ] && show_journal 15
    fi

    # The package's life cycle, in a namespace booted afresh (see above).
    teardown
    cgroup_rel=() ns_pid= ns_pid_ns=
    if boot && package_prepare; then
        step12_package_registry
        step13_package_upgrade
        step14_package_remove
        step15_package_purge
    else
        fail "steps 12-15 not run: boot or the package's install failed"
        [ -n "$ns_pid" ] && show_journal 15
    fi
    finished=1
}

# Sourced (by someone debugging the harness), it only defines the functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
