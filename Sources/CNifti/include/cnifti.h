// CNifti: nifticlib 2 (Debian libnifti2-dev), which reads NIfTI-1 and NIfTI-2 (.nii, .nii.gz) and
// writes them. Debian installs its headers in /usr/include/nifti with no pkg-config file, and
// nifti2_io.h includes <znzlib.h>: the znzlib.h beside this header forwards to it.
#pragma once
#include "/usr/include/nifti/nifti2_io.h"

/// Closes a znzFile (znzclose is a macro taking an lvalue).
int cnifti_close(znzFile file);
/// Whether a znzFile is null (znz_isnull is a macro).
int cnifti_is_null(znzFile file);
