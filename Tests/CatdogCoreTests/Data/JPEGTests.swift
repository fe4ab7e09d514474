import CatdogData
import CatdogEngine
import CatdogSupport
import Foundation
import XCTest

final class JPEGTests: XCTestCase {
    let codec = JPEGCodec()

    func testDecodesAtSmallestDCTScaleStillLargeEnough() throws {
        let data = try codec.encode(pattern(width: 500, height: 375), width: 500, height: 375)
        let image = try codec.decode(data, minWidth: 72, minHeight: 72)
        // 1/4 gives 125x94 (≥ 72); 1/8 would give 63x47, too small.
        XCTAssertEqual(image.width, 125)
        XCTAssertEqual(image.height, 94)
        let full = try codec.decode(data)
        XCTAssertEqual(full.width, 500)
        XCTAssertEqual(try codec.dimensions(of: data).height, 375)
    }

    func testSkipsTheSlowNonPowerOfTwoScales() throws {
        // 200x200 to at least 144: 3/4 (150) would fit but runs in plain C, slower than 1/1.
        let data = try codec.encode(pattern(width: 200, height: 200), width: 200, height: 200)
        XCTAssertEqual(try codec.decode(data, minWidth: 144, minHeight: 144).width, 200)
        // To at least 72: 1/2 (100), not 3/8 (75).
        XCTAssertEqual(try codec.decode(data, minWidth: 72, minHeight: 72).width, 100)
        XCTAssertEqual(try codec.decode(data, minWidth: 1, minHeight: 1).width, 25)
    }

    func testDecodingIntoReusedStorageGivesTheSameImage() throws {
        var reused = RGBImage(width: 0, height: 0, pixels: [])
        for (w, h) in [(300, 200), (40, 30), (200, 200), (17, 300)] {
            let data = try codec.encode(pattern(width: w, height: h), width: w, height: h)
            try codec.decode(data, minWidth: 20, minHeight: 20, into: &reused)
            let fresh = try codec.decode(data, minWidth: 20, minHeight: 20)
            XCTAssertEqual(reused.width, fresh.width, "\(w)x\(h)")
            XCTAssertEqual(reused.height, fresh.height, "\(w)x\(h)")
            XCTAssertTrue(reused.pixels == fresh.pixels, "\(w)x\(h)")
        }
    }

    func testFastResizeMatchesTheReferenceByteForByte() {
        // Shrinking (area, up to 4 taps), enlarging (bilinear), both fits, odd and tiny sizes.
        let cases: [(Int, Int, Int)] = [(200, 200, 144), (100, 100, 72), (200, 200, 72), (250, 188, 144), (500, 375, 72),
                                        (5, 5, 17), (1, 1, 8), (3, 7, 72), (997, 13, 72), (64, 64, 64), (143, 77, 144), (2, 9, 3)]
        // On every instruction set of our kernels this CPU runs: the same bytes everywhere.
        try forEachKernelInstructionSet([.auto, .avx2, .baseline]) { kernels in
            var random = Random(seed: 7)
            var scratch = Resize.Scratch()
            for (w, h, size) in cases {
                let image = RGBImage(width: w, height: h, pixels: (0..<(w * h * 3)).map { _ in UInt8(random.below(256)) })
                for fit in Resize.Fit.allCases {
                    let expected = ReferenceResize.square(image, size: size, fit: fit)
                    let differing = { (a: [UInt8]) in a.count == expected.count ? zip(a, expected).filter { $0 != $1 }.count : -1 }
                    XCTAssertEqual(differing(Resize.square(image, size: size, fit: fit)), 0,
                                   "bytes differing, \(w)x\(h) to \(size) \(fit), kernels \(kernels)")
                    // Into a buffer with scratch reused from a larger image.
                    var out = [UInt8](repeating: 0, count: size * size * 3)
                    out.withUnsafeMutableBufferPointer { Resize.square(image, size: size, fit: fit, into: $0.baseAddress!, scratch: &scratch) }
                    XCTAssertEqual(differing(out), 0, "bytes differing, \(w)x\(h) to \(size) \(fit), reused scratch, kernels \(kernels)")
                }
            }
        }
    }

