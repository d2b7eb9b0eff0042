#!/usr/bin/env bash
# Runs as PID 1 of the namespaces Tests/system/run.sh creates with unshare:
# makes the machine's files read-only or private for this namespace, then
# execs systemd, which boots into a small target of our own.
#
#   boot.sh CHECKOUT TARGET
#
# Everything here is mounted in a private mount namespace (unshare
# --propagation private), so none of it is visible outside, and it all goes
# away with the namespace. The rule: whatever the booted system or the test
# may write lands in a tmpfs (/run, /tmp, /var/tmp, /dev, the overlays' upper
# layers), what is global to the kernel (/sys, /proc/sys) is read-only, and
# nothing is remounted without MS_BIND (that would change the machine's
# superblock; /sys/fs/cgroup gets a tmpfs of its own for that reason).
set -euo pipefail

checkout=$1
target=$2
name=chatd-system-test

say() { echo "boot.sh: $*" >&2; }

# The checkout may lie under /tmp or /run, which are about to be hidden by
# tmpfs mounts: hold it by a file descriptor, and bind-mount it back at its
# own path at the end (see there).
exec 3<"$checkout"

# /run: systemd's runtime state, and ours (/run/chatd-test: the overlays'
# upper layers, the test's files). A tmpfs, as on a booted machine.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/chatd-test/overlay

# Overlays: `make install` writes /usr and /etc, chatd writes /var/lib, and
# the booted system writes bits of /etc and /var; all of it goes to upper
# layers in /run. /var as a whole (not only /var/lib) so that /var/log,
# /var/cache and the like are not written either.
for dir in usr etc var; do
    mkdir -p "/run/chatd-test/overlay/$dir/upper" "/run/chatd-test/overlay/$dir/work"
    mount -t overlay "overlay-$name-$dir" \
        -o "lowerdir=/$dir,upperdir=/run/chatd-test/overlay/$dir/upper,workdir=/run/chatd-test/overlay/$dir/work" \
        "/$dir"
done

# Private /tmp: systemd-tmpfiles and PrivateTmp= services clean /tmp at boot;
# without this they would wipe the machine's /tmp.
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
mkdir -p /var/log/journal
mount -t tmpfs -o mode=2755,nosuid,nodev tmpfs /var/log/journal

# A fstab without entries: no systemd-remount-fs or fsck acting on the
# machine's file systems (a remount without MS_BIND changes the superblock,
# which the host shares).
: >/etc/fstab

# Private /dev with the basic nodes only, as systemd-nspawn does: nothing the
# booted system does (static nodes, /dev/log, kmsg) reaches the machine's /dev.
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev
for node in "null c 1 3" "zero c 1 5" "full c 1 7" "random c 1 8" "urandom c 1 9" "tty c 5 0"; do
    set -- $node
    mknod -m 0666 "/dev/$1" "$2" "$3" "$4"
done
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t mqueue -o nosuid,nodev,noexec mqueue /dev/mqueue
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr

# A /sys/fs/cgroup of our own: on a legacy or hybrid cgroup machine systemd
# mounts the controllers it misses there and then remounts that tmpfs
# read-only, and a remount changes the superblock, which the machine shares:
# the machine's /sys/fs/cgroup would end up read-only with new directories.
# So: a new tmpfs with the machine's hierarchies bind-mounted into it (still
# the real cgroups; run.sh made one for systemd to live in).
if [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ]; then
    host_cgroup=/run/chatd-test/host-cgroup
    mkdir -p "$host_cgroup"
    mount --rbind /sys/fs/cgroup "$host_cgroup"
    mount -t tmpfs -o mode=0755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup
    for entry in "$host_cgroup"/*; do
        if [ -L "$entry" ]; then
            ln -s "$(readlink "$entry")" "/sys/fs/cgroup/${entry##*/}"
        elif mountpoint -q "$entry"; then
            mkdir "/sys/fs/cgroup/${entry##*/}"
            mount --bind "$entry" "/sys/fs/cgroup/${entry##*/}"
        fi
    done
    umount -R "$host_cgroup"
    rmdir "$host_cgroup"
