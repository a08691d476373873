// affinity-fuzz: one libFuzzer executable for every Swift fuzz target (issue 16). scripts/fuzz
// builds it with `--sanitize fuzzer --sanitize address` (AFFINITY_FUZZ=1 adds the target to
// Package.swift) and runs it once per target. The target is chosen by the executable's name,
// `fuzz-<target>` (scripts/fuzz makes those links), or by AFFINITY_FUZZ_TARGET; every other
// argument is libFuzzer's (corpus folders, -max_total_time=N, a crash file to replay …).
import Foundation

/// One fuzz target: a parser of bytes a caller controls, driven with one input at a time. A
/// target returns normally for every input it refuses with an error; a trap, a sanitizer report,
/// a leak or a failed oracle (`fuzzCheck`) is a finding.
struct FuzzTarget {
    let name: String
    let summary: String
    let run: (UnsafeRawBufferPointer) -> Void
}

let fuzzTargets: [FuzzTarget] = [
    FuzzTarget(name: "png", summary: "PNG decode (the daemon's limits), preprocessing to the model input, the lung field", run: fuzzPNG),
    FuzzTarget(name: "safetensors", summary: "safetensors parsing and model loading (ImportModel's path)", run: fuzzSafeTensors),
    FuzzTarget(name: "nifti", summary: "NIfTI-1/2 volumes (.nii and .nii.gz) through nifticlib, as slice headers", run: fuzzNIfTI),
    FuzzTarget(name: "scans", summary: "series assembly and scan geometry from a set of slice headers", run: fuzzScans),
    FuzzTarget(name: "datasets", summary: "the data-set layouts' split files and reader options", run: fuzzDataSets),
    FuzzTarget(name: "config", summary: "affinityd.conf", run: fuzzConfig),
    FuzzTarget(name: "dbus", summary: "a D-Bus message → values → every method's argument and option checks", run: fuzzDBus),
]

nonisolated(unsafe) var selectedTarget: FuzzTarget?

/// A failed oracle: an input that a parser accepted but handled wrongly. Stops the process so that
/// libFuzzer keeps the input as a crash.
func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String, file: StaticString = #file, line: UInt = #line) {
    if !condition() {
        FileHandle.standardError.write(Data("affinity-fuzz: check failed at \(file):\(line): \(message())\n".utf8))
        abort()
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>,
                           _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    let program = argv.pointee?.pointee.map { String(cString: $0) } ?? ""
    let base = (program as NSString).lastPathComponent
    var name = ProcessInfo.processInfo.environment["AFFINITY_FUZZ_TARGET"] ?? ""
    if name.isEmpty, base.hasPrefix("fuzz-") { name = String(base.dropFirst("fuzz-".count)) }
    guard let target = fuzzTargets.first(where: { $0.name == name }) else {
        var text = "affinity-fuzz: name the target by the executable's name (fuzz-<target>) or AFFINITY_FUZZ_TARGET; targets:\n"
        for t in fuzzTargets { text += "  \(t.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(t.summary)\n" }
        FileHandle.standardError.write(Data(text.utf8))
        exit(64)
    }
    selectedTarget = target
    if let directory = ProcessInfo.processInfo.environment["AFFINITY_FUZZ_SEEDS"] {
        // Fuzz/make-seeds: the seeds only this executable can make (messages through the Bus module).
        do {
            switch target.name {
            case "dbus": try dbusSeeds(directory)
            default: throw CocoaError(.featureUnsupported)
            }
            exit(0)
        } catch {
            FileHandle.standardError.write(Data("affinity-fuzz: no seeds for \(target.name): \(error)\n".utf8))
            exit(1)
        }
    }
    fuzzSetUp()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: size > 0 ? data : nil, count: size)
    autoreleasepool { selectedTarget!.run(bytes) }
    return 0
}

#if !canImport(ObjectiveC)
/// Foundation on Linux has no autorelease pool.
@inline(__always) func autoreleasepool<T>(_ body: () throws -> T) rethrows -> T { try body() }
#endif

/// A private scratch folder for targets whose parser reads files by name.
let fuzzScratch: String = {
    let path = NSTemporaryDirectory() + "affinity-fuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "affinity-fuzz-\(getpid())") }
    return path
}()

/// Per-target state made once, before the first input (e.g. the model the loader checks against).
func fuzzSetUp() {
    _ = fuzzScratch
    switch selectedTarget?.name {
    case "safetensors": safeTensorsSetUp()
    case "datasets": dataSetsSetUp()
    default: break
    }
}

/// Reads an input as a sequence of small values (structure-aware targets).
struct FuzzReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0
    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var isAtEnd: Bool { offset >= bytes.count }
    mutating func byte() -> UInt8 {
        guard offset < bytes.count else { return 0 }
        defer { offset += 1 }
        return bytes[offset]
    }
    mutating func bool() -> Bool { byte() & 1 == 1 }
    mutating func uint16() -> UInt16 { UInt16(byte()) | UInt16(byte()) << 8 }
    mutating func uint32() -> UInt32 { UInt32(uint16()) | UInt32(uint16()) << 16 }
    mutating func uint64() -> UInt64 { UInt64(uint32()) | UInt64(uint32()) << 32 }
    /// A double: mostly small "nice" values, sometimes any bit pattern (NaN, ±inf, subnormals).
    mutating func double() -> Double {
        let kind = byte()
        switch kind % 8 {
        case 0: return Double(bitPattern: uint64())
        case 1: return [0, -0.0, .infinity, -.infinity, .nan, 1e308, -1e308, .leastNonzeroMagnitude][Int(byte() % 8)]
        default: return Double(Int16(bitPattern: uint16())) / Double(1 << Int(kind % 5))
        }
    }
    mutating func string(maxLength: Int = 16) -> String {
        let n = Int(byte()) % (maxLength + 1)
        var s: [UInt8] = []
        for _ in 0..<n { s.append(byte()) }
        return String(decoding: s, as: UTF8.self)
    }
    /// The rest of the input.
    mutating func rest() -> [UInt8] {
        defer { offset = bytes.count }
        return offset < bytes.count ? Array(bytes[offset...]) : []
    }
}
