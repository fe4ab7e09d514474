// swift-tools-version:6.0
import PackageDescription


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
        // Stop signals (SIGTERM, SIGINT, SIGUSR1) as a flag the training loop reads between steps;
        // and the timer slack of a thread's sleeps (the lab emulator's).
        .target(name: "CSignals", path: "Sources/CSignals"),
        // Our own kernels: Winograd F(4x4, 3x3)'s transforms, the channel-wise layers (BatchNorm,
        // activations, pooling, depthwise), the optimizers' updates, PowerSGD's arithmetic and
        // image resizing, compiled for AVX-512, AVX2 and baseline x86-64 (dispatch.c picks one per
        // CPU); the fp32 and bf16 gemms and the direct first-layer convolution, for AVX-512 and
        // AVX512_BF16, each used only where the CPU has them.
        .target(name: "CKernels", dependencies: ["CHalf"], path: "Sources/CKernels", cSettings: [.unsafeFlags(["-O3", "-mprefer-vector-width=512", "-fno-math-errno"])]),

        // MARK: - Library targets, lowest first; each imports only those above it in this list.
        // ARCHITECTURE.md explains who owns what. Every target keeps Swift's bounds and overflow
        // checks in release builds too: the files it reads are untrusted (README, "Security").

        .target(name: "CatdogSupport", dependencies: ["CHalf", "CSignals"]),
        .target(name: "CatdogEngine", dependencies: ["CatdogSupport", "COpenBLAS", "CKernels"]),
        .target(name: "CatdogData", dependencies: ["CatdogSupport", "CTurboJPEG", "CKernels"]),
        .target(name: "CatdogDistributed", dependencies: ["CatdogSupport", "CMPI", "CHalf"]),
        .target(name: "CatdogCheckpoint", dependencies: ["CatdogSupport", "CZstd"]),
        .target(name: "CatdogRun", dependencies: ["CatdogEngine", "CatdogData", "CatdogCheckpoint"]),
        .target(
            name: "CatdogTraining",
            dependencies: ["CatdogRun", "CatdogEngine", "CatdogData", "CatdogDistributed", "CatdogCheckpoint", "CKernels", "CSignals"]),
        .target(name: "CatdogInference", dependencies: ["CatdogRun", "CatdogEngine", "CatdogData"]),
        .target(name: "CatdogReports", dependencies: ["CatdogRun", "CatdogData"]),

        // MARK: - Command-line executable

        .executableTarget(
            name: "catdog-dist",
            dependencies: [
                "CatdogSupport", "CatdogEngine", "CatdogData", "CatdogDistributed", "CatdogCheckpoint",
                "CatdogRun", "CatdogTraining", "CatdogInference", "CatdogReports",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // MARK: - Tests

        // The executable too: command lines are parsed in-process (`CommandLineTests`), and the
        // tests that run the program find its binary beside the test bundle.
        .testTarget(
            name: "CatdogCoreTests",
            dependencies: [
                "CatdogSupport", "CatdogEngine", "CatdogData", "CatdogDistributed", "CatdogCheckpoint",
                "CatdogRun", "CatdogTraining", "CatdogInference", "CatdogReports", "catdog-dist",
            ],
            exclude: ["Support/legacy_to_zip.py"]),
    ]
)
