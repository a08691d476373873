// CDICOMWriter: see include/cdicomwriter.h.
//
// A slice becomes a gdcm::Image (signed 16-bit, MONOCHROME2, Explicit VR Little Endian) carrying its
// geometry (spacing, origin, direction cosines) and Modality LUT (intercept, slope); a
// gdcm::ImageChangeTransferSyntax compresses it when another syntax is asked for; a
// gdcm::ImageWriter writes it, as CT Image Storage, into an in-memory stream, with the identity and
// patient attributes of the CT Image IOD that GDCM does not derive from the image. No C++
// exception leaves a C entry point.

#include "cdicomwriter.h"

#include <gdcmConfigure.h>
#include <gdcmDataElement.h>
#include <gdcmDataSet.h>
#include <gdcmFile.h>
#include <gdcmImage.h>
#include <gdcmImageChangeTransferSyntax.h>
#include <gdcmImageWriter.h>
#include <gdcmPhotometricInterpretation.h>
#include <gdcmPixelFormat.h>
#include <gdcmSmartPointer.h>
#include <gdcmTag.h>
#include <gdcmTrace.h>
#include <gdcmTransferSyntax.h>
#include <gdcmVR.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <sstream>
#include <string>

namespace {

/// GDCM's global tables and trace switches are not documented as thread-safe: one call at a time.
std::mutex gdcmLock;

const char *const ctImageStorage = "1.2.840.10008.5.1.4.1.1.2";

struct Failure {
    int code;
    std::string message;
};

void report(char *error, size_t size, const std::string &message) {
    if (error == nullptr || size == 0) return;
    std::snprintf(error, size, "%s", message.c_str());
}

/// A valid UID: 1 to 64 characters, components of digits separated by single dots, no leading
/// zero in a component of more than one digit.
bool validUID(const char *uid) {
    if (uid == nullptr) return false;
    const size_t n = std::strlen(uid);
    if (n == 0 || n > 64) return false;
    size_t start = 0;
    for (size_t i = 0; i <= n; ++i) {
        if (i == n || uid[i] == '.') {
            const size_t len = i - start;
            if (len == 0) return false;
            if (len > 1 && uid[start] == '0') return false;
            start = i + 1;
        } else if (uid[i] < '0' || uid[i] > '9') {
            return false;
        }
    }
    return true;
}

/// A decimal string (DS) of at most 16 characters for `v`.
std::string decimal(double v) {
    if (!std::isfinite(v)) throw Failure{1, "a decimal attribute is not finite"};
    char buffer[64];
    for (int precision = 10; precision >= 1; --precision) {
        std::snprintf(buffer, sizeof buffer, "%.*g", precision, v);
        if (std::strlen(buffer) <= 16) return buffer;
    }
    throw Failure{1, "a decimal attribute does not fit 16 characters"};
}

std::string decimals(const double *v, int count) {
    std::string s;
    for (int i = 0; i < count; ++i) {
        if (i > 0) s += '\\';
        s += decimal(v[i]);
    }
    return s;
}

/// Puts (group, element) with `vr` and `value` into `ds`, padded to an even length (UI with NUL,
/// the other string VRs with a space).
void put(gdcm::DataSet &ds, uint16_t group, uint16_t element, gdcm::VR::VRType vr, const std::string &value) {
    std::string padded = value;
    if (padded.size() % 2 == 1) padded += (vr == gdcm::VR::UI ? '\0' : ' ');
    gdcm::DataElement de(gdcm::Tag(group, element));
    de.SetVR(gdcm::VR(vr));
    de.SetByteValue(padded.data(), uint32_t(padded.size()));
    ds.Replace(de);
}

gdcm::TransferSyntax::TSType syntaxType(cdw_syntax syntax) {
    switch (syntax) {
    case CDW_EXPLICIT_LITTLE_ENDIAN: return gdcm::TransferSyntax::ExplicitVRLittleEndian;
    case CDW_JPEG_LOSSLESS_SV1: return gdcm::TransferSyntax::JPEGLosslessProcess14_1;
    case CDW_JPEG_LS_LOSSLESS: return gdcm::TransferSyntax::JPEGLSLossless;
    case CDW_JPEG_2000_LOSSLESS: return gdcm::TransferSyntax::JPEG2000Lossless;
    }
    return gdcm::TransferSyntax::TS_END;
}

std::string text(const char *s, const char *fallback = "") { return s != nullptr ? std::string(s) : std::string(fallback); }

std::string encode(const cdw_slice &s, const int16_t *stored, cdw_syntax syntax) {
    if (s.rows < 1 || s.columns < 1 || s.rows > 65535 || s.columns > 65535) throw Failure{1, "the slice size must be 1 to 65535 pixels per side"};
    if (stored == nullptr) throw Failure{1, "no pixel values were given"};
    if (!(s.pixel_spacing_row > 0) || !(s.pixel_spacing_column > 0) || !(s.slice_thickness > 0)) {
        throw Failure{1, "the pixel spacing and slice thickness must be positive"};
    }
    if (!(s.rescale_slope != 0) || !std::isfinite(s.rescale_slope) || !std::isfinite(s.rescale_intercept)) {
        throw Failure{1, "the rescale slope must be finite and non-zero and the intercept finite"};
    }
    const char *uids[] = {s.sop_instance_uid, s.series_instance_uid, s.study_instance_uid, s.frame_of_reference_uid};
    const char *uidNames[] = {"SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"};
    for (int i = 0; i < 4; ++i) {
        if (!validUID(uids[i])) throw Failure{1, std::string("the ") + uidNames[i] + " is not a valid UID"};
    }
    const gdcm::TransferSyntax::TSType ts = syntaxType(syntax);
    if (ts == gdcm::TransferSyntax::TS_END) throw Failure{1, "unknown transfer syntax"};

    // GDCM's filters and writer hold their images by intrusive reference count: heap objects only.
    gdcm::SmartPointer<gdcm::Image> input = new gdcm::Image;
    gdcm::Image &image = *input;
    image.SetNumberOfDimensions(2);
    image.SetDimension(0, unsigned(s.columns));
    image.SetDimension(1, unsigned(s.rows));
    image.SetPixelFormat(gdcm::PixelFormat(gdcm::PixelFormat::INT16));
    image.SetPhotometricInterpretation(gdcm::PhotometricInterpretation::MONOCHROME2);
    image.SetTransferSyntax(gdcm::TransferSyntax::ExplicitVRLittleEndian);
    // GDCM's spacing is (between columns, between rows, between slices).
    image.SetSpacing(0, s.pixel_spacing_column);
    image.SetSpacing(1, s.pixel_spacing_row);
    image.SetSpacing(2, s.slice_thickness);
    // (SetOrigin of an array copies only as many values as the image has dimensions: 2.)
    for (unsigned i = 0; i < 3; ++i) image.SetOrigin(i, s.position[i]);
    image.SetDirectionCosines(s.orientation);
    image.SetIntercept(s.rescale_intercept);
    image.SetSlope(s.rescale_slope);
    const size_t bytes = size_t(s.rows) * size_t(s.columns) * 2;
    std::string little(bytes, '\0');
    for (size_t i = 0; i < bytes / 2; ++i) {
        const uint16_t u = uint16_t(stored[i]);
        little[2 * i] = char(u & 0xFF);
        little[2 * i + 1] = char(u >> 8);
    }
    gdcm::DataElement pixels(gdcm::Tag(0x7FE0, 0x0010));
    pixels.SetVR(gdcm::VR::OW);
    pixels.SetByteValue(little.data(), uint32_t(little.size()));
    image.SetDataElement(pixels);

    gdcm::ImageChangeTransferSyntax change;
    const gdcm::Image *output = input;
    if (ts != gdcm::TransferSyntax::ExplicitVRLittleEndian) {
        change.SetTransferSyntax(gdcm::TransferSyntax(ts));
        change.SetInput(image);
        if (!change.Change()) {
            throw Failure{2, std::string("GDCM could not encode the slice as ") + gdcm::TransferSyntax::GetTSString(ts)};
        }
        output = &change.GetOutput();
    }

    gdcm::ImageWriter writer;
    writer.SetImage(*output);
    gdcm::DataSet &ds = writer.GetFile().GetDataSet();
    // The SOP class first: GDCM's writer places spacing, origin and rescale by the SOP class.
    put(ds, 0x0008, 0x0016, gdcm::VR::UI, ctImageStorage);
    put(ds, 0x0008, 0x0018, gdcm::VR::UI, s.sop_instance_uid);
    put(ds, 0x0008, 0x0008, gdcm::VR::CS, "ORIGINAL\\PRIMARY\\AXIAL");
    put(ds, 0x0008, 0x0020, gdcm::VR::DA, text(s.study_date));
    put(ds, 0x0008, 0x0021, gdcm::VR::DA, text(s.study_date));
    put(ds, 0x0008, 0x0030, gdcm::VR::TM, text(s.study_time));
    put(ds, 0x0008, 0x0031, gdcm::VR::TM, text(s.study_time));
    put(ds, 0x0008, 0x0050, gdcm::VR::SH, "");
    put(ds, 0x0008, 0x0060, gdcm::VR::CS, "CT");
    put(ds, 0x0008, 0x0070, gdcm::VR::LO, "LesionAffinity phantom");
    put(ds, 0x0008, 0x0090, gdcm::VR::PN, "");
    put(ds, 0x0008, 0x103E, gdcm::VR::LO, text(s.series_description));
    put(ds, 0x0010, 0x0010, gdcm::VR::PN, text(s.patient_name));
    put(ds, 0x0010, 0x0020, gdcm::VR::LO, text(s.patient_id));
    put(ds, 0x0010, 0x0030, gdcm::VR::DA, "");
    put(ds, 0x0010, 0x0040, gdcm::VR::CS, "O");
    put(ds, 0x0018, 0x0050, gdcm::VR::DS, decimal(s.slice_thickness));
    put(ds, 0x0018, 0x0060, gdcm::VR::DS, "120");
    put(ds, 0x0018, 0x5100, gdcm::VR::CS, "HFS");
    put(ds, 0x0020, 0x000D, gdcm::VR::UI, s.study_instance_uid);
    put(ds, 0x0020, 0x000E, gdcm::VR::UI, s.series_instance_uid);
    put(ds, 0x0020, 0x0010, gdcm::VR::SH, "1");
    put(ds, 0x0020, 0x0011, gdcm::VR::IS, std::to_string(s.series_number));
    put(ds, 0x0020, 0x0013, gdcm::VR::IS, std::to_string(s.instance_number));
    put(ds, 0x0020, 0x0052, gdcm::VR::UI, s.frame_of_reference_uid);
    put(ds, 0x0020, 0x1040, gdcm::VR::LO, "");
    // SliceLocation: the position along the normal (row × column direction).
    const double *r = s.orientation, *c = s.orientation + 3;
    const double n[3] = {r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]};
    put(ds, 0x0020, 0x1041, gdcm::VR::DS, decimal(n[0] * s.position[0] + n[1] * s.position[1] + n[2] * s.position[2]));
    put(ds, 0x0028, 0x1050, gdcm::VR::DS, decimal(s.window_center));
    put(ds, 0x0028, 0x1051, gdcm::VR::DS, decimal(s.window_width));
    put(ds, 0x0028, 0x1054, gdcm::VR::LO, "HU");

