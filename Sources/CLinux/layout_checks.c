// Compile-time proof that struct chatd_mmsghdr (shim.h) has the layout of the
// C library's struct mmsghdr, the one the kernel fills in for recvmmsg and
// reads for sendmmsg. A wrong copy would not fail any call: the kernel would
// write each datagram's length at the wrong offset, or walk the vector with
// the wrong stride. So the build fails instead.
//
// The comparison lives in this file, not in shim.h, because struct mmsghdr
// is declared only with _GNU_SOURCE, and shim.h is also read by Swift's
// importer alongside a Glibc module built without it.

#define _GNU_SOURCE
#include <stddef.h>
#include <sys/socket.h>

#include "shim.h"

_Static_assert(sizeof(struct chatd_mmsghdr) == sizeof(struct mmsghdr),
               "struct chatd_mmsghdr and struct mmsghdr differ in size");
_Static_assert(_Alignof(struct chatd_mmsghdr) == _Alignof(struct mmsghdr),
               "struct chatd_mmsghdr and struct mmsghdr differ in alignment");
_Static_assert(offsetof(struct chatd_mmsghdr, msg_hdr) == offsetof(struct mmsghdr, msg_hdr),
               "msg_hdr is at a different offset in struct chatd_mmsghdr");
_Static_assert(offsetof(struct chatd_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len),
               "msg_len is at a different offset in struct chatd_mmsghdr");
_Static_assert(sizeof(((struct chatd_mmsghdr *)0)->msg_len) == sizeof(((struct mmsghdr *)0)->msg_len),
               "msg_len has a different size in struct chatd_mmsghdr");

// The same proof for struct chatd_ucred and struct ucred (SO_PEERCRED).
_Static_assert(sizeof(struct chatd_ucred) == sizeof(struct ucred), "struct chatd_ucred and struct ucred differ in size");
_Static_assert(offsetof(struct chatd_ucred, uid) == offsetof(struct ucred, uid), "uid is at a different offset");
_Static_assert(offsetof(struct chatd_ucred, gid) == offsetof(struct ucred, gid), "gid is at a different offset");
_Static_assert(SO_PEERCRED == 17, "SO_PEERCRED differs from shim.h's fallback");
