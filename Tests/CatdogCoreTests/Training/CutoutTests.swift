import CatdogCheckpoint
import CatdogData
import CatdogEngine
import CatdogRun
import Foundation
import XCTest

/// Cutout (`--augment ...,cutout:F`): one square of F times the input's side, centred on a
/// random pixel and clipped at the borders, set to mid-grey; everything else about the sample as
/// without it. The option lives in checkpoints (refused there when out of range) and a run
/// with it resumes bit-exactly.
final class CutoutTests: XCTestCase {
    let stored = 72

    /// `AugmentationTests.gradientSquare`: red 3·x, green 3·y, blue 50, so no pixel is
    /// mid-grey (0.5 in all three channels at unit scaling) and an erased pixel is one that is.
    func gradientSquare() -> [UInt8] { AugmentationTests.gradientSquare(side: stored) }

    func sample(_ source: [UInt8], _ augmentation: Augmentation, sample: Int, size: Int, outputSize: Int?) -> [Float] {
        let out = outputSize ?? size
        var pixels = [Float](repeating: 1, count: out * out * 3)
        var random = Augmentation.stream(seed: 11, epoch: 2, sample: sample)
        source.withUnsafeBufferPointer { src in
            pixels.withUnsafeMutableBufferPointer { dst in
                ImageStore.writeSample(from: src.baseAddress!, storedSize: stored, to: dst.baseAddress!,
                                       preprocessing: Preprocessing(imageSize: size), augmentation: augmentation,
                                       random: &random, outputSize: outputSize)
            }
        }
        return pixels
    }

    /// For the crop path (64 of 72 px) and the resampled one (scale jitter; and a 64 px crop
    /// resampled to 48, as progressive resizing does), 300 samples each, side 0.5 and 0.3:
    /// - every pixel outside the erased square is bit-identical to the same sample without
    ///   cutout, and the erased pixels are mid-grey (0.5) in all three channels;
    /// - the erased pixels form one rectangle of at most round(F·size) a side, exactly that
    ///   unless it touches a border;
    /// - its mean area is F²(1 − F/4)² of the image, what a centre uniform over the pixels
    ///   and a square clipped at the borders give (within 0.015), and squares touch every
    ///   border of the image in some sample.
    func testCutoutErasesOneClippedSquareAndLeavesTheRestAsItWas() {
        let square = gradientSquare()
        let (multiplier, offsets) = Preprocessing(imageSize: 64).affine()
        let grey = 127.5 * multiplier + offsets[0]
        XCTAssertEqual(grey, 0.5, accuracy: 1e-6)
        let cases: [(Augmentation, Int, Int?)] = [
            (Augmentation(flip: true, color: true, crop: true), 64, nil),
            (Augmentation(flip: true, color: true, crop: true, scale: true), 64, nil),
            (Augmentation(flip: true, crop: true), 64, 48),
        ]
        for (base, size, outputSize) in cases {
            for fraction: Float in [0.5, 0.3] {
                var with = base
                with.cutout = fraction
                let n = outputSize ?? size
                let side = Int((fraction * Float(n)).rounded())
                var areas = 0.0
                var touched = (top: false, left: false, bottom: false, right: false)
                let label = "\(base.description) at \(size)→\(n), cutout \(fraction)"
                for s in 0..<300 {
                    let plain = sample(square, base, sample: s, size: size, outputSize: outputSize)
                    let cut = sample(square, with, sample: s, size: size, outputSize: outputSize)
                    var rows = Set<Int>(), columns = Set<Int>(), erased = 0
                    for y in 0..<n {
                        for x in 0..<n {
                            let p = (y * n + x) * 3
                            if cut[p] == grey && cut[p + 1] == grey && cut[p + 2] == grey {
                                rows.insert(y); columns.insert(x); erased += 1
                            } else {
                                XCTAssertEqual(Array(cut[p..<(p + 3)]), Array(plain[p..<(p + 3)]), "\(label), sample \(s), pixel (\(x), \(y))")
                            }
                        }
                    }
                    guard erased > 0 else { XCTFail("\(label), sample \(s): nothing erased"); continue }
                    let (r0, r1, c0, c1) = (rows.min()!, rows.max()!, columns.min()!, columns.max()!)
                    XCTAssertEqual(erased, rows.count * columns.count, "\(label), sample \(s): one rectangle")
                    XCTAssertEqual(rows.count, r1 - r0 + 1, "\(label), sample \(s): contiguous rows")
                    XCTAssertEqual(columns.count, c1 - c0 + 1, "\(label), sample \(s): contiguous columns")
                    XCTAssertLessThanOrEqual(rows.count, side, "\(label), sample \(s)")
                    XCTAssertLessThanOrEqual(columns.count, side, "\(label), sample \(s)")
                    if r0 > 0 && r1 < n - 1 { XCTAssertEqual(rows.count, side, "\(label), sample \(s): an unclipped side") }
                    if c0 > 0 && c1 < n - 1 { XCTAssertEqual(columns.count, side, "\(label), sample \(s): an unclipped side") }
                    touched.top = touched.top || r0 == 0
                    touched.bottom = touched.bottom || r1 == n - 1
                    touched.left = touched.left || c0 == 0
                    touched.right = touched.right || c1 == n - 1
                    areas += Double(erased) / Double(n * n)
                }
                let f = Double(side) / Double(n)
                XCTAssertEqual(areas / 300, f * f * (1 - f / 4) * (1 - f / 4), accuracy: 0.015, label)
                XCTAssertTrue(touched.top && touched.bottom && touched.left && touched.right, "\(label): \(touched)")
            }
        }
    }

