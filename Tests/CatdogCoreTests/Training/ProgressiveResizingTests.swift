import CatdogCheckpoint
import CatdogData
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation
import XCTest

/// Progressive resizing (`--resize-from`): the size schedule, a network at another input size
/// that computes with the full-size network's buffers, samples resampled to the epoch's size,
/// and a run that changes size and resumes bit-exactly.
final class ProgressiveResizingTests: XCTestCase {
    /// 64 → 128 in steps of 16, the full size at 3/4 of the run.
    func testTheSizeGrowsInStepsAndArrivesAtThreeQuarters() {
        var config = TrainingConfig()
        config.imageSize = 128
        XCTAssertEqual(config.trainingSize(atFraction: 0.3), 128, "off without resizeFrom")
        config.resizeFrom = 64
        let fractions = [0, 0.18, 0.19, 0.5, 0.74, 0.75, 1.0]
        XCTAssertEqual(fractions.map { config.trainingSize(atFraction: $0) }, [64, 64, 80, 96, 112, 128, 128])
        // With a training size below the image size the growth ends there (at 3/4 all the same).
        config.imageSize = 160
        config.trainSize = 128
        XCTAssertEqual(fractions.map { config.trainingSize(atFraction: $0) }, [64, 64, 80, 96, 112, 128, 128])
        config.resizeFrom = nil
        XCTAssertEqual(fractions.map { config.trainingSize(atFraction: $0) }, [128, 128, 128, 128, 128, 128, 128])
        XCTAssertTrue(config.trainsAtOtherSizes)
    }

    /// The resnet at 32 px built sharing the 64 px one's buffers uses the very same objects
    /// (a change through one is seen by the other); vgg, whose dense layer depends on the size,
    /// is refused.
    func testAResizedNetworkSharesTheBuffersOrIsRefused() throws {
        let full = try ModelZoo.build("resnet", imageSize: 64)
        full.initialize(seed: 3)
        let before = full.parameters.array
        let small = try ModelZoo.build("resnet", imageSize: 32, sharing: full)
        XCTAssertTrue(small.parameters === full.parameters && small.gradients === full.gradients && small.state === full.state)
        XCTAssertEqual(full.parameters.array, before, "building the resized network must not re-initialise the weights")
        XCTAssertEqual(small.inputShape.height, 32)
        small.reserve(maxBatch: 2)
        for i in 0..<(2 * small.inputShape.count) { small.input[i] = Float(i % 7) / 7 }
        let logits = small.forward(batch: 2, context: PassContext(training: false))
        XCTAssertTrue(logits[0].isFinite && logits[1].isFinite)
        let vgg = try ModelZoo.build("vgg", imageSize: 64)
        XCTAssertThrowsError(try ModelZoo.build("vgg", imageSize: 32, sharing: vgg))
    }

