#ifndef CHATD_CLINUX_SHIM_H
#define CHATD_CLINUX_SHIM_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

// recvmmsg and sendmmsg are GNU extensions that Swift's Glibc module, built
// without _GNU_SOURCE, does not declare. The struct below copies the layout
// of struct mmsghdr, which the kernel reads and writes, and the calls go
// straight to the system calls. layout_checks.c fails the build if the copy
// ever stops matching.
struct chatd_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};

static inline int chatd_recvmmsg(int fd, struct chatd_mmsghdr *vector, unsigned int count, int flags) {
    return (int)syscall(SYS_recvmmsg, fd, vector, count, flags, (void *)0);
}

static inline int chatd_sendmmsg(int fd, struct chatd_mmsghdr *vector, unsigned int count, int flags) {
    return (int)syscall(SYS_sendmmsg, fd, vector, count, flags);
}

// sync_file_range, also GNU-only: starts (and waits for) writeback of part of
// a file, so a large write reaches the disk in steps instead of one burst.
static inline int chatd_sync_file_range(int fd, long long offset, long long length, unsigned int flags) {
    return (int)syscall(SYS_sync_file_range, fd, offset, length, flags);
}
// accept4 and struct ucred (SO_PEERCRED's answer) are GNU-only too. The
// struct copies ucred's layout: pid, uid, gid, as the kernel fills them.
static inline int chatd_accept4(int fd, int flags) {
    return (int)syscall(SYS_accept4, fd, (void *)0, (void *)0, flags);
}
struct chatd_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
};
#ifndef SO_PEERCRED
#define SO_PEERCRED 17
#endif
static inline int chatd_peer_credentials(int fd, struct chatd_ucred *credentials) {
    socklen_t length = sizeof *credentials;
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, credentials, &length);
}

enum {
    CHATD_SYNC_FILE_RANGE_WAIT_BEFORE = 1,
    CHATD_SYNC_FILE_RANGE_WRITE = 2,
    CHATD_SYNC_FILE_RANGE_WAIT_AFTER = 4,
};
#endif
