// swift-tools-version:6.0
// LesionAffinity: the One Shot Affinity Model (Ter-Sarkisov 2020) on OpenBLAS, served over D-Bus.
import PackageDescription

/// Settings shared by every Swift target. The numerical code is written against raw buffers and
/// checks its shapes explicitly at public entry points (throwing), so Swift 5 language mode keeps
/// the concurrency checker out of the hot loops.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v5),
]
/// The engine's inner loops run without overflow checks in release builds (shape checks happen
/// once, at the public entry points, and throw).
let kernelSettings: [SwiftSetting] = swiftSettings + [
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
]

let package = Package(
    name: "LesionAffinity",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "affinity-lab", targets: ["affinity-lab"]),
        .executable(name: "affinityd", targets: ["affinityd"]),
        .library(name: "LesionAffinityModel", targets: ["Tensor", "NN", "Detection", "Affinity", "Evaluation", "Imaging"]),
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
        .target(name: "Tensor", dependencies: ["CBLAS"], swiftSettings: kernelSettings),
        .target(name: "NN", dependencies: ["Tensor"], swiftSettings: kernelSettings),
        .target(name: "Detection", dependencies: ["Tensor", "NN"], swiftSettings: kernelSettings),
        .target(name: "Affinity", dependencies: ["Tensor", "NN", "Detection", "Evaluation"], swiftSettings: kernelSettings),
        .target(name: "Evaluation", dependencies: [], swiftSettings: kernelSettings),
        .target(name: "Imaging", dependencies: ["CPNG"], swiftSettings: kernelSettings),
        .target(name: "Bus", dependencies: ["CDBus"], swiftSettings: swiftSettings),
        // The engine as a service, transport-free (model store, analyse queue, jobs).
        .target(name: "Service", dependencies: ["Tensor", "NN", "Detection", "Affinity", "Evaluation", "Imaging"],
                swiftSettings: swiftSettings),
        // The daemon: Service wired to Bus.
        .executableTarget(
            name: "affinityd",
            dependencies: ["Service", "Bus", "CSystemd", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings),

        .executableTarget(
            name: "affinity-lab",
            dependencies: [
                "Tensor", "NN", "Detection", "Affinity", "Imaging", "Evaluation", "Service",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),

        // --- Plugins (ABI, host, plugin libraries): section owned by the plugin work. ---
        // --- end of plugins section ---

        // Tests.
        .target(name: "TestSupport", dependencies: ["Tensor", "NN"], path: "Tests/TestSupport",
                swiftSettings: swiftSettings),
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "NNTests", dependencies: ["NN", "Tensor", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "DetectionTests", dependencies: ["Detection", "NN", "Tensor", "TestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "AffinityTests", dependencies: ["Affinity", "Detection", "NN", "Tensor", "TestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "ImagingTests", dependencies: ["Imaging"], swiftSettings: swiftSettings),
        .testTarget(name: "EvaluationTests", dependencies: ["Evaluation"], exclude: ["Fixtures"], swiftSettings: swiftSettings),
        .testTarget(name: "BusTests", dependencies: ["Bus"], swiftSettings: swiftSettings),
        .testTarget(name: "ServiceTests", dependencies: ["Service", "Affinity", "Detection", "NN", "Tensor", "Imaging", "Bus", "TestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "LabTests", dependencies: ["Affinity", "Imaging", "Evaluation", "Tensor", "NN", "TestSupport"],
                    swiftSettings: swiftSettings),
    ]
)