    std::ostringstream stream;
    writer.SetStream(stream);
    if (!writer.Write()) throw Failure{3, "GDCM could not write the slice"};
    return stream.str();
}

}  // namespace

extern "C" int cdw_encode(const cdw_slice *slice, const int16_t *stored, cdw_syntax syntax, uint8_t **out, size_t *length,
                          char *error, size_t error_size) {
    if (slice == nullptr || out == nullptr || length == nullptr) {
        report(error, error_size, "cdw_encode: a required argument is null");
        return 1;
    }
    *out = nullptr;
    *length = 0;
    try {
        std::string bytes;
        {
            std::lock_guard<std::mutex> guard(gdcmLock);
            gdcm::Trace::SetDebug(false);
            gdcm::Trace::SetWarning(false);
            gdcm::Trace::SetError(false);
            bytes = encode(*slice, stored, syntax);
        }
        auto *copy = static_cast<uint8_t *>(std::malloc(bytes.empty() ? 1 : bytes.size()));
        if (copy == nullptr) throw std::bad_alloc();
        std::memcpy(copy, bytes.data(), bytes.size());
        *out = copy;
        *length = bytes.size();
        return 0;
    } catch (const Failure &f) {
        report(error, error_size, f.message);
        return f.code;
    } catch (const std::bad_alloc &) {
        report(error, error_size, "out of memory");
        return 4;
    } catch (const std::exception &e) {
        report(error, error_size, std::string("GDCM failed: ") + e.what());
        return 3;
    } catch (...) {
        report(error, error_size, "GDCM failed with an unknown exception");
        return 3;
    }
}

extern "C" void cdw_free(uint8_t *bytes) { std::free(bytes); }

extern "C" const char *cdw_syntax_uid(cdw_syntax syntax) {
    switch (syntax) {
    case CDW_EXPLICIT_LITTLE_ENDIAN: return "1.2.840.10008.1.2.1";
    case CDW_JPEG_LOSSLESS_SV1: return "1.2.840.10008.1.2.4.70";
    case CDW_JPEG_LS_LOSSLESS: return "1.2.840.10008.1.2.4.80";
    case CDW_JPEG_2000_LOSSLESS: return "1.2.840.10008.1.2.4.90";
    }
    return nullptr;
}

extern "C" const char *cdw_library_version(void) { return "GDCM " GDCM_VERSION; }
