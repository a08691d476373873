// CDBus: libdbus-1 (pkg-config `dbus-1`, Debian `libdbus-1-dev`).
#pragma once
#include <dbus/dbus.h>
