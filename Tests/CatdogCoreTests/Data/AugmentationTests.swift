import CatdogData
import CatdogSupport
import Foundation
import XCTest

/// Scale jitter (`--augment scale`): a window of random area and aspect, resampled to the
/// working size, checked on synthetic stored squares whose pixels say where they came from.
final class AugmentationTests: XCTestCase {
    let size = 64, stored = 72
    let scaled = Augmentation(scale: true)

    func gradientSquare() -> [UInt8] { AugmentationTests.gradientSquare(side: stored) }

    /// A stored square whose red channel is 3·x and green 3·y, blue constant 50 (side ≤ 85).
    static func gradientSquare(side: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: side * side * 3)
        for y in 0..<side {
            for x in 0..<side {
                bytes[(y * side + x) * 3] = UInt8(3 * x)
                bytes[(y * side + x) * 3 + 1] = UInt8(3 * y)
                bytes[(y * side + x) * 3 + 2] = 50
            }
        }
        return bytes
    }

    /// The network input for one draw, in levels of 255 (unit scaling undone).
    func sample(_ source: [UInt8], _ augmentation: Augmentation, seed: Int) -> [Float] {
        var out = [Float](repeating: 0, count: size * size * 3)
        var random = Augmentation.stream(seed: 7, epoch: 0, sample: seed)
        source.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                ImageStore.writeSample(from: src.baseAddress!, storedSize: stored, to: dst.baseAddress!,
                                       preprocessing: Preprocessing(imageSize: size), augmentation: augmentation, random: &random)
            }
        }
        return out.map { $0 * 255 }
    }

    /// Windows span 0.5–1.25 of the working area at aspect 3:4–4:3 (clipped to the stored
    /// square): the red slope along a row gives the window's width (39–72 px), the green slope
    /// down a column its height; both vary between samples, every value stays a blend of
    /// neighbours (within the square's range), and blue stays 50 (1e-3).
    func testScaleJitterResamplesWindowsOfRandomSizeAndAspect() {
        let square = gradientSquare()
        var widths: [Float] = [], aspects: [Float] = []
        for s in 0..<200 {
            let out = sample(square, scaled, seed: s)
            let width = (out[(size - 1) * 3] - out[0]) / 3 * Float(size) / Float(size - 1)
            let height = (out[((size - 1) * size) * 3 + 1] - out[1]) / 3 * Float(size) / Float(size - 1)
            XCTAssertGreaterThanOrEqual(width, 38.5, "sample \(s)")
            XCTAssertLessThanOrEqual(width, 72.01, "sample \(s)")
            XCTAssertGreaterThanOrEqual(height, 38.5, "sample \(s)")
            XCTAssertLessThanOrEqual(height, 72.01, "sample \(s)")
            widths.append(width)
            aspects.append(width / height)
            for y in [0, 31, 63] {
                for x in 1..<size {
                    let here = out[(y * size + x) * 3], left = out[(y * size + x - 1) * 3]
                    XCTAssertGreaterThan(here, left, "red rises left to right, sample \(s) row \(y)")
                }
            }
            XCTAssertEqual(out[2], 50, accuracy: 1e-3)
            XCTAssertEqual(out[out.count - 1], 50, accuracy: 1e-3)
            XCTAssertTrue(out.allSatisfy { $0 >= -1e-3 && $0 <= 3 * Float(stored - 1) + 1e-3 })
        }
        XCTAssertGreaterThan(widths.max()! - widths.min()!, 20, "zoom varies")
        XCTAssertLessThan(aspects.min()!, 0.85)
        XCTAssertGreaterThan(aspects.max()!, 1.15)
    }

    /// With flip the rows fall instead; the same (seed, epoch, sample) gives the same pixels.
    func testScaleJitterMirrorsAndIsKeyedByItsStream() {
        let square = gradientSquare()
        let both = Augmentation(flip: true, scale: true)
        var flipped = 0
        for s in 0..<40 {
            let out = sample(square, both, seed: s)
            XCTAssertEqual(out, sample(square, both, seed: s))
            if out[0] > out[(size - 1) * 3] { flipped += 1 }
        }
        XCTAssertGreaterThan(flipped, 5)
        XCTAssertLessThan(flipped, 35)
    }

    /// `all,scale` parses to the four; `all` stays the study's three; a configuration written
    /// before scale jitter existed reads as off.
    func testParsingAndOlderConfigurations() throws {
        let parsed = try Augmentation(parsing: "all,scale")
        XCTAssertEqual(parsed, Augmentation(flip: true, color: true, crop: true, scale: true))
        XCTAssertEqual(parsed.description, "flip,color,crop,scale")
        XCTAssertEqual(try Augmentation(parsing: "all"), .all)
        XCTAssertNil(Augmentation.all.scale)
        let old = try JSONDecoder().decode(Augmentation.self, from: Data(#"{"flip":true,"color":false,"colorShift":20,"crop":true}"#.utf8))
        XCTAssertEqual(old, Augmentation(flip: true, crop: true))
        XCTAssertThrowsError(try Augmentation(parsing: "zoom"))
    }
}
