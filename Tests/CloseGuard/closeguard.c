// CloseGuard: close(2) for the test process, interposed over the C library's (the test binary
// defines `close`, so every library in the process — Foundation, libdbus, ours — calls this one).
//
// With SystemIO's checking on, a close of a descriptor the registry knows as owned (by a
// FileDescriptor or by the scope that opened it) is a close by someone who does not own it: the
// owners close through csio_owner_close, a system call that does not come here. So are closes of
// numbers that are not open (EBADF): a double close, which closes somebody else's descriptor as
// soon as the number has been reused. Either way the process stops, with the descriptor, its owner
// and a backtrace (issue 21). Without checking, this is close(2).
#define _GNU_SOURCE
#include "closeguard.h"
#include "csystemio.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

int closeguard_installed(void) { return 1; }

int close(int fd) {
    csio_close_check check = csio_get_close_check();
    if (check && fd >= 0) check(fd, 0);
    int r = (int)syscall(SYS_close, fd);
    if (r != 0 && errno == EBADF && check && fd >= 0) {
        int saved = errno;
        check(fd, 1);
        errno = saved;
    }
    return r;
}