    func testGrayscaleBecomesRGB() throws {
        let data = try codec.encode([UInt8](repeating: 100, count: 16 * 12), width: 16, height: 12, format: .gray)
        let image = try codec.decode(data)
        XCTAssertEqual(image.pixels.count, 16 * 12 * 3)
        for v in image.pixels { XCTAssertEqual(Int(v), 100, accuracy: 2) }
    }

    func testCMYKBecomesRGB() throws {
        // Adobe (inverted) CMYK: 255 means no ink. No cyan ink, full magenta and yellow: red.
        var cmyk = [UInt8]()
        for _ in 0..<(16 * 16) { cmyk += [255, 0, 0, 255] }
        let data = try codec.encode(cmyk, width: 16, height: 16, format: .cmyk)
        let image = try codec.decode(data)
        XCTAssertEqual(image.pixels.count, 16 * 16 * 3)
        let centre = (8 * 16 + 8) * 3
        XCTAssertEqual(Int(image.pixels[centre]), 255, accuracy: 6)
        XCTAssertEqual(Int(image.pixels[centre + 1]), 0, accuracy: 6)
        XCTAssertEqual(Int(image.pixels[centre + 2]), 0, accuracy: 6)
    }

    func testTinyAndOddSizesResizeToTheSquare() throws {
        for (w, h) in [(1, 1), (3, 7), (997, 13), (64, 64)] {
            let data = try codec.encode(pattern(width: w, height: h), width: w, height: h, quality: 95)
            let image = try codec.decode(data, minWidth: 72, minHeight: 72)
            for fit in Resize.Fit.allCases {
                XCTAssertEqual(Resize.square(image, size: 72, fit: fit).count, 72 * 72 * 3, "\(w)x\(h) \(fit)")
            }
        }
    }

    func testAreaResizeAveragesAndBilinearKeepsOrder() {
        // A 2x2 checkerboard of black and white shrunk by 2 is uniform grey.
        var board = [UInt8](repeating: 0, count: 8 * 8 * 3)
        for y in 0..<8 { for x in 0..<8 where (x + y) % 2 == 0 { for c in 0..<3 { board[(y * 8 + x) * 3 + c] = 255 } } }
        let small = Resize.square(RGBImage(width: 8, height: 8, pixels: board), size: 4, fit: .squash)
        for v in small { XCTAssertEqual(Int(v), 128, accuracy: 1) }
        // Enlarging a left-to-right ramp keeps it non-decreasing.
        let ramp = pattern(width: 5, height: 5)
        let big = Resize.square(RGBImage(width: 5, height: 5, pixels: ramp), size: 17, fit: .squash)
        for x in 1..<17 { XCTAssertGreaterThanOrEqual(big[x * 3], big[(x - 1) * 3]) }
        // Centre crop of a wide image takes its middle.
        var wide = [UInt8](repeating: 0, count: 30 * 10 * 3)
        for y in 0..<10 { for x in 10..<20 { wide[(y * 30 + x) * 3] = 200 } }
        let crop = Resize.square(RGBImage(width: 30, height: 10, pixels: wide), size: 10, fit: .crop)
        for i in stride(from: 0, to: crop.count, by: 3) { XCTAssertEqual(crop[i], 200) }
    }

