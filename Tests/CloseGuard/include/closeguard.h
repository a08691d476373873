// CloseGuard: links a checking close(2) into the test process (see closeguard.c).
#pragma once
/// Referenced from Swift so that the linker keeps this object (and its `close`) in the test binary.
int closeguard_installed(void);
