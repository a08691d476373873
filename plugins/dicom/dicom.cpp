// dicom — image decoder for DICOM (PS3.10 files) through GDCM (Debian libgdcm-dev), behind the C ABI.
//
// What it reads: every transfer syntax GDCM 3 decodes — Implicit and Explicit VR Little Endian,
// Explicit VR Big Endian, Deflated Explicit VR Little Endian, JPEG Baseline, Extended, Lossless
// (process 14 and its selection value 1), JPEG-LS lossless and near-lossless, JPEG 2000 lossless and
// lossy, RLE Lossless — for monochrome images (MONOCHROME1, MONOCHROME2; one sample per pixel) of 8
// or 16 allocated bits (any bits stored, high bit = bits stored − 1), signed or unsigned, with one or
// more frames. Everything else gets a named AFFINITY_E_UNSUPPORTED that says what the object is:
// colour images (RGB, YBR, palette), objects without pixel data (structured reports, RT plans,
// waveforms, …), 1-bit segmentations, 32-bit RT doses, floating-point pixel data.
//
// Output: the Modality LUT applied exactly, value = stored · RescaleSlope + RescaleIntercept
// ((0028,1053)/(0028,1052), default 1/0; Hounsfield units for CT; for enhanced multi-frame objects the
// frame's Pixel Value Transformation), as float32 (`values`), or windowed (`decode`):
//   out = clamp((value − (centre − width/2)) / width, 0, 1), inverted for MONOCHROME1,
// with the lung window (centre −600 HU, width 1500 HU) unless the options say otherwise. A Modality
// LUT Sequence (0028,3000) in place of rescale slope and intercept is refused as unsupported.
// Options (JSON): "frame" (default 0), "window_center", "window_width".
//
// Safety. GDCM as Debian builds it keeps its assert()s, and some of them fire on truncated or
// malformed files (an abort, not an error). So no byte reaches GDCM before this file's own checks:
//  - the structure: a walk over the whole data set — every element, sequence, item and pixel-data
//    fragment inside the buffer, tags in order, explicit VRs valid and allowed by the data
//    dictionary — a deflated data set inflated first (zlib);
//  - the image attributes the pixels depend on (sizes, bits, samples, photometric interpretation,
//    frames, the pixel data's length, the RLE segment tables);
//  - each frame's codestream at the marker level (JPEG, JPEG-LS, JPEG 2000): well-formed, ending with
//    its end marker, describing exactly the image the DICOM header describes.
// GDCM then parses the data set (gdcm::Reader, from an std::istream over the caller's bytes, no
// copy) and decodes through gdcm::Image::GetBuffer on an image built from the checked header —
// not gdcm::ImageReader, whose image-module helpers assert on malformed enhanced-object functional
// groups. The geometry and Modality LUT are read from GDCM's data set (functional groups included).
// No C++ exception leaves a C entry point (each catches everything); GDCM's own messages are turned
// off (they go to stderr), though libjpeg and OpenJPEG inside GDCM still print warnings about
// damaged data to stderr. Calls into GDCM are serialised by one mutex (GDCM's global tables and trace
// settings are not documented as thread-safe).
//
// Multi-frame files are decoded frame by frame: each frame becomes an image of its own (its bytes,
// or its fragments — one per frame, or as the Basic Offset Table or the codestream starts say).

#include "../include/affinity_plugin.h"

#include <gdcmBasicOffsetTable.h>
#include <gdcmByteValue.h>
#include <gdcmDataElement.h>
#include <gdcmDataSet.h>
#include <gdcmDict.h>
#include <gdcmDicts.h>
#include <gdcmFile.h>
#include <gdcmFragment.h>
#include <gdcmGlobal.h>
#include <gdcmImage.h>
#include <gdcmPhotometricInterpretation.h>
#include <gdcmPixelFormat.h>
#include <gdcmTransferSyntax.h>
#include <gdcmReader.h>
#include <gdcmSequenceOfFragments.h>
#include <gdcmSequenceOfItems.h>
#include <gdcmTrace.h>
#include <gdcmUIDs.h>

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <istream>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <sstream>
#include <streambuf>
#include <string>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// Errors

/// A failure on its way to the C boundary: a status code and one sentence.
struct Failure {
    int32_t code;
    std::string message;
};

std::string format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char *fmt, ...) {
    char buffer[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buffer, sizeof buffer, fmt, ap);
    va_end(ap);
    return buffer;
}

[[noreturn]] void fail(int32_t code, std::string message) { throw Failure{code, std::move(message)}; }

/// "(GGGG,EEEE)".
std::string tagText(uint32_t tag) { return format("(%04X,%04X)", tag >> 16, tag & 0xFFFFu); }