    func testBadInputIsClassifiedNotThrownAsACrash() throws {
        let good = try codec.encode(pattern(width: 40, height: 30), width: 40, height: 30)
        let png = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + [UInt8](repeating: 0, count: 40))
        var random = Random(seed: 1)
        let noise = Data((0..<500).map { _ in UInt8(random.below(256)) })
        var bigHeader = good
        // Rewrite the frame header (SOF0) to claim 60000x60000 pixels.
        var marker = 2  // walk the segments after SOI: FF xx, 2-byte big-endian length
        while marker + 9 < bigHeader.count, bigHeader[marker + 1] != 0xC0 {
            marker += 2 + Int(bigHeader[marker + 2]) << 8 + Int(bigHeader[marker + 3])
        }
        XCTAssertEqual(bigHeader[marker + 1], 0xC0, "no SOF0 in the encoder's output")
        // SOF0: FF C0, length (2), precision (1), height (2), width (2).
        bigHeader[marker + 5] = 0xEA; bigHeader[marker + 6] = 0x60; bigHeader[marker + 7] = 0xEA; bigHeader[marker + 8] = 0x60
        let cases: [(Data, ImageProblem)] = [
            (Data(), .empty), (Data("hello, I am text".utf8), .notJPEG), (png, .notJPEG), (noise, .notJPEG),
            (good.prefix(good.count / 2), .unreadable), (Data([0xFF, 0xD8, 0xFF, 0xE0, 0, 16]), .unreadable),
            (bigHeader, .tooLarge),
        ]
        for (index, (data, expected)) in cases.enumerated() {
            XCTAssertThrowsError(try codec.decode(data, minWidth: 64, minHeight: 64), "case \(index)") { error in
                XCTAssertEqual((error as? ImageError)?.problem, expected, "case \(index): \(error)")
            }
        }
    }

    /// A progressive JPEG decodes; the same file with its last scan repeated 5,000 times
    /// (each a full pass over the image: minutes for a large one) is refused as too large before
    /// any decoding, in well under a second.
    func testAJPEGWithThousandsOfScansIsRefusedBeforeDecoding() throws {
        let side = 1000
        // A flat image: its scans are a few bytes each, so thousands fit a small file, as in the
        // crafted one (2 MB, 20,000 scans).
        let progressive = try codec.encode([UInt8](repeating: 128, count: side * side * 3), width: side, height: side, progressive: true)
        let scans = JPEGCodec.scanCount(progressive)
        XCTAssertGreaterThan(scans, 2, "the encoder wrote no progressive scans")
        XCTAssertLessThanOrEqual(scans, JPEGCodec.maxScans)
        XCTAssertNoThrow(try codec.decode(progressive, minWidth: side, minHeight: side))
        // The last scan: from its SOS marker to the end-of-image marker.
        let bytes = [UInt8](progressive)
        let lastScan = try XCTUnwrap((0..<(bytes.count - 1)).last { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xDA })
        let body = bytes[lastScan..<(bytes.count - 2)]
        var hostile = [UInt8](bytes[..<(bytes.count - 2)])
        for _ in 0..<5_000 { hostile += body }
        hostile += [0xFF, 0xD9]
        XCTAssertEqual(JPEGCodec.scanCount(Data(hostile)), scans + 5_000)
        let start = Date()
        XCTAssertThrowsError(try codec.decode(Data(hostile), minWidth: 64, minHeight: 64)) { error in
            XCTAssertEqual((error as? ImageError)?.problem, .tooLarge, "\(error)")
            XCTAssertTrue("\(error)".contains("scans"), "\(error)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 1, "refused from the bytes, without decoding")
    }

    func testRealOriginalsOfVariedSizesDecode() throws {
        let folder = sharedData + "/originals"
        var sizes = Set<Int>()
        for name in ["cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "dog.7.jpg", "dog.499.jpg"] {
            let data = try XCTUnwrap(FileManager.default.contents(atPath: "\(folder)/\(name)"), "missing \(folder)/\(name)")
            let (w, h) = try codec.dimensions(of: data)
            sizes.insert(w * 10000 + h)
            let image = try codec.decode(data, minWidth: 72, minHeight: 72)
            XCTAssertGreaterThanOrEqual(min(image.width, image.height), 72)
            XCTAssertLessThan(min(image.width, image.height), 2 * 72 + 16, "\(name) should be DCT-downscaled")
        }
        XCTAssertGreaterThan(sizes.count, 2, "originals should have varied sizes")
    }
}
