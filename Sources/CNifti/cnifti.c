// CNifti: see include/cnifti.h.
#include "cnifti.h"

int cnifti_close(znzFile file) { return Xznzclose(&file); }

int cnifti_is_null(znzFile file) { return znz_isnull(file); }
