// CDICOMWriter: DICOM CT slices written through GDCM (Debian libgdcm-dev), behind a small C API.
// Used by affinity-lab's phantom-scan command only (it is not part of the library product): one
// slice per call, encoded in memory in the transfer syntax asked for; the caller writes the bytes
// to disk (temporary name, fsync, rename).
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The transfer syntaxes the writer produces (all lossless).
typedef enum {
    /// Explicit VR Little Endian (1.2.840.10008.1.2.1), uncompressed.
    CDW_EXPLICIT_LITTLE_ENDIAN = 0,
    /// JPEG Lossless, Non-Hierarchical, First-Order Prediction (process 14, selection value 1;
    /// 1.2.840.10008.1.2.4.70).
    CDW_JPEG_LOSSLESS_SV1 = 1,
    /// JPEG-LS Lossless (1.2.840.10008.1.2.4.80).
    CDW_JPEG_LS_LOSSLESS = 2,
    /// JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.90).
    CDW_JPEG_2000_LOSSLESS = 3,
} cdw_syntax;

/// One axial CT slice: its geometry and identity. Strings are NUL-terminated; UIDs must be valid
/// (digits and dots, at most 64 characters).
typedef struct {
    int32_t rows;
    int32_t columns;
    /// PixelSpacing (0028,0030): mm between rows, mm between columns.
    double pixel_spacing_row;
    double pixel_spacing_column;
    /// SliceThickness (0018,0050), mm.
    double slice_thickness;
    /// ImagePositionPatient (0020,0032): the centre of the first pixel, mm (LPS).
    double position[3];
    /// ImageOrientationPatient (0020,0037): row direction, then column direction (LPS).
    double orientation[6];
    /// RescaleIntercept (0028,1052) and RescaleSlope (0028,1053): HU = stored · slope + intercept.
    double rescale_intercept;
    double rescale_slope;
    /// WindowCenter / WindowWidth (0028,1050 / 0028,1051), HU.
    double window_center;
    double window_width;
    /// InstanceNumber (0020,0013), SeriesNumber (0020,0011).
    int32_t instance_number;
    int32_t series_number;
    const char *sop_instance_uid;
    const char *series_instance_uid;
    const char *study_instance_uid;
    const char *frame_of_reference_uid;
    const char *patient_name;
    const char *patient_id;
    const char *series_description;
    /// StudyDate / SeriesDate (YYYYMMDD) and StudyTime (HHMMSS).
    const char *study_date;
    const char *study_time;
} cdw_slice;

/// Encodes one slice (rows × columns signed 16-bit stored values, row-major, rows top to bottom)
/// as a DICOM file (CT Image Storage, MONOCHROME2) in `syntax`.
/// On success returns 0 and sets *out (free it with cdw_free) and *length. On failure returns a
/// non-zero code and writes a sentence (NUL-terminated) into `error` (`error_size` bytes):
/// 1 bad arguments, 2 GDCM could not compress, 3 GDCM could not write, 4 out of memory.
int cdw_encode(const cdw_slice *slice, const int16_t *stored, cdw_syntax syntax, uint8_t **out, size_t *length,
               char *error, size_t error_size);

/// Frees what cdw_encode returned.
void cdw_free(uint8_t *bytes);

/// The UID of `syntax` (a static string; NULL for an unknown value).
const char *cdw_syntax_uid(cdw_syntax syntax);

/// "GDCM <version>".
const char *cdw_library_version(void);

#ifdef __cplusplus
}
#endif