fi

# Kernel-global settings read-only, as in any container: systemd-sysctl,
# systemd-binfmt and PID 1 itself (fs.nr_open, fs.file-max) would otherwise
# change the machine's kernel. Bind remounts (MS_BIND) only change this
# namespace's view, never the superblock. /sys/fs/cgroup stays writable:
# systemd needs it, inside the cgroup run.sh made for it.
mount -o remount,bind,ro /sys
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
if [ -e /proc/sysrq-trigger ]; then
    mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
    mount -o remount,bind,ro /proc/sysrq-trigger
fi

# The checkout at the same path as outside, hidden or not by the mounts
# above: `make install` runs `swift build`, and SwiftPM keys its build state
# by the package's absolute path; under another path it would rebuild
# everything into the machine's .build, with clashing module caches.
# (--no-canonicalize: mount(8) would otherwise turn /proc/self/fd/3 into the
# path it names, which now leads to the new, empty directory.)
checkout_id=$(stat -L -c %d:%i /proc/self/fd/3)
if [ "$checkout_id" != "$(stat -c %d:%i "$checkout" 2>/dev/null)" ]; then
    mkdir -p "$checkout"
    mount --no-canonicalize --bind /proc/self/fd/3 "$checkout"
    if [ "$checkout_id" != "$(stat -c %d:%i "$checkout")" ]; then
        say "could not make the checkout visible at $checkout"
        exit 1
    fi
fi
exec 3<&-

hostname "$name"
# The private network namespace has only lo, down; port 7447 is ours alone.
ip link set lo up

# journald keeps the journal in /run only.
mkdir -p /run/systemd/journald.conf.d /run/systemd/system
cat >/run/systemd/journald.conf.d/chatd-system-test.conf <<'EOF'
[Journal]
Storage=volatile
# The test reads every entry back: none may be dropped by rate limiting.
RateLimitIntervalSec=0
EOF

# The target we boot into: the journal and nothing else. Services still pull
# in sysinit.target (DefaultDependencies=yes), so the units of sysinit.target
# that would touch the machine or only slow the boot down are masked below.
cat >"/run/systemd/system/$target" <<'EOF'
[Unit]
Description=chatd system test
Wants=systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service
After=systemd-journald.service
AllowIsolate=yes
EOF

masked=(
    # kernel state: modules, sysctls, binfmt, device nodes, udev
    systemd-modules-load.service kmod-static-nodes.service systemd-sysctl.service
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount
    systemd-tmpfiles-setup-dev.service systemd-udevd.service systemd-udev-trigger.service
    systemd-udev-settle.service systemd-udevd-control.socket systemd-udevd-kernel.socket
    systemd-hwdb-update.service systemd-journald-audit.socket
    # file systems and files outside the overlays (/home, /srv, /root: tmpfiles)
    systemd-remount-fs.service systemd-fsck-root.service systemd-tmpfiles-setup.service
    systemd-tmpfiles-clean.timer systemd-update-utmp.service systemd-random-seed.service
    systemd-pstore.service systemd-repart.service systemd-firstboot.service
    systemd-machine-id-commit.service systemd-pcrphase.service systemd-pcrphase-sysinit.service
    systemd-timesyncd.service ldconfig.service systemd-journal-catalog-update.service
    systemd-update-done.service systemd-boot-system-token.service
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount
    sys-fs-fuse-connections.mount dev-hugepages.mount
)
for unit in "${masked[@]}"; do
    ln -sf /dev/null "/run/systemd/system/$unit"
done

say "booting systemd into $target"
# container= tells systemd it is not the machine's init: no /dev/console
# handling, no unmounting or remounting at shutdown, no clock setup.
exec env -i container="$name" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --unit="$target" --show-status=no
