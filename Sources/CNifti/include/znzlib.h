// Forwards to nifticlib's znzlib.h: nifti2_io.h includes it as <znzlib.h>, and Debian installs it
// in /usr/include/nifti, which is not on the include path (nifticlib ships no pkg-config file).
#pragma once
#include "/usr/include/nifti/znzlib.h"
