// CBLAS: OpenBLAS's C interface (pkg-config `openblas`, Debian `libopenblas-dev`).
#pragma once
#include <cblas.h>
