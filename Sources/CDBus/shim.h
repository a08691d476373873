// CDBus: libdbus-1 (pkg-config `dbus-1`, Debian `libdbus-1-dev`).
//
// Besides the libdbus header this shim re-exports the DBUS_TYPE_* codes as enum values (the
// originals are `((int) 'c')` macros that Swift does not import) and a few static inline helpers
// for Linux calls the Bus target needs (eventfd wake-up, sealed memfds, fcntl without varargs).
#pragma once
#include <dbus/dbus.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

/// D-Bus type codes, as plain ints (the values of the DBUS_TYPE_* macros).
enum {
    CDBUS_TYPE_INVALID = 0,
    CDBUS_TYPE_BYTE = 'y',
    CDBUS_TYPE_BOOLEAN = 'b',
    CDBUS_TYPE_INT16 = 'n',
    CDBUS_TYPE_UINT16 = 'q',
    CDBUS_TYPE_INT32 = 'i',
    CDBUS_TYPE_UINT32 = 'u',
    CDBUS_TYPE_INT64 = 'x',
    CDBUS_TYPE_UINT64 = 't',
    CDBUS_TYPE_DOUBLE = 'd',
    CDBUS_TYPE_STRING = 's',
    CDBUS_TYPE_OBJECT_PATH = 'o',
    CDBUS_TYPE_SIGNATURE = 'g',
    CDBUS_TYPE_UNIX_FD = 'h',
    CDBUS_TYPE_ARRAY = 'a',
    CDBUS_TYPE_VARIANT = 'v',
    CDBUS_TYPE_STRUCT = 'r',
    CDBUS_TYPE_DICT_ENTRY = 'e',
};

/// Timeouts accepted by dbus_connection_send_with_reply, as plain ints.
enum {
    CDBUS_TIMEOUT_INFINITE = 0x7fffffff,
    CDBUS_TIMEOUT_USE_DEFAULT = -1,
};

/// Creates a non-blocking, close-on-exec eventfd; returns -1 and sets errno on failure.
static inline int cdbus_eventfd_create(void) {
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

/// Adds one to an eventfd counter, waking a poll() on it; ignores EAGAIN (already signalled).
static inline void cdbus_eventfd_signal(int fd) {
    uint64_t one = 1;
    ssize_t n;
    do { n = write(fd, &one, sizeof one); } while (n < 0 && errno == EINTR);
}

/// Resets an eventfd counter to zero (non-blocking).
static inline void cdbus_eventfd_drain(int fd) {
    uint64_t value;
    ssize_t n;
    do { n = read(fd, &value, sizeof value); } while (n < 0 && errno == EINTR);
}

/// memfd_create(2) through syscall(2), so no _GNU_SOURCE is needed; close-on-exec, sealable.
static inline int cdbus_memfd_create(const char *name) {
    return (int)syscall(SYS_memfd_create, name, 0x0001U /* MFD_CLOEXEC */ | 0x0002U /* MFD_ALLOW_SEALING */);
}

/// Seals a memfd against shrinking, growing, writing and further sealing; returns 0 or -1.
static inline int cdbus_memfd_seal(int fd) {
    // F_ADD_SEALS = F_LINUX_SPECIFIC_BASE + 9; F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE.
    return fcntl(fd, 1024 + 9, 0x0001 | 0x0002 | 0x0004 | 0x0008);
}

/// The seals of a memfd (F_GET_SEALS), or -1 if the descriptor is not sealable.
static inline int cdbus_memfd_get_seals(int fd) {
    return fcntl(fd, 1024 + 10);
}

/// dup(2) with close-on-exec set (F_DUPFD_CLOEXEC), without C varargs in Swift.
static inline int cdbus_dup_cloexec(int fd) {
    return fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

/// pipe2(2) with O_CLOEXEC through syscall(2); returns 0 or -1.
static inline int cdbus_pipe_cloexec(int fds[2]) {
    return (int)syscall(SYS_pipe2, fds, O_CLOEXEC);
}
