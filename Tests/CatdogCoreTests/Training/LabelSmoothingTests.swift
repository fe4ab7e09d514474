import CatdogCheckpoint
import CatdogData
import CatdogEngine
import CatdogRun
import Foundation
import XCTest

/// `--label-smoothing ε`: the loss's gradient is that of the logloss against y·(1 − ε) + ε/2,
/// the loss reported stays the plain logloss, the option lives in checkpoints (refused there
/// when out of range) and a run with it resumes bit-exactly.
final class LabelSmoothingTests: XCTestCase {
    let logits: [Float] = [-30, -3, -0.5, 0, 0.7, 4, 40]
    let labels: [Float] = [0, 1, 0, 1, 1, 0, 1]

    /// Against a finite difference of the smoothed loss in double precision (1e-6 of a
    /// gradient of at most 1/7), for ε of 0, 0.1 and 0.3.
    func testTheGradientIsThatOfTheLossAgainstTheSmoothedTarget() {
        var plain = [Float](repeating: 0, count: logits.count)
        let reference = BinaryCrossEntropy.forwardBackward(logits: logits, labels: labels, count: logits.count, normalizer: 7, dLogits: &plain)
        for epsilon: Float in [0, 0.1, 0.3] {
            var d = [Float](repeating: 0, count: logits.count)
            let result = BinaryCrossEntropy.forwardBackward(logits: logits, labels: labels, count: logits.count, normalizer: 7,
                                                            dLogits: &d, smoothing: epsilon)
            // The sum reported is the plain logloss, whatever ε.
            XCTAssertEqual(result.lossSum, reference.lossSum, "ε \(epsilon)")
            XCTAssertEqual(result.correct, reference.correct, "ε \(epsilon)")
            for (i, (z, y)) in zip(logits, labels).enumerated() {
                let target = Double(y) * (1 - Double(epsilon)) + Double(epsilon) / 2
                let f = { (v: Double) -> Double in max(v, 0) - v * target + log1p(exp(-abs(v))) }
                let h = 1e-3
                let numeric = (f(Double(z) + h) - f(Double(z) - h)) / (2 * h) / 7
                XCTAssertEqual(Double(d[i]), numeric, accuracy: 1e-6, "ε \(epsilon), logit \(z), label \(y)")
            }
            if epsilon == 0 { XCTAssertEqual(d, plain, "ε 0 is the plain gradient, bit for bit") }
        }
        // The smoothed loss is least where the probability is the target: a dog at 1 − ε/2.
        let epsilon: Float = 0.2
        var z = Float(log((1 - 0.1) / 0.1)), d: Float = 1
        var dog: Float = 1
        _ = BinaryCrossEntropy.forwardBackward(logits: &z, labels: &dog, count: 1, normalizer: 1, dLogits: &d, smoothing: epsilon)
        XCTAssertEqual(d, 0, accuracy: 1e-6)
    }

    /// A checkpoint's metadata naming ε at or beyond 0.5 (every target one half), below 0 or
    /// not a number is refused, naming the number and its range.
    func testOutOfRangeSmoothingInACheckpointIsRefused() throws {
        func problem(_ smoothing: Double?) throws -> String? {
            try metadataProblem { $0.labelSmoothing = smoothing }
        }
        XCTAssertNil(try problem(nil))
        XCTAssertNil(try problem(0.1))
        for bad in [0.5, 0.9, -0.1, .nan, .infinity] {
            let message = try problem(bad)
            XCTAssertTrue(message?.contains("label smoothing \(bad) is outside 0.0...0.49") == true, "\(bad): \(message ?? "accepted")")
        }
    }

    func arguments(_ data: String, _ folder: String, _ extra: [String]) -> [String] {
        ["train", "--data", data, "--checkpoint-dir", folder, "--model", "resnet", "--image-size", "32", "--epochs", "2",
         "--batch-size", "24", "--patience", "0", "--checkpoint-every", "3", "--keep", "20", "--ema", "0"] + extra
    }

    /// Two epochs with ε 0.1 straight and resumed from update 3 end bit-identical; ε is in the
    /// log and the checkpoint, and the weights differ from the same run without it (so the
    /// option reaches the step). Values out of range or with a frozen backbone are refused in
    /// one line before anything runs.
    func testARunWithSmoothingResumesBitExactlyAndDiffersFromOneWithout() throws {
        let data = try sharedSubset(self, perClass: 60)
        let straight = try temporaryFolder(self), resumed = try temporaryFolder(self), without = try temporaryFolder(self)
        let first = try CLI.run(arguments(data, straight, ["--label-smoothing", "0.1"]))
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertTrue(first.stdout.contains("; label smoothing 0.1"), first.stdout)
        let second = try CLI.run(arguments(data, resumed, ["--label-smoothing", "0.1", "--resume",
                                                           straight + "/ckpt-e0000-s00000003.safetensors.zst"]))
        XCTAssertEqual(second.status, 0, second.output)
        let plain = try CLI.run(arguments(data, without, []))
        XCTAssertEqual(plain.status, 0, plain.output)
        let a = try LoadedCheckpoint(path: straight + "/last.safetensors.zst")
        let b = try LoadedCheckpoint(path: resumed + "/last.safetensors.zst")
        let c = try LoadedCheckpoint(path: without + "/last.safetensors.zst")
        XCTAssertEqual(a.metadata.config.labelSmoothing, 0.1)
        XCTAssertNil(c.metadata.config.labelSmoothing)
        try assertSameTensorsAndHistory(a, b)
        XCTAssertNotEqual(try a.file.array("optimizer/m"), try c.file.array("optimizer/m"))

        for (extra, expected) in [(["--label-smoothing", "0.5"], "--label-smoothing must be from 0 (off) to 0.49"),
                                  (["--label-smoothing", "nan"], "--label-smoothing must be from 0 (off) to 0.49"),
                                  (["--model", "efficientnet-lite0", "--label-smoothing", "0.1"], "--label-smoothing is for runs from scratch")] {
            let refused = try CLI.run(["train", "--data", data, "--checkpoint-dir", try temporaryFolder(self)] + extra)
            XCTAssertNotEqual(refused.status, 0, refused.output)
            XCTAssertTrue(refused.stderr.contains(expected), "\(extra): \(refused.output)")
            XCTAssertFalse(refused.output.contains("Fatal error"), refused.output)
        }
    }
}