/// The text for people: printable ASCII only, at most `limit` characters.
std::string printable(const std::string &s, size_t limit = 64) {
    std::string out;
    for (char c : s) {
        if (out.size() >= limit) { out += "…"; break; }
        out += (c >= 0x20 && c < 0x7F) ? c : '?';
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Limits

constexpr uint64_t maxFramePixels = 16384ull * 16384ull;     // the host's limit per image
constexpr uint64_t maxDecodedBytes = 4ull << 30;             // all frames at once, stored samples
constexpr uint64_t maxInflatedBytes = 4ull << 30;            // a deflated data set, inflated
constexpr int maxDepth = 32;                                 // nested sequences

// ---------------------------------------------------------------------------------------------
// Transfer syntaxes (PS3.6 Annex A)

enum class Encoding { native, deflated, encapsulated };

struct Syntax {
    const char *uid;
    const char *name;
    Encoding encoding;
    bool explicitVR;
    bool bigEndian;
    bool readable;   // GDCM decodes it and this plugin passes it on
};

const Syntax syntaxes[] = {
    {"1.2.840.10008.1.2", "Implicit VR Little Endian", Encoding::native, false, false, true},
    {"1.2.840.10008.1.2.1", "Explicit VR Little Endian", Encoding::native, true, false, true},
    {"1.2.840.10008.1.2.2", "Explicit VR Big Endian", Encoding::native, true, true, true},
    {"1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian", Encoding::deflated, true, false, true},
    {"1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", Encoding::encapsulated, true, false, true},
    {"1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)", Encoding::encapsulated, true, false, true},
    {"1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)", Encoding::encapsulated, true, false, true},
    {"1.2.840.10008.1.2.4.70", "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
     Encoding::encapsulated, true, false, true},
    {"1.2.840.10008.1.2.4.80", "JPEG-LS Lossless Image Compression", Encoding::encapsulated, true, false, true},
    {"1.2.840.10008.1.2.4.81", "JPEG-LS Lossy (Near-Lossless) Image Compression", Encoding::encapsulated, true, false, true},
    {"1.2.840.10008.1.2.4.90", "JPEG 2000 Image Compression (Lossless Only)", Encoding::encapsulated, true, false, true},
    {"1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression", Encoding::encapsulated, true, false, true},
    {"1.2.840.10008.1.2.5", "RLE Lossless", Encoding::encapsulated, true, false, true},
    // Known, not read (GDCM 3.0 has no decoder for them, or they are video).
    {"1.2.840.10008.1.2.1.98", "Encapsulated Uncompressed Explicit VR Little Endian", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component Image Compression", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.94", "JPIP Referenced", Encoding::native, true, false, false},
    {"1.2.840.10008.1.2.4.95", "JPIP Referenced Deflate", Encoding::deflated, true, false, false},
    {"1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level (video)", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level (video)", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile / Level 4.1 (video)", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.103", "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1 (video)", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.104", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.105", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1 (video)", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10 Profile / Level 5.1 (video)", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.110", "JPEG XL Lossless", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.111", "JPEG XL JPEG Recompression", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.112", "JPEG XL", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 Image Compression (Lossless Only)", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.202", "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)", Encoding::encapsulated, true, false, false},
    {"1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000 Image Compression", Encoding::encapsulated, true, false, false},
};

const Syntax *findSyntax(const std::string &uid) {
    for (const Syntax &s : syntaxes) if (uid == s.uid) return &s;
    return nullptr;
}

// ---------------------------------------------------------------------------------------------
// The structure check: a walk over every element of the file, bounds-checked, before GDCM sees it.

/// VRs of PS3.5 Table 7.1-1; the first group has the 2 reserved bytes and a 4-byte length.
bool isLongVR(const char vr[2]) {
    static const char *const longVRs[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
    for (const char *v : longVRs) if (vr[0] == v[0] && vr[1] == v[1]) return true;
    return false;
}

bool isKnownVR(const char vr[2]) {
    static const char *const shortVRs[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT",
                                           "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"};
    if (isLongVR(vr)) return true;
    for (const char *v : shortVRs) if (vr[0] == v[0] && vr[1] == v[1]) return true;
    return false;
}

constexpr uint32_t undefinedLength = 0xFFFFFFFFu;
constexpr uint32_t tagItem = 0xFFFEE000u, tagItemEnd = 0xFFFEE00Du, tagSequenceEnd = 0xFFFEE0DDu;
constexpr uint32_t tagPixelData = 0x7FE00010u;

/// A top-level element: where its value is in the walked buffer.
struct Element {
    char vr[3] = {0, 0, 0};   // "" when implicit
    size_t offset = 0;
    uint32_t length = 0;      // undefinedLength for encapsulated pixel data / sequences
};

/// The pixel data as the walk found it.
struct PixelLayout {
    bool present = false;
    bool encapsulated = false;
    size_t offset = 0, length = 0;               // native: the value
    std::vector<uint32_t> offsetTable;           // encapsulated: the Basic Offset Table
    std::vector<std::pair<size_t, uint32_t>> fragments;   // encapsulated: each fragment's value
};

/// One walked buffer (the file, or its inflated data set).
class Walker {
public:
    Walker(const uint8_t *data, size_t size, bool explicitVR, bool bigEndian, const char *where)
        : data_(data), size_(size), explicit_(explicitVR), big_(bigEndian), where_(where) {}

    std::map<uint32_t, Element> top;   // top-level elements (pixel data excluded)
    PixelLayout pixels;
    bool floatPixels = false;          // (7FE0,0008) or (7FE0,0009)

    /// Walks the data set from `begin` to the end of the buffer.
    void walk(size_t begin) {
        size_t pos = begin;
        walkDataSet(pos, size_, 0, true, false, explicit_);
        if (pos != size_) fail(AFFINITY_E_CORRUPT, format("The DICOM data set ends at byte %zu of %zu %s.", pos, size_, where_));
    }

    uint16_t u16(size_t at) const {
        return big_ ? uint16_t(data_[at] << 8 | data_[at + 1]) : uint16_t(data_[at] | data_[at + 1] << 8);
    }
    uint32_t u32(size_t at) const {
        return big_ ? uint32_t(data_[at]) << 24 | uint32_t(data_[at + 1]) << 16 | uint32_t(data_[at + 2]) << 8 | data_[at + 3]
                    : uint32_t(data_[at]) | uint32_t(data_[at + 1]) << 8 | uint32_t(data_[at + 2]) << 16 | uint32_t(data_[at + 3]) << 24;
    }
    const uint8_t *bytes() const { return data_; }

private:
    const uint8_t *data_;
    size_t size_;
    bool explicit_, big_;
    const char *where_;

    [[noreturn]] void truncated(size_t at, const char *what, uint32_t tag) const {
        fail(AFFINITY_E_CORRUPT, format("The DICOM data ends early: %s %s at byte %zu runs past the end of the data (%zu bytes %s); "
                                        "the file is truncated or damaged.", what, tagText(tag).c_str(), at, size_, where_));
    }

    struct Header {
        uint32_t tag;
        char vr[3];
        uint32_t length;
        size_t value;   // offset of the value
    };

    /// One element header at `pos` (an item or delimiter has no VR), inside [pos, limit).
    Header header(size_t pos, size_t limit, bool explicitVR) const {
        if (limit < 8 || pos > limit - 8) {
            fail(AFFINITY_E_CORRUPT, format("The DICOM data ends early: an element header at byte %zu runs past the end "
                                            "(%zu bytes %s); the file is truncated or damaged.", pos, limit, where_));
        }
        Header h{};
        h.tag = uint32_t(u16(pos)) << 16 | u16(pos + 2);
        if (h.tag >> 16 == 0xFFFE) {
            h.length = u32(pos + 4);
            h.value = pos + 8;
            return h;
        }
        if (!explicitVR) {
            h.length = u32(pos + 4);
            h.value = pos + 8;
            return h;
        }
        h.vr[0] = char(data_[pos + 4]);
        h.vr[1] = char(data_[pos + 5]);
        if (!isKnownVR(h.vr)) {
            fail(AFFINITY_E_CORRUPT, format("The DICOM element %s at byte %zu has the invalid VR \"%s\"; the file is damaged "
                                            "or its transfer syntax is wrong.", tagText(h.tag).c_str(), pos, printable(h.vr).c_str()));
        }
        if (isLongVR(h.vr)) {
            if (limit < 12 || pos > limit - 12) truncated(pos, "the element header of", h.tag);
            h.length = u32(pos + 8);
            h.value = pos + 12;
        } else {
            h.length = u16(pos + 6);
            h.value = pos + 8;
        }
        return h;
    }

    /// Elements from `pos` to `limit`, or (untilItemEnd) to an item delimiter.
    void walkDataSet(size_t &pos, size_t limit, int depth, bool isTop, bool untilItemEnd, bool explicitVR) {
        uint32_t previous = 0;
        bool first = true;
        while (pos < limit) {
            Header h = header(pos, limit, explicitVR);
            if (h.tag == tagItemEnd && untilItemEnd) {
                if (h.length != 0) fail(AFFINITY_E_CORRUPT, format("The DICOM item delimiter at byte %zu has a length of %u, not 0.", pos, h.length));
                pos = h.value;
                return;
            }
            if (h.tag >> 16 == 0xFFFE) {
                fail(AFFINITY_E_CORRUPT, format("The DICOM data set has the item tag %s at byte %zu where an element should be; "
                                                "the file is damaged.", tagText(h.tag).c_str(), pos));
            }
            if (!first && h.tag <= previous) {
                fail(AFFINITY_E_CORRUPT, format("The DICOM element %s at byte %zu follows %s: elements must be in ascending "
                                                "order, each once; the file is damaged.", tagText(h.tag).c_str(), pos, tagText(previous).c_str()));
            }
            if ((h.tag & 0xFFFFu) == 0 && h.length != 4) {
                // A group length (gggg,0000) is a UL; GDCM relies on it being 4 bytes.
                fail(AFFINITY_E_CORRUPT, format("The DICOM group length %s at byte %zu has %u bytes, not 4; the file is damaged.",
                                                tagText(h.tag).c_str(), pos, h.length));
            }
            first = false;
            previous = h.tag;
            if (explicitVR) checkDictionaryVR(h.tag, h.vr, pos);
            const bool isPixelData = h.tag == tagPixelData;
            if (isTop && (h.tag == 0x7FE00008u || h.tag == 0x7FE00009u)) floatPixels = true;
            if (h.length == undefinedLength) {
                if (isPixelData) {
                    if (explicitVR && !(h.vr[0] == 'O' && (h.vr[1] == 'B' || h.vr[1] == 'W'))) {
                        fail(AFFINITY_E_CORRUPT, format("The DICOM pixel data at byte %zu is encapsulated with the VR %s, not OB.", pos, h.vr));
                    }
                    pos = h.value;
                    walkFragments(pos, limit, isTop);
                    continue;
                }
                const bool sequence = !explicitVR || std::strcmp(h.vr, "SQ") == 0 || std::strcmp(h.vr, "UN") == 0;
                if (!sequence) {
                    fail(AFFINITY_E_CORRUPT, format("The DICOM element %s (VR %s) at byte %zu has an undefined length; the file is damaged.",
                                                    tagText(h.tag).c_str(), h.vr, pos));
                }
                // An undefined-length UN is an implicit VR little endian sequence (PS3.5 6.2.2).
                const bool nestedExplicit = explicitVR && std::strcmp(h.vr, "UN") != 0;
                if (depth >= maxDepth) fail(AFFINITY_E_CORRUPT, format("The DICOM sequences nest more than %d deep.", maxDepth));
                pos = h.value;
                walkItems(pos, limit, true, depth + 1, nestedExplicit, h.tag);
                if (isTop) top[h.tag] = Element{{h.vr[0], h.vr[1], 0}, h.value, undefinedLength};
                continue;
            }
            if (h.length > limit - h.value) truncated(pos, "the element", h.tag);
            const size_t end = h.value + h.length;
            if (isPixelData && isTop) {
                pixels.present = true;
                pixels.encapsulated = false;
                pixels.offset = h.value;
                pixels.length = h.length;
            } else if (explicitVR && std::strcmp(h.vr, "SQ") == 0) {
                if (depth >= maxDepth) fail(AFFINITY_E_CORRUPT, format("The DICOM sequences nest more than %d deep.", maxDepth));
                size_t p = h.value;
                walkItems(p, end, false, depth + 1, explicitVR, h.tag);
            } else if (!explicitVR && isDictionarySequence(h.tag)) {
                if (depth >= maxDepth) fail(AFFINITY_E_CORRUPT, format("The DICOM sequences nest more than %d deep.", maxDepth));
                size_t p = h.value;
                walkItems(p, end, false, depth + 1, explicitVR, h.tag);
            }
            if (isTop && !isPixelData) top[h.tag] = Element{{h.vr[0], h.vr[1], 0}, h.value, h.length};
            pos = end;
        }
        if (untilItemEnd) {
            fail(AFFINITY_E_CORRUPT, format("The DICOM data ends early: an item of undefined length has no item delimiter before byte %zu "
                                            "(%s); the file is truncated or damaged.", limit, where_));
        }
    }

    /// Explicit VR: a public element's VR must be one the data dictionary allows (or UN). GDCM's
    /// attribute readers assert on anything else.
    static void checkDictionaryVR(uint32_t tag, const char vr[3], size_t pos) {
        if ((tag >> 16) & 1) return;   // private
        const gdcm::Dicts &dicts = gdcm::Global::GetInstance().GetDicts();
        const gdcm::VR expected = dicts.GetDictEntry(gdcm::Tag(uint16_t(tag >> 16), uint16_t(tag & 0xFFFF))).GetVR();
        if (expected == gdcm::VR::INVALID) return;   // not in the dictionary
        const gdcm::VR found = gdcm::VR::GetVRType(vr);
        if (!expected.Compatible(found)) {
            fail(AFFINITY_E_CORRUPT, format("The DICOM element %s at byte %zu has the VR %s where the data dictionary says %s; the file "
                                            "is damaged.", tagText(tag).c_str(), pos, vr, gdcm::VR::GetVRString(expected)));
        }
    }

    /// Implicit VR: the data dictionary says which elements are sequences.
    static bool isDictionarySequence(uint32_t tag) {
        if ((tag >> 16) & 1) return false;   // private: unknown
        const gdcm::Dicts &dicts = gdcm::Global::GetInstance().GetDicts();
        const gdcm::DictEntry &entry = dicts.GetDictEntry(gdcm::Tag(uint16_t(tag >> 16), uint16_t(tag & 0xFFFF)));
        return entry.GetVR() == gdcm::VR::SQ;
    }

    /// The items of a sequence: to `limit` (defined length) or to its delimiter.
    void walkItems(size_t &pos, size_t limit, bool undefined, int depth, bool explicitVR, uint32_t owner) {
        while (true) {
            if (!undefined && pos == limit) return;
            Header h = header(pos, limit, false);
            if (h.tag == tagSequenceEnd && undefined) {
                if (h.length != 0) fail(AFFINITY_E_CORRUPT, format("The DICOM sequence delimiter at byte %zu has a length of %u, not 0.", pos, h.length));
                pos = h.value;
                return;
            }
            if (h.tag != tagItem) {
                fail(AFFINITY_E_CORRUPT, format("The DICOM sequence %s has the tag %s at byte %zu where an item should be; the file is "
                                                "truncated or damaged.", tagText(owner).c_str(), tagText(h.tag).c_str(), pos));
            }
            if (h.length == undefinedLength) {
                pos = h.value;
                walkDataSet(pos, limit, depth, false, true, explicitVR);
            } else {
                if (h.length > limit - h.value) truncated(pos, "an item of the sequence", owner);
                size_t p = h.value;
                walkDataSet(p, h.value + h.length, depth, false, false, explicitVR);
                pos = h.value + h.length;
            }
        }
    }

    /// Encapsulated pixel data: the Basic Offset Table item, fragment items, the sequence delimiter.
    void walkFragments(size_t &pos, size_t limit, bool record) {
        bool first = true;
        while (true) {
            Header h = header(pos, limit, false);
            if (h.tag == tagSequenceEnd) {
                if (h.length != 0) fail(AFFINITY_E_CORRUPT, format("The DICOM sequence delimiter at byte %zu has a length of %u, not 0.", pos, h.length));
                if (first) fail(AFFINITY_E_CORRUPT, "The DICOM encapsulated pixel data has no Basic Offset Table item.");
                pos = h.value;
                return;
            }
            if (h.tag != tagItem) {
                fail(AFFINITY_E_CORRUPT, format("The DICOM encapsulated pixel data has the tag %s at byte %zu where a fragment should be; "
                                                "the file is truncated or damaged.", tagText(h.tag).c_str(), pos));
            }
            if (h.length == undefinedLength) {
                fail(AFFINITY_E_CORRUPT, format("A fragment of the DICOM pixel data at byte %zu has an undefined length; the file is damaged.", pos));
            }
            if (h.length > limit - h.value) {
                fail(AFFINITY_E_CORRUPT, format("The DICOM data ends early: a fragment of the pixel data at byte %zu needs %u bytes, but "
                                                "only %zu remain; the file is truncated.", pos, h.length, limit - h.value));
            }
            if (record) {
                if (first) {
                    if (h.length % 4 != 0) {
                        fail(AFFINITY_E_CORRUPT, format("The DICOM Basic Offset Table has %u bytes, not a multiple of 4.", h.length));
                    }
                    for (uint32_t i = 0; i < h.length; i += 4) pixels.offsetTable.push_back(u32(h.value + i));
                    pixels.present = true;
                    pixels.encapsulated = true;
                } else {
                    pixels.fragments.emplace_back(h.value, h.length);
                }
            }
            first = false;
            pos = h.value + h.length;
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Reading the walked values

std::string trimmed(const uint8_t *p, size_t n) {
    std::string s(reinterpret_cast<const char *>(p), n);
    size_t b = 0, e = s.size();
    while (b < e && (s[b] == ' ' || s[b] == '\0')) b++;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\0')) e--;
    return s.substr(b, e - b);
}

/// The parsed file: transfer syntax, the walked data set and the attributes the pixels depend on.
struct Header {
    const Syntax *syntax = nullptr;
    std::string syntaxUID;
    std::vector<uint8_t> inflated;   // deflated files: the data set
    std::optional<Walker> walker;
    std::string sopClass, modality, photometric;
    uint32_t rows = 0, columns = 0, samples = 1, bitsAllocated = 0, bitsStored = 0, highBit = 0, frames = 1;
    bool isSigned = false;
    size_t frameBytes = 0;           // stored bytes of one frame
    /// Encapsulated data: the fragments [first, end) of each frame.
    std::vector<std::pair<size_t, size_t>> frameFragments;
    /// Encapsulated data: the largest sample precision of the frames' codestreams (a JPEG 2000 or
    /// lossless JPEG codestream may be more precise than Bits Stored says); 0 for native data.
    uint32_t codestreamBits = 0;
};

std::optional<std::string> textOf(const Walker &w, uint32_t tag) {
    auto it = w.top.find(tag);
    if (it == w.top.end() || it->second.length == undefinedLength) return std::nullopt;
    return trimmed(w.bytes() + it->second.offset, it->second.length);
}

std::optional<uint32_t> usOf(const Walker &w, uint32_t tag, const char *name) {
    auto it = w.top.find(tag);
    if (it == w.top.end()) return std::nullopt;
    if (it->second.length != 2) {
        fail(AFFINITY_E_CORRUPT, format("The DICOM %s %s has %u bytes, not the 2 of an unsigned short; the file is damaged.",
                                        name, tagText(tag).c_str(), it->second.length));
    }
    return w.u16(it->second.offset);
}

/// The name GDCM's dictionary gives a UID ("CT Image Storage"), or the UID itself.
std::string uidName(const std::string &uid) {
    gdcm::UIDs u;
    if (!uid.empty() && u.SetFromUID(uid.c_str()) && u.GetName()) return u.GetName();
    return "";
}

/// "a Comprehensive SR Storage object (SOP class 1.2.…, modality SR)", as well as the file says.
std::string objectDescription(const Header &h) {
    std::string name = uidName(h.sopClass);
    std::string what = name.empty() ? (h.sopClass.empty() ? "an object of unknown SOP class" : "an object of SOP class " + printable(h.sopClass))
                                    : "a " + name + " object (SOP class " + h.sopClass + ")";
    if (!name.empty() && !h.modality.empty()) what.insert(what.size() - 1, ", modality " + printable(h.modality, 16));
    else if (!h.modality.empty()) what += " (modality " + printable(h.modality, 16) + ")";
    return what;
}

bool isDICOM(const uint8_t *bytes, size_t length) {
    return bytes && length >= 132 && bytes[128] == 'D' && bytes[129] == 'I' && bytes[130] == 'C' && bytes[131] == 'M';
}

/// Inflates a Deflated Explicit VR Little Endian data set (raw deflate, PS3.5 A.5).
std::vector<uint8_t> inflateDataSet(const uint8_t *p, size_t n) {
    std::vector<uint8_t> out;
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) fail(AFFINITY_E_NO_MEMORY, "zlib could not start inflating the deflated DICOM data set.");
    struct End { z_stream *z; ~End() { inflateEnd(z); } } end{&z};
    z.next_in = const_cast<Bytef *>(p);
    size_t remaining = n;
    uint8_t chunk[65536];
    int status = Z_OK;
    while (status != Z_STREAM_END) {
        if (z.avail_in == 0) {
            const size_t take = std::min<size_t>(remaining, 1u << 30);
            z.avail_in = uInt(take);
            remaining -= take;
        }
        z.next_out = chunk;
        z.avail_out = sizeof chunk;
        status = inflate(&z, Z_NO_FLUSH);
        if (status == Z_BUF_ERROR && z.avail_in == 0 && remaining == 0) {
            fail(AFFINITY_E_CORRUPT, format("The deflated DICOM data set ends early (after %zu inflated bytes); the file is truncated.", out.size()));
        }
        if (status != Z_OK && status != Z_STREAM_END && status != Z_BUF_ERROR) {
            fail(AFFINITY_E_CORRUPT, format("The deflated DICOM data set is damaged (zlib: %s).", z.msg ? z.msg : "inflate failed"));
        }
        out.insert(out.end(), chunk, chunk + (sizeof chunk - z.avail_out));
        if (out.size() > maxInflatedBytes) fail(AFFINITY_E_TOO_LARGE, "The deflated DICOM data set inflates to more than 4 GiB.");
    }
    if (z.avail_in != 0 || remaining != 0) {
        // Bytes after the end of the deflate stream: GDCM would not read them; nor a valid file have them.
        const size_t extra = z.avail_in + remaining;
        bool padding = true;
        for (size_t i = n - extra; i < n; i++) if (p[i] != 0) padding = false;
        if (!padding) fail(AFFINITY_E_CORRUPT, format("The deflated DICOM data set is followed by %zu bytes that are not part of it.", extra));
    }
    return out;
}

/// Everything checked before GDCM's parser may see the bytes; throws a Failure naming the problem.
Header parseHeader(const uint8_t *bytes, size_t length) {
    if (!bytes || length == 0) fail(AFFINITY_E_CORRUPT, "The data is empty, not a DICOM file.");
    if (!isDICOM(bytes, length)) fail(AFFINITY_E_CORRUPT, "The data is not a DICOM Part 10 file (no \"DICM\" after the 128-byte preamble).");
    Header h;
    // The meta group: explicit VR little endian, group 0002 only.
    Walker meta(bytes, length, true, false, "in the file");
    size_t pos = 132;
    std::string syntax;
    uint32_t previous = 0;
    while (length - pos >= 2 && (bytes[pos] | bytes[pos + 1] << 8) == 0x0002) {
        if (length - pos < 8) fail(AFFINITY_E_CORRUPT, "The DICOM file ends inside its meta information header; the file is truncated.");
        const uint32_t tag = uint32_t(meta.u16(pos)) << 16 | meta.u16(pos + 2);
        const char vr[3] = {char(bytes[pos + 4]), char(bytes[pos + 5]), 0};
        if (!isKnownVR(vr)) {
            fail(AFFINITY_E_CORRUPT, format("The DICOM meta element %s at byte %zu has the invalid VR \"%s\"; the file is damaged.",
                                            tagText(tag).c_str(), pos, printable(vr).c_str()));
        }
        if (tag <= previous && previous != 0) {
            fail(AFFINITY_E_CORRUPT, format("The DICOM meta element %s at byte %zu is out of order; the file is damaged.", tagText(tag).c_str(), pos));
        }
        // GDCM's meta reader asserts on a sequence (gdcm::ReadExplicitDataElement: found by
        // fuzzing, Fuzz/regressions/dicom/meta-sequence-gdcm-assert), and its attribute readers on
        // a VR the dictionary does not give the element.
        if (std::strcmp(vr, "SQ") == 0) {
            fail(AFFINITY_E_CORRUPT, format("The DICOM meta element %s at byte %zu is a sequence; the meta information header holds "
                                            "none, so the file is damaged.", tagText(tag).c_str(), pos));
        }
        const gdcm::VR expected = gdcm::Global::GetInstance().GetDicts().GetDictEntry(gdcm::Tag(0x0002, uint16_t(tag & 0xFFFF))).GetVR();
        if (expected != gdcm::VR::INVALID && !expected.Compatible(gdcm::VR::GetVRType(vr))) {
            fail(AFFINITY_E_CORRUPT, format("The DICOM meta element %s at byte %zu has the VR %s where the data dictionary says %s; the file "
                                            "is damaged.", tagText(tag).c_str(), pos, vr, gdcm::VR::GetVRString(expected)));
        }
        previous = tag;
        size_t value;
        uint32_t n;
        if (isLongVR(vr)) {
            if (length - pos < 12) fail(AFFINITY_E_CORRUPT, "The DICOM file ends inside its meta information header; the file is truncated.");
            n = meta.u32(pos + 8);
            value = pos + 12;
        } else {
            n = meta.u16(pos + 6);
            value = pos + 8;
        }
        if (n == undefinedLength || n > length - value) {
            fail(AFFINITY_E_CORRUPT, format("The DICOM meta element %s at byte %zu runs past the end of the file; the file is truncated "
                                            "or damaged.", tagText(tag).c_str(), pos));
        }
        if (tag == 0x00020000u && n != 4) fail(AFFINITY_E_CORRUPT, "The DICOM meta group length (0002,0000) is not 4 bytes; the file is damaged.");
        if (tag == 0x00020010u) syntax = trimmed(bytes + value, n);
        if (tag == 0x00020002u) h.sopClass = trimmed(bytes + value, n);
        pos = value + n;
    }
    if (syntax.empty()) fail(AFFINITY_E_CORRUPT, "The DICOM file has no transfer syntax (0002,0010) in its meta information header.");
    h.syntaxUID = syntax;
    h.syntax = findSyntax(syntax);
    if (!h.syntax) {
        fail(AFFINITY_E_UNSUPPORTED, format("The DICOM file uses the unknown transfer syntax %s; this decoder reads the uncompressed, deflated, "
                                            "JPEG, JPEG-LS, JPEG 2000 and RLE transfer syntaxes.", printable(syntax).c_str()));
    }
    if (!h.syntax->readable) {
        fail(AFFINITY_E_UNSUPPORTED, format("The DICOM file uses %s (%s), which this decoder (GDCM %s) does not read.",
                                            h.syntax->name, h.syntax->uid, GDCM_VERSION));
    }
    if (pos == length) {
        fail(AFFINITY_E_CORRUPT, "The DICOM file ends after its meta information header: it has no data set; the file is truncated.");
    }
    if (h.syntax->encoding == Encoding::deflated) {
        h.inflated = inflateDataSet(bytes + pos, length - pos);
        h.walker.emplace(h.inflated.data(), h.inflated.size(), true, false, "in the inflated data set");
        h.walker->walk(0);
    } else {
        h.walker.emplace(bytes, length, h.syntax->explicitVR, h.syntax->bigEndian, "in the file");
        h.walker->walk(pos);
    }
    const Walker &w = *h.walker;
    if (auto s = textOf(w, 0x00080016u)) if (!s->empty()) h.sopClass = *s;
    h.modality = textOf(w, 0x00080060u).value_or("");
    return h;
}

void checkCodestreams(Header &h);

/// Checks that the data set is an image this decoder reads; fills the pixel attributes.
void checkImage(Header &h) {
    const Walker &w = *h.walker;
    if (w.floatPixels && !w.pixels.present) {
        fail(AFFINITY_E_UNSUPPORTED, "The DICOM file is " + objectDescription(h) + " with floating-point pixel data "
                                     "(7FE0,0008/0009); this decoder reads integer images of 8 to 16 bits.");
    }
    if (!w.pixels.present) {
        if (w.top.count(0x00280010u) || w.top.count(0x00280100u)) {
            // Rows or Bits Allocated but no pixels: an image whose end is missing.
            fail(AFFINITY_E_CORRUPT, "The DICOM file is " + objectDescription(h) + " with image attributes but no pixel data (7FE0,0010); the "
                                     "file is truncated or damaged.");
        }
        fail(AFFINITY_E_UNSUPPORTED, "The DICOM file is " + objectDescription(h) + ", not an image: it has no pixel data (7FE0,0010).");
    }
    if (w.pixels.encapsulated != (h.syntax->encoding == Encoding::encapsulated)) {
        fail(AFFINITY_E_CORRUPT, format("The DICOM pixel data is %s, but the transfer syntax %s says it is %s; the file is damaged.",
                                        w.pixels.encapsulated ? "encapsulated" : "not encapsulated", h.syntax->name,
                                        w.pixels.encapsulated ? "not" : "encapsulated"));
    }
    auto need = [&](uint32_t tag, const char *name) -> uint32_t {
        auto v = usOf(w, tag, name);
        if (!v) fail(AFFINITY_E_CORRUPT, format("The DICOM image has no %s %s; the file is damaged.", name, tagText(tag).c_str()));
        return *v;
    };
    h.samples = usOf(w, 0x00280002u, "samples per pixel").value_or(1);
    h.photometric = textOf(w, 0x00280004u).value_or("");
    const uint32_t representation = usOf(w, 0x00280103u, "pixel representation").value_or(0);
    h.bitsAllocated = need(0x00280100u, "bits allocated");
    h.bitsStored = usOf(w, 0x00280101u, "bits stored").value_or(h.bitsAllocated);
    h.highBit = usOf(w, 0x00280102u, "high bit").value_or(h.bitsStored ? h.bitsStored - 1 : 0);
    // What the object is, when it is not a monochrome image this decoder reads.
    const std::string object = objectDescription(h);
    const std::string pi = printable(h.photometric, 24);
    if (h.photometric == "RGB" || h.photometric.rfind("YBR", 0) == 0 || h.photometric == "PALETTE COLOR" || h.photometric == "HSV" ||
        h.photometric == "ARGB" || h.photometric == "CMYK" || h.samples != 1) {
        std::string kind = h.photometric == "PALETTE COLOR" ? "a palette-colour image" : "a colour image";
        fail(AFFINITY_E_UNSUPPORTED, format("The DICOM file is %s (photometric interpretation %s, %u samples per pixel) in %s; this decoder "
                                            "reads monochrome images (MONOCHROME1, MONOCHROME2) only.", kind.c_str(),
                                            pi.empty() ? "missing" : pi.c_str(), h.samples, object.c_str()));
    }
    if (h.bitsAllocated == 1) {
        fail(AFFINITY_E_UNSUPPORTED, "The DICOM file is " + object + " with 1-bit pixels (a binary segmentation or bitmap); this decoder "
                                     "reads images of 8 to 16 bits.");
    }
    if (h.bitsAllocated != 8 && h.bitsAllocated != 16) {
        fail(AFFINITY_E_UNSUPPORTED, format("The DICOM file is %s with %u-bit pixels%s; this decoder reads images of 8 to 16 bits.",
                                            object.c_str(), h.bitsAllocated, h.bitsAllocated == 32 ? " (e.g. an RT dose grid)" : ""));
    }
    if (h.photometric != "MONOCHROME1" && h.photometric != "MONOCHROME2") {
        fail(AFFINITY_E_UNSUPPORTED, format("The DICOM image has the photometric interpretation \"%s\" in %s; this decoder reads "
                                            "MONOCHROME1 and MONOCHROME2 only.", pi.c_str(), object.c_str()));
    }
    if (h.bitsStored == 0 || h.bitsStored > h.bitsAllocated) {
        fail(AFFINITY_E_CORRUPT, format("The DICOM image has %u bits stored in %u allocated; the file is damaged.", h.bitsStored, h.bitsAllocated));
    }
    if (h.highBit != h.bitsStored - 1) {
        fail(AFFINITY_E_UNSUPPORTED, format("The DICOM image has its high bit at %u with %u bits stored; this decoder reads images whose "
                                            "stored bits are the low ones (high bit = bits stored − 1).", h.highBit, h.bitsStored));
    }
    if (representation > 1) fail(AFFINITY_E_CORRUPT, format("The DICOM pixel representation is %u, neither 0 (unsigned) nor 1 (signed).", representation));
    h.isSigned = representation == 1;
    h.rows = need(0x00280010u, "rows");
    h.columns = need(0x00280011u, "columns");
    if (h.rows == 0 || h.columns == 0) {
        fail(AFFINITY_E_CORRUPT, format("The DICOM image is %u×%u pixels; the file is damaged.", h.columns, h.rows));
    }
    if (uint64_t(h.rows) * h.columns > maxFramePixels) {
        fail(AFFINITY_E_TOO_LARGE, format("The DICOM image is %u×%u pixels, more than this decoder's limit of 16384² per frame.", h.columns, h.rows));
    }
    h.frames = 1;
    if (auto f = textOf(w, 0x00280008u)) {
        char *end = nullptr;
        errno = 0;
        const long v = std::strtol(f->c_str(), &end, 10);
        if (f->empty() || *end != '\0' || errno != 0 || v < 1 || v > 1000000) {
            fail(AFFINITY_E_CORRUPT, "The DICOM number of frames (0028,0008) \"" + printable(*f) + "\" is not a positive whole number.");
        }
        h.frames = uint32_t(v);
    }
    h.frameBytes = size_t(h.rows) * h.columns * (h.bitsAllocated / 8);
    if (uint64_t(h.frameBytes) * h.frames > maxDecodedBytes) {
        fail(AFFINITY_E_TOO_LARGE, format("The DICOM image has %u frames of %u×%u pixels, more than this decoder's limit of 4 GiB of samples.",
                                          h.frames, h.columns, h.rows));
    }
    if (w.top.count(0x00283000u) && !w.top.count(0x00281053u)) {
        fail(AFFINITY_E_UNSUPPORTED, "The DICOM image maps its stored values through a Modality LUT Sequence (0028,3000), which this "
                                     "decoder does not apply (it applies rescale slope and intercept).");
    }
    const PixelLayout &p = w.pixels;
    if (!p.encapsulated) {
        const uint64_t needed = uint64_t(h.frameBytes) * h.frames;
        if (p.length < needed) {
            fail(AFFINITY_E_CORRUPT, format("The DICOM pixel data holds %zu bytes; %u frame(s) of %u×%u pixels of %u bits need %llu. The file "
                                            "is truncated or damaged.", p.length, h.frames, h.columns, h.rows, h.bitsAllocated,
                                            static_cast<unsigned long long>(needed)));
        }
        return;
    }
    if (p.fragments.empty()) fail(AFFINITY_E_CORRUPT, "The DICOM encapsulated pixel data has no fragments; the file is damaged.");
    if (p.fragments.size() < h.frames) {
        fail(AFFINITY_E_CORRUPT, format("The DICOM encapsulated pixel data has %zu fragment(s) for %u frames; the file is damaged.",
                                        p.fragments.size(), h.frames));
    }
    for (size_t i = 0; i < p.fragments.size(); i++) {
        if (p.fragments[i].second == 0) fail(AFFINITY_E_CORRUPT, format("Fragment %zu of the DICOM pixel data is empty; the file is damaged.", i + 1));
    }
    if (std::strcmp(h.syntax->uid, "1.2.840.10008.1.2.5") == 0) {
        // RLE (PS3.5 Annex G): one fragment per frame, each starting with a 64-byte header of
        // segment count and offsets; GDCM's RLE decoder trusts that header.
        if (p.fragments.size() != h.frames) {
            fail(AFFINITY_E_CORRUPT, format("The DICOM RLE pixel data has %zu fragments for %u frames; RLE needs one per frame.",
                                            p.fragments.size(), h.frames));
        }
        const uint8_t *base = w.bytes();
        for (size_t i = 0; i < p.fragments.size(); i++) {
            const size_t at = p.fragments[i].first, n = p.fragments[i].second;
            if (n < 64) fail(AFFINITY_E_CORRUPT, format("The RLE header of frame %zu is cut short (%zu bytes); the file is damaged.", i + 1, n));
            auto le32 = [&](size_t k) { return uint32_t(base[at + k]) | uint32_t(base[at + k + 1]) << 8 | uint32_t(base[at + k + 2]) << 16 | uint32_t(base[at + k + 3]) << 24; };
            const uint32_t segments = le32(0);
            if (segments != h.bitsAllocated / 8) {
                fail(AFFINITY_E_CORRUPT, format("The RLE header of frame %zu announces %u segments; a %u-bit monochrome image has %u. The file is damaged.",
                                                i + 1, segments, h.bitsAllocated, h.bitsAllocated / 8));
            }
            uint32_t last = 0;
            for (uint32_t s = 0; s < segments; s++) {
                const uint32_t offset = le32(4 + 4 * s);
                if (offset < 64 || offset >= n || (s == 0 && offset != 64) || offset <= last) {
                    fail(AFFINITY_E_CORRUPT, format("The RLE header of frame %zu has the segment offset %u, outside its %zu bytes or out of order; "
                                                    "the file is damaged.", i + 1, offset, n));
                }
                last = offset;
            }
            for (uint32_t s = segments; s < 15; s++) {
                if (le32(4 + 4 * s) != 0) fail(AFFINITY_E_CORRUPT, format("The RLE header of frame %zu has offsets for unannounced segments.", i + 1));
            }
        }
    }
    checkCodestreams(h);
}

// ---------------------------------------------------------------------------------------------
// Codestream checks: the compressed frames, before GDCM's codecs see them. GDCM's JPEG codec asserts
// on any libjpeg warning while it reads a header (extraneous bytes, a premature end) and on sample
// precisions it does not expect; its JPEG-LS and JPEG 2000 paths trust the codestream's size fields
// (a JPEG 2000 size larger than the DICOM header's overruns GDCM's buffer). So each frame's
// codestream must be well-formed at the marker level, end where it should, and describe exactly the
// image the DICOM header describes.

enum class Family { jpeg, jpegLS, jpeg2000, rle };

Family familyOf(const Syntax &s) {
    const std::string uid = s.uid;
    if (uid == "1.2.840.10008.1.2.5") return Family::rle;
    if (uid == "1.2.840.10008.1.2.4.80" || uid == "1.2.840.10008.1.2.4.81") return Family::jpegLS;
    if (uid == "1.2.840.10008.1.2.4.90" || uid == "1.2.840.10008.1.2.4.91") return Family::jpeg2000;
    return Family::jpeg;
}

struct Codestream {
    const uint8_t *p;
    size_t n;
    uint32_t frame;   // 1-based, for messages
    const char *name;

    [[noreturn]] void damaged(const std::string &why) const {
        fail(AFFINITY_E_CORRUPT, format("The %s data of frame %u is damaged: %s.", name, frame, why.c_str()));
    }
    [[noreturn]] void truncated() const {
        fail(AFFINITY_E_CORRUPT, format("The %s data of frame %u ends early (after %zu bytes, without an end-of-image marker); the "
                                        "fragment is truncated or damaged.", name, frame, n));
    }
    uint32_t be16(size_t at) const { return uint32_t(p[at]) << 8 | p[at + 1]; }
    uint32_t be32(size_t at) const { return be16(at) << 16 | be16(at + 2); }
    /// After the end marker, only zero padding.
    void endsAt(size_t at) const {
        for (size_t i = at; i < n; i++) {
            if (p[i] != 0) damaged(format("%zu byte(s) follow the end-of-image marker", n - at));
        }
    }
};

/// JPEG (ISO 10918-1) and JPEG-LS (ISO 14495-1): marker segments from SOI to EOI, entropy-coded
/// segments scanned for the next marker. Returns the sample precision.
uint32_t checkJPEGFamily(const Codestream &c, const Header &h, bool ls) {
    if (c.n < 4 || c.p[0] != 0xFF || c.p[1] != 0xD8) c.damaged("it does not start with the start-of-image marker FFD8");
    size_t i = 2;
    bool sawFrame = false, sawScan = false;
    uint32_t samplePrecision = 0;
    const uint32_t codecBits = h.bitsStored <= 8 ? 8 : h.bitsStored <= 12 ? 12 : 16;
    while (true) {
        if (i >= c.n) c.truncated();
        if (c.p[i] != 0xFF) c.damaged(format("byte %zu is 0x%02X where a marker should start", i, c.p[i]));
        while (i < c.n && c.p[i] == 0xFF) i++;   // fill bytes
        if (i >= c.n) c.truncated();
        const uint8_t marker = c.p[i++];
        if (marker == 0xD9) {   // EOI
            if (!sawScan) c.damaged("it ends before any scan");
            c.endsAt(i);
            return samplePrecision;
        }
        if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8) || marker < 0xC0) {
            c.damaged(format("the marker FF%02X at byte %zu is out of place", marker, i - 2));
        }
        if (i + 2 > c.n) c.truncated();
        const uint32_t length = c.be16(i);
        if (length < 2) c.damaged(format("the segment of marker FF%02X at byte %zu has the length %u", marker, i - 2, length));
        if (i + length > c.n) c.truncated();
        const uint8_t *seg = c.p + i + 2;
        const size_t segLength = length - 2;
        const bool jpegFrame = !ls && marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
        const bool lsFrame = ls && marker == 0xF7;
        if (jpegFrame || lsFrame) {
            if (sawFrame) c.damaged("it has two frame headers");
            sawFrame = true;
            if (segLength < 6) c.damaged("its frame header is cut short");
            const uint32_t precision = seg[0], height = uint32_t(seg[1]) << 8 | seg[2], width = uint32_t(seg[3]) << 8 | seg[4], components = seg[5];
            samplePrecision = precision;
            if (segLength != 6 + 3 * size_t(components)) c.damaged("its frame header's length does not match its component count");
            if (components != 1) c.damaged(format("it has %u components; the DICOM header says a monochrome image", components));
            if (height != h.rows || width != h.columns) {
                c.damaged(format("it is %u×%u pixels; the DICOM header says %u×%u", width, height, h.columns, h.rows));
            }
            if (lsFrame) {
                if (precision < 2 || precision > 16 || (precision + 7) / 8 != h.bitsAllocated / 8) {
                    c.damaged(format("its sample precision is %u bits for %u allocated", precision, h.bitsAllocated));
                }
            } else {
                const bool lossless = marker == 0xC3 || marker == 0xC7 || marker == 0xCB || marker == 0xCF;
                const bool fits = precision == 8 || precision == 12 || precision == 16 || (lossless && precision >= 2 && precision <= codecBits);
                if (!fits || (!lossless && precision == 16)) {
                    c.damaged(format("its sample precision is %u bits (%s process), which the JPEG decoders cannot take for %u bits stored",
                                     precision, lossless ? "lossless" : "lossy", h.bitsStored));
                }
                if (precision > h.bitsAllocated) c.damaged(format("its sample precision is %u bits for %u allocated", precision, h.bitsAllocated));
            }
        } else if (!ls && marker == 0xE0 && segLength >= 7 && std::memcmp(seg, "JFIF\0", 5) == 0 && seg[5] != 1) {
            c.damaged(format("its JFIF marker has the version %u.%u", seg[5], seg[6]));
        } else if (marker == 0xDC) {
            c.damaged("it sets its height with a DNL marker");
        }
        i += length;
        if (marker != 0xDA) continue;   // SOS: the entropy-coded data follows
        if (!sawFrame) c.damaged("a scan comes before the frame header");
        sawScan = true;
        // The entropy-coded segment ends at the first marker: JPEG stuffs 0xFF as FF00 and has
        // restart markers FFD0–FFD7 inside; JPEG-LS stuffs a 0 bit after 0xFF (a marker is FF ≥ 80).
        while (true) {
            const uint8_t *next = static_cast<const uint8_t *>(std::memchr(c.p + i, 0xFF, c.n - i));
            if (!next) c.truncated();
            size_t at = size_t(next - c.p);
            size_t j = at + 1;
            while (j < c.n && c.p[j] == 0xFF) j++;
            if (j >= c.n) c.truncated();
            const uint8_t b = c.p[j];
            const bool data = ls ? b < 0x80 : (b == 0x00 || (b >= 0xD0 && b <= 0xD7));
            if (data) { i = j + 1; continue; }
            i = j - 1;   // the marker's 0xFF
            break;
        }
    }
}

/// JPEG 2000 (ISO 15444-1) codestream: SOC, SIZ, the main header, tile-parts, EOC. Returns the
/// sample precision.
uint32_t checkJPEG2000(const Codestream &c, const Header &h) {
    if (c.n < 4 || c.be16(0) != 0xFF4F) c.damaged("it does not start with the JPEG 2000 start-of-codestream marker FF4F");
    if (c.be16(2) != 0xFF51) c.damaged("its first marker segment is not the image and tile size (SIZ)");
    if (c.n < 6) c.truncated();
    const uint32_t lsiz = c.be16(4);
    if (lsiz < 41 || 4 + lsiz > c.n) c.n < 4 + 41 ? c.truncated() : c.damaged(format("its SIZ segment has the length %u", lsiz));
    const uint8_t *siz = c.p + 6;   // after Lsiz
    auto u32 = [&](size_t k) { return uint32_t(siz[k]) << 24 | uint32_t(siz[k + 1]) << 16 | uint32_t(siz[k + 2]) << 8 | siz[k + 3]; };
    const uint32_t xsiz = u32(2), ysiz = u32(6), xo = u32(10), yo = u32(14), xt = u32(18), yt = u32(22), xto = u32(26), yto = u32(30);
    const uint32_t components = uint32_t(siz[34]) << 8 | siz[35];
    if (lsiz != 38 + 3 * components) c.damaged("its SIZ segment's length does not match its component count");
    if (components != 1) c.damaged(format("it has %u components; the DICOM header says a monochrome image", components));
    if (xo >= xsiz || yo >= ysiz || xsiz - xo != h.columns || ysiz - yo != h.rows) {
        c.damaged(format("it is %u×%u pixels; the DICOM header says %u×%u", xsiz > xo ? xsiz - xo : 0, ysiz > yo ? ysiz - yo : 0, h.columns, h.rows));
    }
    if (xt == 0 || yt == 0 || xto > xo || yto > yo || uint64_t(xto) + xt <= xo || uint64_t(yto) + yt <= yo) c.damaged("its tile grid is invalid");
    const uint64_t tiles = ((uint64_t(xsiz) - xto + xt - 1) / xt) * ((uint64_t(ysiz) - yto + yt - 1) / yt);
    if (tiles == 0 || tiles > 65535) c.damaged(format("it has %llu tiles", static_cast<unsigned long long>(tiles)));
    const uint32_t ssiz = siz[36], precision = (ssiz & 0x7F) + 1;
    if (precision > 16 || (precision + 7) / 8 != h.bitsAllocated / 8) {
        c.damaged(format("its sample precision is %u bits for %u allocated", precision, h.bitsAllocated));
    }
    if (siz[37] != 1 || siz[38] != 1) c.damaged("its component is subsampled");
    // Main header marker segments up to the first tile-part.
    size_t i = 4 + lsiz;
    bool sawCOD = false, sawQCD = false;
    while (true) {
        if (i + 4 > c.n) c.truncated();
        const uint32_t marker = c.be16(i);
        if (marker == 0xFF90) break;   // SOT
        if (marker < 0xFF30 || marker > 0xFF7F || (marker >= 0xFF30 && marker <= 0xFF3F)) {
            c.damaged(format("the marker %04X at byte %zu is out of place in the main header", marker, i));
        }
        if (marker == 0xFF52) sawCOD = true;
        if (marker == 0xFF5C) sawQCD = true;
        const uint32_t length = c.be16(i + 2);
        if (length < 2) c.damaged(format("the segment of marker %04X at byte %zu has the length %u", marker, i, length));
        if (i + 2 + length > c.n) c.truncated();
        i += 2 + length;
    }
    if (!sawCOD || !sawQCD) c.damaged("its main header lacks the coding style (COD) or quantization (QCD) segment");
    // Tile-parts: SOT with its length Psot (0: up to EOC), until EOC.
    while (true) {
        if (i + 2 > c.n) c.truncated();
        const uint32_t marker = c.be16(i);
        if (marker == 0xFFD9) {   // EOC
            c.endsAt(i + 2);
            return precision;
        }
        if (marker != 0xFF90) c.damaged(format("the marker %04X at byte %zu is where a tile-part or the end of the codestream should be", marker, i));
        if (i + 12 > c.n) c.truncated();
        if (c.be16(i + 2) != 10) c.damaged(format("the tile-part header at byte %zu has the length %u", i, c.be16(i + 2)));
        const uint32_t tile = c.be16(i + 4), psot = c.be32(i + 6);
        if (tile >= tiles) c.damaged(format("a tile-part names tile %u of %llu", tile, static_cast<unsigned long long>(tiles)));
        if (psot == 0) {
            // The last tile-part runs to the EOC marker at the end.
            size_t end = c.n;
            while (end > i && c.p[end - 1] == 0) end--;
            if (end < i + 14 || c.p[end - 2] != 0xFF || c.p[end - 1] != 0xD9) c.truncated();
            return precision;
        }
        if (psot < 14 || psot > c.n - i) {
            psot > c.n - i ? c.truncated() : c.damaged(format("a tile-part has the length %u", psot));
        }
        i += psot;
    }
}

/// Which fragments make up each frame, or a named failure when that cannot be told.
void mapFrames(Header &h, Family family) {
    const PixelLayout &p = h.walker->pixels;
    const size_t n = p.fragments.size();
    auto &map = h.frameFragments;
    map.clear();
    if (h.frames == 1) {
        map.emplace_back(0, n);
        return;
    }
    if (n == h.frames) {
        for (size_t i = 0; i < n; i++) map.emplace_back(i, i + 1);
        return;
    }
    if (p.offsetTable.size() == h.frames) {
        // Offsets count from the first fragment item; each item is 8 bytes of header plus its value.
        std::vector<uint64_t> starts;
        uint64_t offset = 0;
        for (auto &f : p.fragments) { starts.push_back(offset); offset += 8 + uint64_t(f.second); }
        std::vector<size_t> firsts;
        for (uint32_t k = 0; k < h.frames; k++) {
            auto it = std::find(starts.begin(), starts.end(), uint64_t(p.offsetTable[k]));
            if (it == starts.end()) fail(AFFINITY_E_CORRUPT, format("The DICOM Basic Offset Table's entry for frame %u (%u) is not where a fragment "
                                                                      "starts; the file is damaged.", k + 1, p.offsetTable[k]));
            firsts.push_back(size_t(it - starts.begin()));
        }
        if (firsts[0] != 0) fail(AFFINITY_E_CORRUPT, "The DICOM Basic Offset Table does not start at the first fragment; the file is damaged.");
        for (uint32_t k = 0; k < h.frames; k++) {
            const size_t end = k + 1 < h.frames ? firsts[k + 1] : n;
            if (end <= firsts[k]) fail(AFFINITY_E_CORRUPT, "The DICOM Basic Offset Table's entries are not in order; the file is damaged.");
            map.emplace_back(firsts[k], end);
        }
        return;
    }
    // No usable table: a frame starts at each fragment that starts a codestream.
    const uint8_t *base = h.walker->bytes();
    std::vector<size_t> firsts;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *f = base + p.fragments[i].first;
        const bool start = p.fragments[i].second >= 2 && f[0] == 0xFF && (family == Family::jpeg2000 ? f[1] == 0x4F : f[1] == 0xD8);
        if (start) firsts.push_back(i);
    }
    if (firsts.size() != h.frames || firsts[0] != 0) {
        fail(AFFINITY_E_CORRUPT, format("The DICOM pixel data has %zu fragments for %u frames and no Basic Offset Table; %zu of them start a "
                                        "codestream, so the frames cannot be told apart. The file is damaged.", n, h.frames, firsts.size()));
    }
    for (size_t k = 0; k < firsts.size(); k++) map.emplace_back(firsts[k], k + 1 < firsts.size() ? firsts[k + 1] : n);
}

/// Maps the fragments to frames and checks every frame's codestream.
void checkCodestreams(Header &h) {
    const Family family = familyOf(*h.syntax);
    if (family == Family::rle) {   // checked with the RLE headers
        h.frameFragments.clear();
        for (size_t i = 0; i < h.frames; i++) h.frameFragments.emplace_back(i, i + 1);
        return;
    }
    mapFrames(h, family);
    const PixelLayout &p = h.walker->pixels;
    const uint8_t *base = h.walker->bytes();
    const char *name = family == Family::jpeg ? "JPEG" : family == Family::jpegLS ? "JPEG-LS" : "JPEG 2000";
    std::vector<uint8_t> joined;
    for (uint32_t k = 0; k < h.frames; k++) {
        const auto [a, b] = h.frameFragments[k];
        Codestream c{nullptr, 0, k + 1, name};
        if (b - a == 1) {
            c.p = base + p.fragments[a].first;
            c.n = p.fragments[a].second;
        } else {
            joined.clear();
            for (size_t i = a; i < b; i++) joined.insert(joined.end(), base + p.fragments[i].first, base + p.fragments[i].first + p.fragments[i].second);
            c.p = joined.data();
            c.n = joined.size();
        }
        const uint32_t precision = family == Family::jpeg2000 ? checkJPEG2000(c, h) : checkJPEGFamily(c, h, family == Family::jpegLS);
        h.codestreamBits = std::max(h.codestreamBits, std::min(precision, h.bitsAllocated));
    }
}

// ---------------------------------------------------------------------------------------------
// GDCM

/// An std::streambuf over the caller's bytes, seekable, read-only, no copy.
class MemoryBuffer : public std::streambuf {
public:
    MemoryBuffer(const uint8_t *bytes, size_t length) {
        char *p = const_cast<char *>(reinterpret_cast<const char *>(bytes));
        setg(p, p, p + length);
    }

protected:
    pos_type seekoff(off_type offset, std::ios_base::seekdir direction, std::ios_base::openmode which) override {
        if (!(which & std::ios_base::in)) return pos_type(off_type(-1));
        const off_type size = egptr() - eback();
        off_type target = direction == std::ios_base::beg ? offset : direction == std::ios_base::cur ? (gptr() - eback()) + offset : size + offset;
        if (target < 0 || target > size) return pos_type(off_type(-1));
        setg(eback(), eback() + target, egptr());
        return pos_type(target);
    }
    pos_type seekpos(pos_type position, std::ios_base::openmode which) override {
        return seekoff(off_type(position), std::ios_base::beg, which);
    }
};

std::mutex gdcmLock;

/// GDCM's messages off (they would go to stderr), once.
void quietGDCM() {
    static std::once_flag once;
    std::call_once(once, [] {
        gdcm::Trace::SetDebug(false);
        gdcm::Trace::SetWarning(false);
        gdcm::Trace::SetError(false);
    });
}

/// A DS value: numbers separated by '\'.
std::optional<std::vector<double>> decimals(const std::string &text) {
    std::vector<double> out;
    size_t start = 0;
    while (true) {
        size_t end = text.find('\\', start);
        std::string part = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
        size_t b = part.find_first_not_of(' '), e = part.find_last_not_of(' ');
        if (b == std::string::npos) return std::nullopt;
        part = part.substr(b, e - b + 1);
        char *stop = nullptr;
        errno = 0;
        double v = std::strtod(part.c_str(), &stop);
        if (*stop != '\0' || errno == ERANGE || !std::isfinite(v)) return std::nullopt;
        out.push_back(v);
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return out;
}

/// An element's text in a GDCM data set (trimmed), or nothing.
std::optional<std::string> gdcmText(const gdcm::DataSet &ds, uint16_t group, uint16_t element) {
    const gdcm::Tag tag(group, element);
    if (!ds.FindDataElement(tag)) return std::nullopt;
    const gdcm::DataElement &de = ds.GetDataElement(tag);
    const gdcm::ByteValue *bv = de.GetByteValue();
    if (!bv) return std::nullopt;
    return trimmed(reinterpret_cast<const uint8_t *>(bv->GetPointer()), bv->GetLength());
}

/// A copy of the data set of item `index` (1-based) of a sequence element, or nothing. (A copy: in
/// an implicit VR file GDCM parses the sequence on request into an object that lives only as long
/// as the SmartPointer it returns.)
std::optional<gdcm::DataSet> item(const gdcm::DataSet &ds, uint16_t group, uint16_t element, uint32_t index = 1) {
    const gdcm::Tag tag(group, element);
    if (!ds.FindDataElement(tag)) return std::nullopt;
    const gdcm::DataElement &de = ds.GetDataElement(tag);
    // SQ, or no VR (implicit VR files): the structure check walked those as sequences; a UN or any
    // other VR it did not, so GDCM is not asked to parse it.
    if (de.IsEmpty() || (de.GetVR() != gdcm::VR::SQ && de.GetVR() != gdcm::VR::INVALID)) return std::nullopt;
    gdcm::SmartPointer<gdcm::SequenceOfItems> sq = de.GetValueAsSQ();
    if (!sq || sq->GetNumberOfItems() < index) return std::nullopt;
    return sq->GetItem(index).GetNestedDataSet();
}

/// Metadata of one frame.
struct Metadata {
    uint32_t flags = 0;
    double spacing[2] = {0, 0};   // row spacing (between rows), column spacing
    double thickness = 0;
    double position[3] = {0, 0, 0};
    double orientation[6] = {0, 0, 0, 0, 0, 0};
    double slope = 1, intercept = 0;
    int32_t instance = 0;
    std::string sopInstance, series, study;
};

/// Reads DS numbers `count` long from an element; malformed values are damage, absent ones nothing.
bool readDecimals(const gdcm::DataSet &ds, uint16_t g, uint16_t e, size_t count, double *out, const char *name) {
    auto text = gdcmText(ds, g, e);
    if (!text || text->empty()) return false;
    auto values = decimals(*text);
    if (!values || values->size() != count) {
        fail(AFFINITY_E_CORRUPT, format("The DICOM %s (%04X,%04X) \"%s\" is not %zu number%s; the file is damaged.", name, g, e,
                                        printable(*text).c_str(), count, count == 1 ? "" : "s"));
    }
    std::copy(values->begin(), values->end(), out);
    return true;
}

/// The geometry and Modality LUT of `frame`: the top-level attributes, overridden by an enhanced
/// object's shared then per-frame functional groups (PS3.3 C.7.6.16).
Metadata readMetadata(const gdcm::DataSet &ds, uint32_t frame) {
    Metadata m;
    auto apply = [&](const gdcm::DataSet &d) {
        if (readDecimals(d, 0x0028, 0x0030, 2, m.spacing, "pixel spacing")) m.flags |= AFFINITY_INFO_HAS_PIXEL_SPACING;
        if (readDecimals(d, 0x0018, 0x0050, 1, &m.thickness, "slice thickness")) m.flags |= AFFINITY_INFO_HAS_SLICE_THICKNESS;
        if (readDecimals(d, 0x0020, 0x0032, 3, m.position, "image position (patient)")) m.flags |= AFFINITY_INFO_HAS_POSITION;
        if (readDecimals(d, 0x0020, 0x0037, 6, m.orientation, "image orientation (patient)")) m.flags |= AFFINITY_INFO_HAS_ORIENTATION;
        bool hasSlope = readDecimals(d, 0x0028, 0x1053, 1, &m.slope, "rescale slope");
        bool hasIntercept = readDecimals(d, 0x0028, 0x1052, 1, &m.intercept, "rescale intercept");
        if (hasSlope || hasIntercept) m.flags |= AFFINITY_INFO_HAS_RESCALE;
    };
    apply(ds);
    // Enhanced objects: functional group macros, shared first, then the frame's own.
    auto applyGroups = [&](const std::optional<gdcm::DataSet> &groups) {
        if (!groups) return;
        if (auto d = item(*groups, 0x0028, 0x9110)) apply(*d);   // Pixel Measures
        if (auto d = item(*groups, 0x0020, 0x9113)) apply(*d);   // Plane Position (Patient)
        if (auto d = item(*groups, 0x0020, 0x9116)) apply(*d);   // Plane Orientation (Patient)
        if (auto d = item(*groups, 0x0028, 0x9145)) apply(*d);   // Pixel Value Transformation
    };
    applyGroups(item(ds, 0x5200, 0x9229));
    applyGroups(item(ds, 0x5200, 0x9230, frame + 1));
    if (m.slope == 0) fail(AFFINITY_E_CORRUPT, "The DICOM rescale slope (0028,1053) is 0; the file is damaged.");
    if (auto t = gdcmText(ds, 0x0020, 0x0013); t && !t->empty()) {
        char *end = nullptr;
        errno = 0;
        long v = std::strtol(t->c_str(), &end, 10);
        while (*end == ' ') end++;
        if (*end != '\0' || errno != 0 || v < INT32_MIN || v > INT32_MAX) {
            fail(AFFINITY_E_CORRUPT, "The DICOM instance number (0020,0013) \"" + printable(*t) + "\" is not a whole number; the file is damaged.");
        }
        m.instance = int32_t(v);
        m.flags |= AFFINITY_INFO_HAS_INSTANCE_NUMBER;
    }
    m.sopInstance = gdcmText(ds, 0x0008, 0x0018).value_or("");
    m.series = gdcmText(ds, 0x0020, 0x000E).value_or("");
    m.study = gdcmText(ds, 0x0020, 0x000D).value_or("");
    return m;
}

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
    uint32_t frame = 0;
    bool frameGiven = false;
    double centre = -600, width = 1500;
};

/// A small JSON reader for the options object: string keys, number values.
class OptionsParser {
public:
    explicit OptionsParser(const char *text) : s_(text ? text : "") {}

    std::vector<std::pair<std::string, double>> parse() {
        std::vector<std::pair<std::string, double>> out;
        space();
        if (at_ == s_.size()) return out;   // "" means {}
        expect('{');
        space();
        if (peek() == '}') { at_++; end(); return out; }
        while (true) {
            space();
            std::string key = string();
            space();
            expect(':');
            space();
            double value = number(key);
            out.emplace_back(key, value);
            space();
            if (peek() == ',') { at_++; continue; }
            expect('}');
            end();
            return out;
        }
    }

private:
    std::string s_;
    size_t at_ = 0;

    [[noreturn]] void bad(const std::string &why) const {
        fail(AFFINITY_E_INVALID_ARGUMENT, "The dicom options are not a JSON object of numbers: " + why + ".");
    }
    char peek() const { return at_ < s_.size() ? s_[at_] : '\0'; }
    void space() { while (at_ < s_.size() && (s_[at_] == ' ' || s_[at_] == '\t' || s_[at_] == '\n' || s_[at_] == '\r')) at_++; }
    void expect(char c) {
        if (peek() != c) bad(format("expected '%c' at character %zu", c, at_ + 1));
        at_++;
    }
    void end() {
        space();
        if (at_ != s_.size()) bad(format("unexpected text after the object at character %zu", at_ + 1));
    }
    std::string string() {
        expect('"');
        std::string out;
        while (true) {
            if (at_ >= s_.size()) bad("a string is not closed");
            char c = s_[at_++];
            if (c == '"') return out;
            if (c == '\\') {
                if (at_ >= s_.size()) bad("a string is not closed");
                char e = s_[at_++];
                switch (e) {
                case '"': case '\\': case '/': out += e; break;
                case 'n': out += '\n'; break;
                case 't': out += '\t'; break;
                case 'r': out += '\r'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'u':
                    if (s_.size() - at_ < 4) bad("a \\u escape is cut short");
                    out += '?';
                    at_ += 4;
                    break;
                default: bad(format("unknown escape \\%c", e));
                }
            } else {
                out += c;
            }
        }
    }
    double number(const std::string &key) {
        const size_t start = at_;
        if (peek() == '-') at_++;
        if (!std::isdigit(static_cast<unsigned char>(peek()))) {
            bad("the value of \"" + printable(key) + "\" is not a number");
        }
        while (std::isdigit(static_cast<unsigned char>(peek()))) at_++;
        if (peek() == '.') {
            at_++;
            if (!std::isdigit(static_cast<unsigned char>(peek()))) bad("a number has no digits after its point");
            while (std::isdigit(static_cast<unsigned char>(peek()))) at_++;
        }
        if (peek() == 'e' || peek() == 'E') {
            at_++;
            if (peek() == '+' || peek() == '-') at_++;
            if (!std::isdigit(static_cast<unsigned char>(peek()))) bad("a number has no digits in its exponent");
            while (std::isdigit(static_cast<unsigned char>(peek()))) at_++;
        }
        std::string token = s_.substr(start, at_ - start);
        double v = std::strtod(token.c_str(), nullptr);
        if (!std::isfinite(v)) bad("the value of \"" + printable(key) + "\" is out of range");
        return v;
    }
};

Options parseOptions(const char *json, bool allowFrame) {
    Options o;
    for (auto &[key, value] : OptionsParser(json).parse()) {
        if (key == "window_center") {
            o.centre = value;
        } else if (key == "window_width") {
            o.width = value;
        } else if (key == "frame") {
            if (!allowFrame) fail(AFFINITY_E_INVALID_ARGUMENT, "The dicom values() call takes its frames as arguments, not a \"frame\" option.");
            if (value < 0 || value != std::floor(value) || value > 4294967295.0) {
                fail(AFFINITY_E_INVALID_ARGUMENT, format("The dicom option \"frame\" must be a whole number ≥ 0, got %g.", value));
            }
            o.frame = uint32_t(value);
            o.frameGiven = true;
        } else {
            fail(AFFINITY_E_INVALID_ARGUMENT, "The dicom decoder has no option \"" + printable(key) +
                                                  "\"; it knows \"frame\", \"window_center\" and \"window_width\".");
        }
    }
    if (!(o.width > 0)) fail(AFFINITY_E_INVALID_ARGUMENT, format("The window width must be positive, got %g.", o.width));
    return o;
}

// ---------------------------------------------------------------------------------------------
// Info

void copyText(char *dst, size_t size, const std::string &s) {
    const size_t n = std::min(size - 1, s.size());
    std::memcpy(dst, s.data(), n);
    std::memset(dst + n, 0, size - n);
}

/// Writes the info struct, at most as much of it as the host's struct_size says.
void writeInfo(affinity_image_info *out, const Header &h, const Metadata &m, const Options &o) {
    if (!out) return;
    affinity_image_info v;
    std::memset(&v, 0, sizeof v);
    v.struct_size = sizeof v;
    v.width = h.columns;
    v.height = h.rows;
    v.channels = h.samples;
    v.bits = h.bitsStored;
    v.pixel_spacing_x = m.spacing[1];
    v.pixel_spacing_y = m.spacing[0];
    v.frames = h.frames;
    v.is_signed = h.isSigned ? 1 : 0;
    v.flags = m.flags | AFFINITY_INFO_HAS_WINDOW;
    v.instance_number = m.instance;
    v.slice_thickness = m.thickness;
    std::copy(m.position, m.position + 3, v.image_position);
    std::copy(m.orientation, m.orientation + 6, v.image_orientation);
    v.rescale_slope = m.slope;
    v.rescale_intercept = m.intercept;
    v.window_center = o.centre;
    v.window_width = o.width;
    copyText(v.modality, sizeof v.modality, h.modality);
    copyText(v.photometric, sizeof v.photometric, h.photometric);
    copyText(v.transfer_syntax, sizeof v.transfer_syntax, h.syntaxUID);
    copyText(v.sop_instance_uid, sizeof v.sop_instance_uid, m.sopInstance);
    copyText(v.series_instance_uid, sizeof v.series_instance_uid, m.series);
    copyText(v.study_instance_uid, sizeof v.study_instance_uid, m.study);
    const size_t n = out->struct_size >= AFFINITY_IMAGE_INFO_V1_0_SIZE && out->struct_size < sizeof v ? out->struct_size : sizeof v;
    v.struct_size = uint32_t(n);
    std::memcpy(out, &v, n);
}

// ---------------------------------------------------------------------------------------------
// Pixels

/// Reads the whole data set with GDCM's reader (the structure check has passed).
void readDataSet(gdcm::Reader &reader, const uint8_t *bytes, size_t length, bool upToPixels) {
    MemoryBuffer buffer(bytes, length);
    std::istream stream(&buffer);
    reader.SetStream(stream);
    const bool ok = upToPixels ? reader.ReadUpToTag(gdcm::Tag(0x7FE0, 0x0010)) : reader.Read();
    if (!ok) fail(AFFINITY_E_CORRUPT, "GDCM cannot read the DICOM data set; the file is damaged.");
}

/// A gdcm::Image of `frames` frames over `pixels`, described by the checked header. (Not GDCM's
/// ImageReader: its image-module helpers assert on malformed attributes, enhanced objects'
/// functional groups above all; everything the codecs need is in the header already checked.)
gdcm::Image makeImage(const Header &h, const gdcm::DataElement &pixels, uint32_t frames) {
    gdcm::Image image;
    image.SetNumberOfDimensions(frames > 1 ? 3 : 2);
    image.SetDimension(0, h.columns);
    image.SetDimension(1, h.rows);
    if (frames > 1) image.SetDimension(2, frames);
    image.SetPixelFormat(gdcm::PixelFormat(1, uint16_t(h.bitsAllocated), uint16_t(h.bitsStored), uint16_t(h.highBit), h.isSigned ? 1 : 0));
    image.SetPhotometricInterpretation(gdcm::PhotometricInterpretation::GetPIType(h.photometric.c_str()));
    image.SetTransferSyntax(gdcm::TransferSyntax(gdcm::TransferSyntax::GetTSType(h.syntax->uid)));
    image.SetDataElement(pixels);
    return image;
}

/// The stored samples of a decoded buffer as integers: the low Bits Stored bits, sign-extended when
/// signed. When the codestream is more precise than Bits Stored (a JPEG 2000 codestream of 16 bits
/// for 12 stored), its values are read at its precision and clamped to the stored range, so that a
/// lossy overshoot saturates instead of wrapping.
void storedValues(const char *raw, size_t count, const Header &h, std::vector<int32_t> &out, size_t at) {
    const uint32_t bits = std::max(h.codestreamBits, h.bitsStored);
    const uint32_t mask = bits >= 32 ? 0xFFFFFFFFu : (1u << bits) - 1;
    const uint32_t sign = 1u << (bits - 1);
    const int32_t lowest = h.isSigned ? -(int32_t(1) << (h.bitsStored - 1)) : 0;
    const int32_t highest = h.isSigned ? (int32_t(1) << (h.bitsStored - 1)) - 1 : int32_t((1u << h.bitsStored) - 1);
    const bool clamp = bits > h.bitsStored;
    for (size_t i = 0; i < count; i++) {
        uint32_t v;
        if (h.bitsAllocated == 16) {
            uint16_t s;
            std::memcpy(&s, raw + 2 * i, 2);
            v = s;
        } else {
            v = uint8_t(raw[i]);
        }
        v &= mask;
        int32_t value = h.isSigned && (v & sign) ? int32_t(v) - int32_t(mask) - 1 : int32_t(v);
        if (clamp) value = std::min(std::max(value, lowest), highest);
        out[at + i] = value;
    }
}

/// Decodes one gdcm::Image (all its frames) into `out` at `at`.
void decodeImage(const gdcm::Image &image, size_t expectedBytes, const Header &h, const char *what, std::vector<int32_t> &out, size_t at) {
    const unsigned long length = image.GetBufferLength();
    if (length != expectedBytes) {
        fail(AFFINITY_E_CORRUPT, format("GDCM expects %lu bytes for %s, the header %zu; the file is inconsistent.", length, what, expectedBytes));
    }
    std::vector<char> raw;
    try {
        raw.resize(length);
    } catch (const std::bad_alloc &) {
        fail(AFFINITY_E_NO_MEMORY, format("Out of memory decoding %s (%lu bytes).", what, length));
    }
    if (!image.GetBuffer(raw.data())) {
        fail(AFFINITY_E_CORRUPT, format("GDCM cannot decode %s (%s): the compressed data is damaged.", what, h.syntax->name));
    }
    storedValues(raw.data(), length / (h.bitsAllocated / 8), h, out, at);
}

/// The stored values of frames [first, first + count): a single-frame image as it is, the frames of
/// a multi-frame image each as an image of its own (that frame's bytes or fragments), so that a
/// frame costs one frame's decoding.
std::vector<int32_t> decodeFrames(const gdcm::DataSet &ds, const Header &h, uint32_t first, uint32_t count) {
    const size_t framePixels = size_t(h.rows) * h.columns;
    std::vector<int32_t> out;
    try {
        out.resize(framePixels * count);
    } catch (const std::bad_alloc &) {
        fail(AFFINITY_E_NO_MEMORY, format("Out of memory decoding %u frames.", count));
    }
    const gdcm::Tag pixelTag(0x7FE0, 0x0010);
    if (!ds.FindDataElement(pixelTag)) fail(AFFINITY_E_CORRUPT, "GDCM finds no pixel data in the DICOM file; the file is damaged.");
    const gdcm::DataElement &pixelData = ds.GetDataElement(pixelTag);
    const gdcm::ByteValue *bytes = pixelData.GetByteValue();
    const gdcm::SequenceOfFragments *fragments = pixelData.GetSequenceOfFragments();
    if (bytes ? bytes->GetLength() < h.frameBytes * h.frames
              : (!fragments || fragments->GetNumberOfFragments() != h.walker->pixels.fragments.size() || h.frameFragments.size() != h.frames)) {
        fail(AFFINITY_E_CORRUPT, "GDCM reads other pixel data than the structure check found; the file is inconsistent.");
    }
    if (h.frames == 1) {
        decodeImage(makeImage(h, pixelData, 1), h.frameBytes, h, "the image", out, 0);
        return out;
    }
    for (uint32_t k = 0; k < count; k++) {
        const uint32_t frame = first + k;
        gdcm::DataElement de(pixelTag);
        if (bytes) {
            de.SetVR(pixelData.GetVR());
            de.SetByteValue(bytes->GetPointer() + size_t(frame) * h.frameBytes, uint32_t(h.frameBytes));
        } else {
            gdcm::SmartPointer<gdcm::SequenceOfFragments> sequence = new gdcm::SequenceOfFragments;
            for (size_t i = h.frameFragments[frame].first; i < h.frameFragments[frame].second; i++) sequence->AddFragment(fragments->GetFragment(i));
            de.SetVR(gdcm::VR::OB);
            de.SetValue(*sequence);   // (its length stays defined: GDCM asserts on an undefined length for OB)
        }
        const std::string what = format("frame %u", frame + 1);
        decodeImage(makeImage(h, de, 1), h.frameBytes, h, what.c_str(), out, size_t(k) * framePixels);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// The calls

/// Header check + GDCM header read (without the pixel data) → info.
struct Session {
    Header header;
    Metadata meta;
    Options options;
};

void startSession(Session &s, const uint8_t *bytes, size_t length, const char *optionsJSON, bool allowFrame) {
    s.options = parseOptions(optionsJSON, allowFrame);
    s.header = parseHeader(bytes, length);
    checkImage(s.header);
}

void checkFrame(const Header &h, uint32_t frame) {
    if (frame >= h.frames) {
        fail(AFFINITY_E_INVALID_ARGUMENT, format("The DICOM image has %u frame%s; frame %u does not exist (frames count from 0).",
                                                 h.frames, h.frames == 1 ? "" : "s", frame));
    }
}

int32_t report(affinity_error *error, int32_t code, const std::string &message) {
    if (error) copyText(error->message, sizeof error->message, message);
    return code;
}

/// Runs a call with every exception caught: the C boundary.
template <typename Body>
int32_t guarded(affinity_error *error, Body body) {
    try {
        body();
        return AFFINITY_OK;
    } catch (const Failure &f) {
        return report(error, f.code, f.message);
    } catch (const std::bad_alloc &) {
        return report(error, AFFINITY_E_NO_MEMORY, "Out of memory reading the DICOM file.");
    } catch (const std::exception &e) {
        return report(error, AFFINITY_E_CORRUPT, std::string("GDCM could not read the DICOM file (") + printable(e.what(), 200) + "); the file is damaged.");
    } catch (...) {
        return report(error, AFFINITY_E_FAILED, "The DICOM file could not be read (an unexpected exception in GDCM).");
    }
}

int32_t dicom_probe(const uint8_t *bytes, size_t length) { return isDICOM(bytes, length) ? 100 : 0; }

int32_t dicom_info(const uint8_t *bytes, size_t length, const char *options, affinity_image_info *info, affinity_error *error) {
    return guarded(error, [&] {
        if (!bytes || !info) fail(AFFINITY_E_INVALID_ARGUMENT, "dicom: info() needs bytes and an output struct.");
        Session s;
        startSession(s, bytes, length, options, true);
        checkFrame(s.header, s.options.frame);
        std::lock_guard<std::mutex> lock(gdcmLock);
        quietGDCM();
        gdcm::Reader reader;
        readDataSet(reader, bytes, length, true);
        s.meta = readMetadata(reader.GetFile().GetDataSet(), s.options.frame);
        writeInfo(info, s.header, s.meta, s.options);
    });
}

/// decode and values: the frames' Modality-LUT values, then (decode) the window.
int32_t run(const uint8_t *bytes, size_t length, const char *options, bool windowed, uint32_t first, uint32_t count,
            float *out, size_t capacity, affinity_image_info *info, affinity_error *error) {
    return guarded(error, [&] {
        if (!bytes || !out) fail(AFFINITY_E_INVALID_ARGUMENT, windowed ? "dicom: decode() needs bytes and a pixel buffer." : "dicom: values() needs bytes and a value buffer.");
        Session s;
        startSession(s, bytes, length, options, windowed);
        if (windowed) {
            first = s.options.frame;
            count = 1;
        }
        if (count == 0) fail(AFFINITY_E_INVALID_ARGUMENT, "dicom: values() was asked for no frames.");
        checkFrame(s.header, first);
        if (uint64_t(first) + count > s.header.frames) {
            fail(AFFINITY_E_INVALID_ARGUMENT, format("The DICOM image has %u frames; frames %u to %llu do not all exist.", s.header.frames, first,
                                                     static_cast<unsigned long long>(first) + count - 1));
        }
        const size_t framePixels = size_t(s.header.rows) * s.header.columns;
        const uint64_t needed = uint64_t(framePixels) * count;
        if (capacity < needed) {
            fail(AFFINITY_E_TOO_LARGE, format("The host's buffer holds %zu floats; %u frame(s) of %u×%u pixels need %llu.", capacity, count,
                                              s.header.columns, s.header.rows, static_cast<unsigned long long>(needed)));
        }
        std::vector<int32_t> stored;
        std::vector<Metadata> frameMeta;
        {
            std::lock_guard<std::mutex> lock(gdcmLock);
            quietGDCM();
            gdcm::Reader reader;
            readDataSet(reader, bytes, length, false);
            const gdcm::DataSet &ds = reader.GetFile().GetDataSet();
            for (uint32_t k = 0; k < count; k++) frameMeta.push_back(readMetadata(ds, first + k));
            stored = decodeFrames(ds, s.header, first, count);
        }
        s.meta = frameMeta[0];
        const double low = s.options.centre - s.options.width / 2, width = s.options.width;
        const bool invert = s.header.photometric == "MONOCHROME1";
        for (uint32_t k = 0; k < count; k++) {
            const double slope = frameMeta[k].slope, intercept = frameMeta[k].intercept;
            const int32_t *src = stored.data() + size_t(k) * framePixels;
            float *dst = out + size_t(k) * framePixels;
            for (size_t i = 0; i < framePixels; i++) {
                const double value = double(src[i]) * slope + intercept;
                if (!windowed) {
                    dst[i] = float(value);
                    continue;
                }
                double v = (value - low) / width;
                v = v < 0 ? 0 : (v > 1 ? 1 : v);
                dst[i] = float(invert ? 1 - v : v);
            }
        }
        writeInfo(info, s.header, s.meta, s.options);
    });
}

int32_t dicom_decode(const uint8_t *bytes, size_t length, const char *options, float *pixels, size_t capacity, affinity_image_info *info,
                     affinity_error *error) {
    return run(bytes, length, options, true, 0, 1, pixels, capacity, info, error);
}

int32_t dicom_values(const uint8_t *bytes, size_t length, const char *options, uint32_t first, uint32_t count, float *values,
                     size_t capacity, affinity_image_info *info, affinity_error *error) {
    return run(bytes, length, options, false, first, count, values, capacity, info, error);
}

const affinity_image_decoder decoderTable = {
    sizeof(affinity_image_decoder), 0, dicom_probe, dicom_info, dicom_decode, dicom_values,
};

const affinity_plugin descriptor = {
    AFFINITY_PLUGIN_ABI_VERSION,
    sizeof(affinity_plugin),
    "dicom",
    "2.0.0",
    "Image decoder: monochrome DICOM of every transfer syntax GDCM reads (uncompressed, deflated, JPEG, JPEG-LS, JPEG 2000, RLE), "
    "single- or multi-frame, Modality LUT (HU for CT), lung window.",
    AFFINITY_KIND_IMAGE_DECODER,
    0,
    &decoderTable,
    nullptr,
    nullptr,
};

} // namespace

extern "C" __attribute__((visibility("default"))) const affinity_plugin *affinity_plugin_entry(uint32_t hostABIVersion) {
    (void)hostABIVersion;
    return &descriptor;
}
