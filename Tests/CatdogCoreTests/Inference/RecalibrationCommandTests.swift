import CatdogInference
import CatdogRun
import Foundation
import XCTest

/// `evaluate --recalibrate N` (precise BatchNorm at the scoring size) on a resnet trained for
/// the purpose (32 px, one epoch on 80 images: it need not be good, only real).
final class RecalibrationCommandTests: XCTestCase {
    private func logloss(_ result: CLIResult, _ what: String) throws -> Double {
        XCTAssertEqual(result.status, 0, "\(what): \(result.output)")
        let line = try XCTUnwrap(result.stdout.split(separator: "\n").last, "\(what): no output")
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(what): \(line)")
        return try XCTUnwrap(json["logloss"] as? Double, "\(what): \(line)")
    }

    /// `model` trained at 32 px for one epoch on the first `perClass` cats and dogs: the folder
    /// of images and the run folder.
    private func trainedRun(_ model: String, perClass: Int, batch: Int) throws -> (images: String, run: String) {
        let images = try sharedSubset(self, perClass: perClass)
        let run = try temporaryFolder(self) + "/run"
        let trained = try CLI.run(["train", "--data", images, "--checkpoint-dir", run, "--model", model,
                                   "--image-size", "32", "--epochs", "1", "--batch-size", "\(batch)"])
        XCTAssertEqual(trained.status, 0, trained.output)
        return (images, run)
    }

    /// Re-estimated from 64 training images, the statistics change the score at 48 px; two ranks
    /// (32 images each, one batch) give one process's score (two batches of the same 32) to
    /// 1e-5; a negative count is refused before any work, in one line.
    func testRecalibratedScoresAgreeAcrossRanksAndDifferFromTheTrainedStatistics() throws {
        let (images, run) = try trainedRun("resnet", perClass: 40, batch: 16)
        let evaluate = ["evaluate", "--checkpoint", run + "/best.safetensors.zst", "--data", images,
                        "--validation-split", "--image-size", "48", "--json"]
        let plain = try logloss(try CLI.run(evaluate), "as trained")
        let oneResult = try CLI.run(evaluate + ["--recalibrate", "64"])
        let one = try logloss(oneResult, "recalibrated, one process")
        XCTAssertTrue(oneResult.stderr.contains("BatchNorm statistics re-estimated from 64 training images at 48 px"), oneResult.stderr)
        let two = try logloss(try CLI.run(evaluate + ["--recalibrate", "64"], ranks: 2), "recalibrated, two ranks")
        XCTAssertGreaterThan(abs(one - plain), 1e-4, "the statistics should matter: \(one) against \(plain)")
        XCTAssertEqual(two, one, accuracy: 1e-5)

        // A pass in training mode keeps every activation: its batch shrinks to fit the budget.
        let checkpoint = try LoadedCheckpoint(path: run + "/best.safetensors.zst")
        let roomy = try Predictor(checkpoint: checkpoint, imageSize: 48)
        XCTAssertEqual(roomy.recalibrationBatch, 32)
        let perImage = roomy.network.activationBytesPerSample
        XCTAssertGreaterThan(perImage, roomy.network.inferenceBytesPerSample())
        let tight = try Predictor(checkpoint: checkpoint, activationBudget: 3 * perImage + perImage / 2, imageSize: 48)
        XCTAssertEqual(tight.recalibrationBatch, 3)

        let refused = try CLI.run(evaluate + ["--recalibrate", "-3"])
        XCTAssertEqual(refused.status, 64, refused.output)
        XCTAssertTrue(refused.stderr.contains("--recalibrate"), refused.stderr)
        XCTAssertFalse(refused.stderr.contains("Fatal error"), refused.stderr)

        // Training images none of which decodes: nothing to measure, said in one line, exit 1.
        let broken = try temporaryFolder(self)
        for name in ["cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "dog.1.jpg"] {
            try Data("not a JPEG".utf8).write(to: URL(fileURLWithPath: broken + "/" + name))
        }
        let unreadable = try CLI.run(["evaluate", "--checkpoint", run + "/best.safetensors.zst", "--data", broken, "--recalibrate", "10"], ranks: 2)
        XCTAssertEqual(unreadable.status, 1, unreadable.output)
        XCTAssertTrue(unreadable.stderr.contains("could be read to re-estimate the BatchNorm statistics"), unreadable.stderr)
        XCTAssertEqual(unreadable.stderr.split(separator: "\n").filter { $0.contains("re-estimate") }.count, 1, unreadable.stderr)
    }

    /// A model without BatchNorm has nothing to re-estimate: one line naming the checkpoint.
    func testAModelWithoutBatchNormIsRefused() throws {
        let (images, run) = try trainedRun("simple", perClass: 10, batch: 8)
        let result = try CLI.run(["evaluate", "--checkpoint", run + "/best.safetensors.zst", "--data", images, "--recalibrate", "10"])
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertTrue(result.stderr.contains("has no BatchNorm layer"), result.stderr)
        XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
    }
}
