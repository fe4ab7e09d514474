// swift-tools-version:6.0
import PackageDescription

/// Release builds of the library targets drop Swift's runtime checks (as before the split).
let hot: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
    name: "catdog-dist",
    products: [
        .executable(name: "catdog-dist", targets: ["catdog-dist"]),
        .library(
            name: "CatdogCore",
            targets: [
                "CatdogSupport", "CatdogEngine", "CatdogData", "CatdogDistributed", "CatdogCheckpoint",
                "CatdogRun", "CatdogTraining", "CatdogInference", "CatdogReports",
            ]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // MARK: - C libraries (system, found by pkg-config)

        .systemLibrary(
            name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(
            name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CTurboJPEG", path: "Sources/CTurboJPEG", pkgConfig: "libturbojpeg",
            providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(
            name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]),

        // MARK: - Our own C: float <-> half with F16C

        .target(name: "CHalf", path: "Sources/CHalf"),

        // MARK: - Library targets, lowest first; each imports only those above it in this list.
        // ARCHITECTURE.md explains who owns what.

        .target(name: "CatdogSupport", dependencies: ["CHalf"], swiftSettings: hot),
        .target(name: "CatdogEngine", dependencies: ["CatdogSupport", "COpenBLAS"], swiftSettings: hot),
        .target(name: "CatdogData", dependencies: ["CatdogSupport", "CTurboJPEG"], swiftSettings: hot),
        .target(name: "CatdogDistributed", dependencies: ["CatdogSupport", "CMPI", "CHalf"], swiftSettings: hot),
        .target(name: "CatdogCheckpoint", dependencies: ["CatdogSupport", "CZstd"], swiftSettings: hot),
        .target(name: "CatdogRun", dependencies: ["CatdogEngine", "CatdogData", "CatdogCheckpoint"], swiftSettings: hot),
        .target(
            name: "CatdogTraining",
            dependencies: ["CatdogRun", "CatdogEngine", "CatdogData", "CatdogDistributed", "CatdogCheckpoint"],
            swiftSettings: hot),
        .target(name: "CatdogInference", dependencies: ["CatdogRun", "CatdogEngine", "CatdogData"], swiftSettings: hot),
        .target(name: "CatdogReports", dependencies: ["CatdogRun", "CatdogData"], swiftSettings: hot),

        // MARK: - Command-line executable

        .executableTarget(
            name: "catdog-dist",
            dependencies: [
                "CatdogSupport", "CatdogEngine", "CatdogData", "CatdogDistributed", "CatdogCheckpoint",
                "CatdogRun", "CatdogTraining", "CatdogInference", "CatdogReports",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // MARK: - Tests

        .testTarget(
            name: "CatdogCoreTests",
            dependencies: [
                "CatdogSupport", "CatdogEngine", "CatdogData", "CatdogDistributed", "CatdogCheckpoint",
                "CatdogRun", "CatdogTraining", "CatdogInference", "CatdogReports",
            ],
            exclude: ["Support/legacy_to_zip.py"]),
    ]
)
