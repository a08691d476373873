// CSystemIO: see include/csystemio.h.
#define _GNU_SOURCE
#include "csystemio.h"

#include <execinfo.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static _Atomic(csio_close_check) close_check = NULL;

int csio_owner_close(int fd) {
    return (int)syscall(SYS_close, fd);
}

void csio_set_close_check(csio_close_check check) {
    atomic_store(&close_check, check);
}

csio_close_check csio_get_close_check(void) {
    return atomic_load(&close_check);
}

void csio_fail(const char *message) {
    size_t n = strlen(message);
    while (n > 0) {
        ssize_t w = write(2, message, n);
        if (w <= 0) break;
        message += w;
        n -= (size_t)w;
    }
    void *frames[64];
    int count = backtrace(frames, 64);
    backtrace_symbols_fd(frames, count, 2);
    abort();
}
