// CSystemIO: the raw calls under SystemIO's descriptor registry.
#pragma once

/// close(2) as a system call: the close of a descriptor's registered owner. It does not pass
/// through an interposed `close` (Tests/CloseGuard), which checks everybody else's.
int csio_owner_close(int fd);

/// The check an interposed `close` runs: `phase` 0 before closing `fd`, 1 after a close that
/// failed with EBADF. Set by SystemIO when checking is on; NULL otherwise.
typedef void (*csio_close_check)(int fd, int phase);
void csio_set_close_check(csio_close_check check);
csio_close_check csio_get_close_check(void);

/// Writes `message` and a native backtrace to stderr and aborts.
void csio_fail(const char *message) __attribute__((noreturn));
