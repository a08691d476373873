// swift-tools-version:6.0
// LesionAffinity: the One Shot Affinity Model (Ter-Sarkisov 2020) on OpenBLAS, served over D-Bus.
import PackageDescription

/// Settings shared by every Swift target. The numerical code is written against raw buffers and
/// checks its shapes explicitly at public entry points (throwing), so Swift 5 language mode keeps
/// the concurrency checker out of the hot loops.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v5),
]
/// The numerical targets (Tensor, NN, Detection, Affinity, Evaluation, Imaging, the attention
/// head). Swift's bounds and overflow checks stay on everywhere (issue 16): no `-Ounchecked`, so a
/// crafted image or model file meets a trap, never memory corruption, and the library product
/// carries no `unsafeFlags` (a package whose library does cannot be a versioned dependency). The
/// hot loops get their speed from unsafe buffers and explicit wrapping arithmetic after the
/// shapes were checked at the public entry points; release builds are whole-module already.
/// `affinity-lab bench predict` / `train-step` measured the same with and without -Ounchecked.
let kernelSettings: [SwiftSetting] = swiftSettings
/// Swift 6 language mode with complete concurrency checking (issue 22): the targets where threads,
/// callbacks and file descriptors meet (Bus, Service, PluginHost, affinityd, affinityctl). Each
/// `@unchecked Sendable` there says on the line above why it is safe.
let concurrentSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
]