    /// A sample at half the working size is the centre crop resampled: on a square whose red
    /// channel is 3·x, output pixel x samples stored column 4 + 2x + 0.5 (1e-3).
    func testASampleAtAnotherSizeIsTheCropResampled() {
        let stored = 72, size = 64
        var square = [UInt8](repeating: 0, count: stored * stored * 3)
        for y in 0..<stored { for x in 0..<stored { square[(y * stored + x) * 3] = UInt8(3 * x) } }
        var out = [Float](repeating: 0, count: 32 * 32 * 3)
        var random = Random(seed: 0)
        square.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                ImageStore.writeSample(from: src.baseAddress!, storedSize: stored, to: dst.baseAddress!,
                                       preprocessing: Preprocessing(imageSize: size), augmentation: .none, random: &random, outputSize: 32)
            }
        }
        for x in [0, 5, 31] {
            XCTAssertEqual(out[(7 * 32 + x) * 3] * 255, 3 * (4 + 2 * Float(x) + 0.5), accuracy: 1e-3, "column \(x)")
        }
    }

    /// resnet 16 → 32 px over 4 epochs: the log names both sizes; resumed from update 3 (in
    /// the first, 16 px epoch) the run ends bit-identical, streaming
    /// its images where the first run had them in the node cache; vgg is refused with a reason.
    func testARunGrowsItsInputAndResumesBitExact() throws {
        let data = try sharedSubset(self, perClass: 60)
        func arguments(_ folder: String, _ extra: [String] = []) -> [String] {
            ["train", "--data", data, "--checkpoint-dir", folder, "--model", "resnet", "--image-size", "32", "--resize-from", "16",
             "--epochs", "4", "--batch-size", "24", "--patience", "0", "--checkpoint-every", "3", "--keep", "30"] + extra
        }
        let straight = try temporaryFolder(self), resumed = try temporaryFolder(self)
        let first = try CLI.run(arguments(straight))
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertTrue(first.stdout.contains("epoch 1: training at 16x16 (progressive resizing to 32x32; validation at 32x32)"), first.stdout)
        XCTAssertTrue(first.stdout.contains("epoch 4: training at 32x32"), first.stdout)
        let middle = straight + "/ckpt-e0000-s00000003.safetensors.zst"
        XCTAssertEqual(try LoadedCheckpoint(path: middle).metadata.epochImageSize, 16)
        let second = try CLI.run(arguments(resumed, ["--resume", middle, "--cache", "none"]))
        XCTAssertEqual(second.status, 0, second.output)
        XCTAssertTrue(second.stdout.contains("epoch 1: training at 16x16"), second.stdout)
        let a = try LoadedCheckpoint(path: straight + "/last.safetensors.zst")
        let b = try LoadedCheckpoint(path: resumed + "/last.safetensors.zst")
        XCTAssertEqual(a.metadata.history.count, 4)
        // Each epoch's size, in the history and in metrics.jsonl (16 px until 3/4 of the run).
        XCTAssertEqual(a.metadata.history.map(\.train_size), [16, 16, 16, 32])
        let lines = try String(contentsOfFile: straight + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(try lines.map { try JSONDecoder().decode(EpochMetrics.self, from: Data($0.utf8)).train_size }, [16, 16, 16, 32],
                       lines.joined(separator: "\n"))
        XCTAssertEqual(a.metadata.imageSize, 32)
        XCTAssertNil(a.metadata.epochImageSize)
        try assertSameTensorsAndHistory(a, b)
        let refused = try CLI.run(["train", "--data", data, "--checkpoint-dir", try temporaryFolder(self), "--model", "vgg",
                                   "--image-size", "64", "--resize-from", "32"])
        XCTAssertEqual(refused.status, 64, refused.output)
        XCTAssertTrue(refused.stderr.contains("training at another size than --image-size needs a model with global pooling"), refused.stderr)
    }

    /// `--train-size 24 --image-size 32`: every epoch trains at 24 px, validation and the
    /// checkpoint are at 32 (the metadata's size; `evaluate` scores the best checkpoint at 32
    /// to what training reported, 1e-4), a resume from update 3 ends bit-identical, and sizes
    /// that cannot work are refused in one line.
    func testARunTrainsAtItsTrainingSizeAndScoresAtTheImageSize() throws {
        let data = try sharedSubset(self, perClass: 60)
        func arguments(_ folder: String, _ extra: [String] = []) -> [String] {
            ["train", "--data", data, "--checkpoint-dir", folder, "--model", "resnet", "--image-size", "32", "--train-size", "24",
             "--epochs", "2", "--batch-size", "24", "--patience", "0", "--checkpoint-every", "3", "--keep", "30"] + extra
        }
        let straight = try temporaryFolder(self), resumed = try temporaryFolder(self)
        let first = try CLI.run(arguments(straight))
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertTrue(first.stdout.contains("epoch 1: training at 24x24 (validation at 32x32)"), first.stdout)
        XCTAssertFalse(first.stdout.contains("epoch 2: training at"), "the size does not change: \(first.stdout)")
        let middle = straight + "/ckpt-e0000-s00000003.safetensors.zst"
        XCTAssertEqual(try LoadedCheckpoint(path: middle).metadata.epochImageSize, 24)
        let second = try CLI.run(arguments(resumed, ["--resume", middle]))
        XCTAssertEqual(second.status, 0, second.output)
        let a = try LoadedCheckpoint(path: straight + "/last.safetensors.zst")
        let b = try LoadedCheckpoint(path: resumed + "/last.safetensors.zst")
        XCTAssertEqual(a.metadata.imageSize, 32)
        XCTAssertEqual(a.metadata.config.trainSize, 24)
        try assertSameTensorsAndHistory(a, b)
        let best = try LoadedCheckpoint(path: straight + "/best.safetensors.zst")
        let bestEpoch = try XCTUnwrap(best.metadata.history.min { $0.val_loss < $1.val_loss })
        let evaluated = try CLI.run(["evaluate", "--checkpoint", straight + "/best.safetensors.zst", "--data", data,
                                     "--validation-split", "--tta-flip", "--json"])
        XCTAssertEqual(evaluated.status, 0, evaluated.output)
        let json = try JSONSerialization.jsonObject(with: Data(evaluated.stdout.split(separator: "\n").last!.utf8)) as! [String: Any]
        XCTAssertEqual(json["logloss"] as! Double, bestEpoch.val_loss, accuracy: 1e-4)
        // `evaluate --image-size` scores at another size (here the training's): a score, not the same one.
        let smaller = try CLI.run(["evaluate", "--checkpoint", straight + "/best.safetensors.zst", "--data", data,
                                   "--validation-split", "--tta-flip", "--json", "--image-size", "24"])
        XCTAssertEqual(smaller.status, 0, smaller.output)
        let at24 = try JSONSerialization.jsonObject(with: Data(smaller.stdout.split(separator: "\n").last!.utf8)) as! [String: Any]
        XCTAssertEqual(at24["count"] as? Int, json["count"] as? Int)
        XCTAssertNotEqual(at24["logloss"] as! Double, json["logloss"] as! Double)
        for (extra, expected) in [(["--model", "resnet", "--train-size", "32"], "--train-size must be at least 16 and smaller than --image-size (32)"),
                                  (["--model", "resnet", "--train-size", "24", "--resize-from", "24"], "--resize-from must be at least 16 and smaller than --train-size (24)"),
                                  (["--model", "vgg", "--train-size", "24"], "--train-size: vgg has other weights at 24x24")] {
            let refused = try CLI.run(["train", "--data", data, "--checkpoint-dir", try temporaryFolder(self), "--image-size", "32"] + extra)
            XCTAssertEqual(refused.status, 64, "\(extra): \(refused.output)")
            XCTAssertTrue(refused.stderr.contains(expected), "\(extra): \(refused.stderr)")
        }
    }
}
