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