let package = Package(
    name: "LesionAffinity",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "affinity-lab", targets: ["affinity-lab"]),
        .executable(name: "affinityd", targets: ["affinityd"]),
        .executable(name: "affinityctl", targets: ["affinityctl"]),
        .library(name: "LesionAffinityModel", targets: ["Primitives", "Tensor", "NN", "Detection", "Affinity", "Evaluation", "Imaging"]),
        // Plugin libraries (plugins/): lib<name>.so, loaded by PluginHost.
        .library(name: "affinity-meanpool", type: .dynamic, targets: ["AffinityPluginMeanpool"]),
        .library(name: "affinity-jpeg", type: .dynamic, targets: ["AffinityPluginJPEG"]),
        .library(name: "affinity-dicom", type: .dynamic, targets: ["AffinityPluginDICOM"]),
        .library(name: "affinity-covidx-ct", type: .dynamic, targets: ["AffinityPluginCovidxCT"]),
        .library(name: "affinity-cncb-seg", type: .dynamic, targets: ["AffinityPluginCNCBSeg"]),
        .library(name: "affinity-ictcf", type: .dynamic, targets: ["AffinityPluginICTCF"]),
        .library(name: "affinity-attention", type: .dynamic, targets: ["AffinityPluginAttention"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries, found by pkg-config; the apt provider names the Debian package.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CDBus", pkgConfig: "dbus-1", providers: [.apt(["libdbus-1-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),

        // The engine and the model, bottom to top.
        // kgemm: an AVX-512 GEMM used instead of OpenBLAS's where the processor has AVX-512.
        .target(name: "CKernels", path: "Sources/CKernels"),
        // File descriptors with one owner each, and the checked close (AFFINITY_CHECK_DESCRIPTORS).
        .target(name: "CSystemIO", path: "Sources/CSystemIO"),
        .target(name: "SystemIO", dependencies: ["CSystemIO"], swiftSettings: swiftSettings),
        // The seeded generator (xoshiro256**) and the box, one of each for every target.
        .target(name: "Primitives", dependencies: [], swiftSettings: swiftSettings),
        .target(name: "Tensor", dependencies: ["CBLAS", "CKernels", "Primitives"], swiftSettings: kernelSettings),
        .target(name: "NN", dependencies: ["Tensor", "SystemIO"], swiftSettings: kernelSettings),
        .target(name: "Detection", dependencies: ["Tensor", "NN", "Primitives"], swiftSettings: kernelSettings),
        .target(name: "Affinity", dependencies: ["Tensor", "NN", "Detection"], swiftSettings: kernelSettings),
        .target(name: "Evaluation", dependencies: [], swiftSettings: kernelSettings),
        .target(name: "Imaging", dependencies: ["CPNG", "SystemIO", "Primitives"], swiftSettings: kernelSettings),
        .target(name: "Bus", dependencies: ["CDBus", "SystemIO"], swiftSettings: concurrentSettings),
        // The names of the D-Bus API (checked against data/dbus/*.xml by a test): daemon and clients.
        .target(name: "AffinityAPI", dependencies: [], swiftSettings: swiftSettings),
        // CT scans: slice headers, series assembly, patient geometry (no model, no file formats).
        .target(name: "Scans", dependencies: [], swiftSettings: swiftSettings),
        // NIfTI volumes (nifticlib, Debian libnifti2-dev): read as slices, label volumes written.
        .target(name: "CNifti", path: "Sources/CNifti",
                linkerSettings: [.linkedLibrary("nifti2"), .linkedLibrary("znz"), .linkedLibrary("z"), .linkedLibrary("m")]),
        .target(name: "NIfTI", dependencies: ["CNifti", "Scans", "SystemIO"], swiftSettings: swiftSettings),
        // The engine as a service, transport-free (model store, analyse queue, jobs).
        .target(name: "Service", dependencies: ["Tensor", "NN", "Detection", "Affinity", "Imaging", "SystemIO", "AffinityPluginSupport", "Scans", "AffinityAPI"],
                swiftSettings: concurrentSettings),
        // Scan files: DICOM series through the decoder plugin, NIfTI volumes; label volumes as NIfTI.
        .target(name: "ScanIO", dependencies: ["Scans", "NIfTI", "PluginHost", "SystemIO"], swiftSettings: swiftSettings),
        // The daemon: Service wired to Bus.
        .executableTarget(
            name: "affinityd",
            dependencies: ["Service", "Affinity", "Imaging", "Bus", "AffinityAPI", "CSystemd", "PluginHost", "ScanIO", "Scans", "SystemIO", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: concurrentSettings),

        // The CLI client: D-Bus only (Bus), PNG IO and overlays (Imaging); never the model.
        .executableTarget(
            name: "affinityctl",
            dependencies: ["Bus", "AffinityAPI", "Imaging", "SystemIO", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: concurrentSettings),
        .executableTarget(
            name: "affinity-lab",
            dependencies: [
                "Tensor", "NN", "Detection", "Affinity", "Imaging", "Evaluation", "Service", "PluginHost", "SystemIO", "Scans", "ScanIO",
                "NIfTI", "CDICOMWriter", "Distributed",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),
        // Open MPI (Debian libopenmpi-dev, pkg-config ompi-c) for affinity-lab only (issue 19): the
        // data-parallel trainer and the sharded analyses. Neither the daemon, the CLI nor the library
        // product links it; outside mpirun/srun it is a world of one that never calls MPI_Init.
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "Distributed", dependencies: ["CMPI"], swiftSettings: swiftSettings),
        // DICOM CT slices written through GDCM (C++ behind a C API; Debian libgdcm-dev), for
        // affinity-lab's phantom-scan only, never the library product: GDCM's headers live in
        // /usr/include/gdcm-3.0 and need the unsafe -I flag, as the dicom plugin does.
        .target(name: "CDICOMWriter", path: "Sources/CDICOMWriter",
                cxxSettings: [.unsafeFlags(["-I/usr/include/gdcm-3.0"])],
                linkerSettings: [.linkedLibrary("gdcmMSFF"), .linkedLibrary("gdcmDSED"), .linkedLibrary("gdcmDICT"),
                                 .linkedLibrary("gdcmCommon"), .linkedLibrary("z")]),

        // --- Plugins (ABI, host, plugin libraries): section owned by the plugin work. ---
        // The C ABI (plugins/include/affinity_plugin.h) as a module, for the host and Swift plugins.
        .systemLibrary(name: "CAffinityPlugin", path: "plugins/include"),
        // The loader, registry and Swift wrappers of the three plugin kinds.
        // PluginHost depends on Affinity (its head plugins are `ClassificationHead`s); Affinity never on it.
        .target(name: "PluginHost", dependencies: ["CAffinityPlugin", "Imaging", "Detection", "NN", "Tensor", "Affinity", "SystemIO"],
                swiftSettings: concurrentSettings),
        // Plugin libraries (each its own dynamic library product, loaded with dlopen; no Swift module
        // of the host is linked into a plugin).
        // Helpers shared by the Swift plugins, linked statically into each plugin library; its
        // data-set layout readers (DataSetLayouts.swift) are also the host's built-in layout (Service).
        .target(name: "AffinityPluginSupport", dependencies: ["CAffinityPlugin"], path: "plugins/support",
                swiftSettings: swiftSettings),
        .target(name: "AffinityPluginMeanpool", path: "plugins/meanpool", publicHeadersPath: ".", linkerSettings: [.linkedLibrary("m")]),
        .target(name: "AffinityPluginJPEG", path: "plugins/jpeg", publicHeadersPath: ".", linkerSettings: [.linkedLibrary("jpeg")]),
        // dicom: C++ over GDCM (Debian libgdcm-dev). GDCM ships CMake files but no pkg-config file and
        // keeps its headers in /usr/include/gdcm-3.0, an absolute path that headerSearchPath refuses:
        // hence the unsafe -I flag (fine for this root package; it is not meant to be a dependency).
        .target(name: "AffinityPluginDICOM", path: "plugins/dicom", publicHeadersPath: ".",
                cxxSettings: [.unsafeFlags(["-I/usr/include/gdcm-3.0"])],
                linkerSettings: [.linkedLibrary("gdcmMSFF"), .linkedLibrary("gdcmDSED"), .linkedLibrary("gdcmDICT"),
                                 .linkedLibrary("gdcmCommon"), .linkedLibrary("z")]),
        .target(name: "AffinityPluginCovidxCT", dependencies: ["CAffinityPlugin", "AffinityPluginSupport"], path: "plugins/covidx-ct",
                swiftSettings: swiftSettings),
        .target(name: "AffinityPluginCNCBSeg", dependencies: ["CAffinityPlugin", "AffinityPluginSupport"], path: "plugins/cncb-seg",
                swiftSettings: swiftSettings),
        .target(name: "AffinityPluginICTCF", dependencies: ["CAffinityPlugin", "AffinityPluginSupport"], path: "plugins/ictcf",
                swiftSettings: swiftSettings),
        .target(name: "AffinityPluginAttention", dependencies: ["CAffinityPlugin", "AffinityPluginSupport"], path: "plugins/attention",
                swiftSettings: kernelSettings),
        // --- end of plugins section ---
        .testTarget(name: "PluginTests", dependencies: ["PluginHost", "Affinity", "Imaging", "Detection", "NN", "Tensor"],
                    swiftSettings: swiftSettings),

        // Tests.
        // A checking close(2) linked into the test process (Tests/CloseGuard/closeguard.c).
        .target(name: "CloseGuard", dependencies: ["CSystemIO"], path: "Tests/CloseGuard"),
        .target(name: "TestSupport", dependencies: ["Tensor", "NN", "Bus", "SystemIO", "CloseGuard", "Imaging"], path: "Tests/TestSupport",
                swiftSettings: swiftSettings),
        .testTarget(name: "TensorTests", dependencies: ["CKernels", "Tensor", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "NNTests", dependencies: ["NN", "Tensor", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "DetectionTests", dependencies: ["Detection", "NN", "Primitives", "Tensor", "TestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "AffinityTests", dependencies: ["Affinity", "Detection", "NN", "Tensor", "Imaging", "TestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "SystemIOTests", dependencies: ["SystemIO", "Bus", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "ScansTests", dependencies: ["Scans", "NIfTI", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "ImagingTests", dependencies: ["Imaging", "SystemIO"], swiftSettings: swiftSettings),
        .testTarget(name: "EvaluationTests", dependencies: ["Evaluation"], exclude: ["Fixtures"], swiftSettings: swiftSettings),
        .testTarget(name: "BusTests", dependencies: ["Bus", "AffinityAPI", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "ServiceTests", dependencies: ["Service", "Affinity", "NN", "Tensor", "Imaging", "Bus", "TestSupport",
                                                       "PluginHost", "AffinityAPI", "Scans", "ScanIO", "NIfTI"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "CtlTests", dependencies: ["Affinity", "Tensor", "Imaging", "Bus", "TestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "DistributedTests", dependencies: ["Distributed"], swiftSettings: swiftSettings),
        .testTarget(name: "LabTests", dependencies: ["Affinity", "Imaging", "Evaluation", "Tensor", "NN", "TestSupport", "PluginHost", "Service", "NIfTI",
                                                   "ScanIO", "Scans"],
                    swiftSettings: swiftSettings),
    ]
)

// --- Fuzzing (issue 16): present only when AFFINITY_FUZZ is set, as scripts/fuzz does, which
// builds them with `--sanitize fuzzer --sanitize address` in its own scratch path (.build-fuzz);
// ordinary builds and tests never see them. One libFuzzer executable runs every Swift target
// (Fuzz/README.md); the C decoder plugins get their own clang-built fuzzers (scripts/fuzz).
if Context.environment["AFFINITY_FUZZ"] != nil {
    package.targets += [
        .executableTarget(
            name: "affinity-fuzz",
            dependencies: ["Imaging", "NN", "Affinity", "Bus", "AffinityAPI", "Scans", "NIfTI", "CNifti",
                           "AffinityPluginSupport", "CAffinityPlugin"],
            path: "Fuzz/affinity-fuzz",
            swiftSettings: swiftSettings),
    ]
}
