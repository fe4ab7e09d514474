import CatdogData
import CatdogRun
import Foundation
import XCTest

/// The shared Kaggle images, beside the repository (`../shared`).
let sharedData = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("shared/data/dogs-vs-cats").path

/// A fresh temporary folder, removed at the end of the test.
func temporaryFolder(_ test: XCTestCase) throws -> String {
    let path = NSTemporaryDirectory() + "catdog-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
    return path
}

/// A smooth RGB test pattern: red rises left to right, green top to bottom, blue constant.
func pattern(width: Int, height: Int) -> [UInt8] {
    var pixels = [UInt8](repeating: 0, count: width * height * 3)
    for y in 0..<height {
        for x in 0..<width {
            let i = (y * width + x) * 3
            pixels[i] = UInt8(255 * x / max(width - 1, 1))
            pixels[i + 1] = UInt8(255 * y / max(height - 1, 1))
            pixels[i + 2] = 128
        }
    }
    return pixels
}

/// `count` generated JPEGs of `side` × `side` (the test pattern) in `folder`, named as Kaggle's
/// are, cats and dogs alternating: the tiny training folder of the in-process tests, which
/// train `simple` at 16 px on it (`tinyConfig`).
func writeLabeledPatterns(_ count: Int, side: Int, to folder: String) throws {
    let codec = JPEGCodec()
    for i in 0..<count {
        try codec.encode(pattern(width: side, height: side), width: side, height: side)
            .write(to: URL(fileURLWithPath: "\(folder)/\(i % 2 == 0 ? "cat" : "dog").\(i).jpg"))
    }
}

/// `simple` at 16 px, a quarter of the images for validation, global batch `batch`.
func tinyConfig(batch: Int) -> TrainingConfig {
    var config = TrainingConfig()
    config.model = "simple"
    config.imageSize = 16
    config.globalBatch = batch
    config.validationFraction = 0.25
    return config
}