    /// `cutout` is cutout:0.5; `cutout:F` takes F in 0.01–1; other sizes are refused naming
    /// the text and the range; the description reads back as the same augmentation; a
    /// configuration written before cutout existed reads as off.
    func testParsingRefusalsAndOlderConfigurations() throws {
        XCTAssertEqual(try Augmentation(parsing: "flip,cutout").cutout, 0.5)
        let parsed = try Augmentation(parsing: "flip,color,crop,scale,cutout:0.3")
        XCTAssertEqual(parsed, Augmentation(flip: true, color: true, crop: true, scale: true, cutout: 0.3))
        XCTAssertEqual(try Augmentation(parsing: parsed.description), parsed)
        for bad in ["cutout:0", "cutout:1.5", "cutout:-0.2", "cutout:nan", "cutout:half", "cutout:"] {
            XCTAssertThrowsError(try Augmentation(parsing: "flip," + bad), bad) { error in
                XCTAssertTrue("\(error)".contains("0.01...1.0"), "\(bad): \(error)")
            }
        }
        let old = try JSONDecoder().decode(Augmentation.self, from: Data(#"{"flip":true,"color":false,"colorShift":20,"crop":true,"scale":true}"#.utf8))
        XCTAssertNil(old.cutout)
        XCTAssertEqual(old, Augmentation(flip: true, crop: true, scale: true))
    }

    /// A checkpoint's metadata naming a cutout size outside 0.01–1 (or not a number) is
    /// refused, naming it.
    func testOutOfRangeCutoutInACheckpointIsRefused() throws {
        func problem(_ cutout: Float?) throws -> String? {
            try metadataProblem { $0.augmentation.cutout = cutout }
        }
        XCTAssertNil(try problem(nil))
        XCTAssertNil(try problem(0.5))
        for bad: Float in [0, 1.01, -0.5, .nan, .infinity, 1e30] {
            let message = try problem(bad)
            XCTAssertTrue(message?.contains("cutout size") == true, "\(bad): \(message ?? "accepted")")
        }
    }

    func arguments(_ data: String, _ folder: String, _ augment: String) -> [String] {
        ["train", "--data", data, "--checkpoint-dir", folder, "--model", "resnet", "--image-size", "32", "--epochs", "2",
         "--batch-size", "24", "--patience", "0", "--checkpoint-every", "3", "--keep", "20", "--ema", "0", "--augment", augment]
    }

    /// Two epochs with cutout straight and resumed from update 3 end bit-identical; the
    /// augmentation is in the log and the checkpoint; the optimizer's state differs from the
    /// same run without cutout (so it reaches the samples). A size out of range is refused on
    /// the error's first line (then the usage) before anything runs.
    func testARunWithCutoutResumesBitExactlyAndDiffersFromOneWithout() throws {
        let data = try sharedSubset(self, perClass: 60)
        let straight = try temporaryFolder(self), resumed = try temporaryFolder(self), without = try temporaryFolder(self)
        let first = try CLI.run(arguments(data, straight, "flip,crop,cutout:0.4"))
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertTrue(first.stdout.contains("augment flip,crop,cutout:0.4"), first.stdout)
        let second = try CLI.run(arguments(data, resumed, "flip,crop,cutout:0.4") + ["--resume", straight + "/ckpt-e0000-s00000003.safetensors.zst"])
        XCTAssertEqual(second.status, 0, second.output)
        let plain = try CLI.run(arguments(data, without, "flip,crop"))
        XCTAssertEqual(plain.status, 0, plain.output)
        let a = try LoadedCheckpoint(path: straight + "/last.safetensors.zst")
        let b = try LoadedCheckpoint(path: resumed + "/last.safetensors.zst")
        let c = try LoadedCheckpoint(path: without + "/last.safetensors.zst")
        XCTAssertEqual(a.metadata.config.augmentation.cutout, 0.4)
        XCTAssertNil(c.metadata.config.augmentation.cutout)
        try assertSameTensorsAndHistory(a, b)
        XCTAssertNotEqual(try a.file.array("optimizer/m"), try c.file.array("optimizer/m"))

        let refused = try CLI.run(["train", "--data", data, "--checkpoint-dir", try temporaryFolder(self), "--augment", "flip,cutout:3"])
        XCTAssertNotEqual(refused.status, 0, refused.output)
        XCTAssertTrue(refused.stderr.split(separator: "\n").first?.contains("cutout size '3' is not a fraction") == true, refused.output)
        XCTAssertFalse(refused.output.contains("Fatal error"), refused.output)
    }
}
