// swift-tools-version:6.0
// Fuzz targets for the readers of untrusted files, built with libFuzzer and AddressSanitizer
// by `cluster/fuzz TARGET SECONDS` (swift build --sanitize=fuzzer --sanitize=address).
import PackageDescription

let library: [Target.Dependency] = [.product(name: "CatdogCore", package: "catdog-dist")]

let package = Package(
    name: "catdog-fuzz",
    dependencies: [.package(name: "catdog-dist", path: "..")],
    targets: [
        .executableTarget(name: "fuzz-checkpoint", dependencies: library),
        .executableTarget(name: "fuzz-pytorch", dependencies: library),
        .executableTarget(name: "fuzz-jpeg", dependencies: library),
        .executableTarget(name: "fuzz-metadata", dependencies: library),
    ]
)
