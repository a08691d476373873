// CSystemd: libsystemd (pkg-config `libsystemd`, Debian `libsystemd-dev`).
#pragma once
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
