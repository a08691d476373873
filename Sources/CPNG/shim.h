// CPNG: libpng 1.6 (pkg-config `libpng`, Debian `libpng-dev`).
#pragma once
#include <png.h>
