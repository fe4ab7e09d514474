// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "catdog-dist",
    products: [
        .executable(name: "catdog-dist", targets: ["catdog-dist"]),
        .library(name: "CatdogCore", targets: ["CatdogCore"]),
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

        // MARK: - Core library

        .target(
            name: "CatdogCore",
            dependencies: ["CMPI", "COpenBLAS", "CTurboJPEG", "CZstd", "CHalf"],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]),

        // MARK: - Command-line executable

        .executableTarget(
            name: "catdog-dist",
            dependencies: [
                "CatdogCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // MARK: - Tests

        .testTarget(name: "CatdogCoreTests", dependencies: ["CatdogCore"]),
    ]
)
