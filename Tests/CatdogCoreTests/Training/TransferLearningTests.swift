import CatdogCheckpoint
import CatdogData
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation
import XCTest

final class TransferLearningTests: XCTestCase {
    /// Zero-shot: the ImageNet classifier's softmax summed over the dog classes (151–268)
    /// against the domestic-cat classes (281–285) tells every fourth one of the 1000 originals
    /// apart at ≥ 85% with each variant at the size ImageNet training used (on all 1000: Lite0
    /// 92.0%, its reference 92.3%; Lite1 91.2%; Lite2 94.0%; centre crop). A layer built wrong for
    /// a variant (a stage's repeats, width or stride) would leave it near chance (50%).
    func testZeroShotImageNetClassesTellCatsFromDogs() throws {
        let all = try DataFolder.labeledFiles(in: sharedData + "/originals")
        XCTAssertEqual(all.count, 1000)
        let files = stride(from: 0, to: all.count, by: 4).map { all[$0] }
        for lite in EfficientNetLite.variants {
            let size = lite.resolution
            let network = try EfficientNetImportTests.importedImageNetNetwork(lite, imageSize: size)
            let preprocessing = Preprocessing(imageSize: size, fit: .crop, scale: .efficientnet, cropMargin: 0)
            // Inference only, as `predict` runs it: a tenth of the memory training's buffers take.
            network.reserveForInference(maxBatch: 50)
            var correct = 0
            for start in stride(from: 0, to: files.count, by: 50) {
                let chunk = Array(files[start..<min(start + 50, files.count)])
                let store = ImageStore(count: chunk.count, storedSize: size, labels: chunk.map(\.label))
                let report = store.decode(chunk.map(\.path), indices: 0..<chunk.count, fit: .crop)
                XCTAssertNil(report.summary)
                var random = Random(seed: 0)
                for i in 0..<chunk.count {
                    store.writeSample(i, to: network.input + i * network.inputShape.count, preprocessing: preprocessing,
                                      augmentation: .none, random: &random)
                }
                let logits = network.forward(batch: chunk.count, context: PassContext(training: false))
                for (i, file) in chunk.enumerated() {
                    let row = (0..<1000).map { Double(logits[i * 1000 + $0]) }
                    let top = row.max()!
                    let e = row.map { exp($0 - top) }
                    let dog = e[151...268].reduce(0, +), cat = e[281...285].reduce(0, +)
                    if (dog > cat) == (file.label == 1) { correct += 1 }
                }
            }
            let accuracy = Double(correct) / Double(files.count)
            print("zero-shot accuracy of \(lite.name) at \(size)x\(size) on \(files.count) originals: \(accuracy * 100)%")
            XCTAssertGreaterThanOrEqual(accuracy, 0.85, "\(lite.name): zero-shot accuracy \(correct)/\(files.count)")
        }
    }

    /// `import` tells Lite2 from its file and builds it at Lite2's default 296 px; `train` refuses
    /// that file for `--model efficientnet-lite0`, naming both, with exit 1 and before any work.
    func testImportTellsTheVariantAndTrainRefusesAnotherModelsFile() throws {
        let pth = try EfficientNetImportTests.weights(EfficientNetLite.variants[2])
        let folder = try temporaryFolder(self)
        let out = folder + "/lite2.safetensors.zst"
        let imported = try CLI.run(["import", pth, "--out", out])
        XCTAssertEqual(imported.status, 0, imported.output)
        XCTAssertTrue(imported.stdout.contains("efficientnet-lite2 with ImageNet weights, 296x296"), imported.stdout)
        let checkpoint = try LoadedCheckpoint(path: out)
        XCTAssertEqual(checkpoint.metadata.model, "efficientnet-lite2")
        XCTAssertEqual(checkpoint.metadata.imageSize, 296)
        let data = try sharedSubset(self, perClass: 5)
        let wrong = try CLI.run(["train", "--model", "efficientnet-lite0", "--init-from", out, "--data", data,
                                 "--checkpoint-dir", folder + "/run"])
        XCTAssertEqual(wrong.status, 1, wrong.output)
        XCTAssertTrue(wrong.stderr.contains("holds model efficientnet-lite2, not efficientnet-lite0"), wrong.stderr)
        XCTAssertFalse(wrong.output.contains("features"), wrong.output)
    }

    /// The imported weights, 30 + 30 shared images and a run folder, for the CLI tests below.
    private func importedWeightsAndSmallSet() throws -> (imported: String, data: String, run: String) {
        guard FileManager.default.fileExists(atPath: EfficientNetImportTests.pth) else { throw EfficientNetImportTests.MissingWeights() }
        let folder = try temporaryFolder(self)
        let imported = folder + "/lite0.safetensors.zst"
        XCTAssertEqual(try CLI.run(["import", EfficientNetImportTests.pth, "--out", imported]).status, 0)
        return (imported, try sharedSubset(self, perClass: 30), folder + "/run")
    }

    /// `train --init-from` (the model taken from the file: efficientnet-lite0) end to end on 60
    /// images: features, head, a checkpoint that `evaluate` reads. With ImageNet features even 54
    /// training images separate cats from dogs: validation accuracy ≥ 0.8 (6 images) and
    /// training accuracy ≥ 0.9. The validation loss is mirror TTA's, as `evaluate
    /// --validation-split --tta-flip` scores it.
    func testFeatureExtractionTrainsAHeadOnTwoRanks() throws {
        let (imported, data, run) = try importedWeightsAndSmallSet()
        let result = try CLI.run(["train", "--init-from", imported, "--data", data,
                                  "--checkpoint-dir", run, "--freeze", "backbone", "--epochs", "40"], ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("features of 60 images"), result.stdout)
        XCTAssertTrue(result.stdout.contains("transfer learning: efficientnet-lite0"), result.stdout)
        let checkpoint = try LoadedCheckpoint(path: run + "/best.safetensors.zst")
        XCTAssertEqual(checkpoint.metadata.model, "efficientnet-lite0")
        let best = try XCTUnwrap(checkpoint.metadata.history.min { $0.val_loss < $1.val_loss })
        XCTAssertGreaterThanOrEqual(best.val_acc, 0.8)
        XCTAssertGreaterThanOrEqual(checkpoint.metadata.history.last!.train_acc, 0.9)
        // A head on features: each epoch's images are at the network's own size.
        XCTAssertEqual(Set(checkpoint.metadata.history.map(\.train_size)), [checkpoint.metadata.imageSize])
        let evaluated = try CLI.run(["evaluate", "--checkpoint", run + "/best.safetensors.zst", "--data", data, "--json"])
        XCTAssertEqual(evaluated.status, 0, evaluated.output)
        // The head's validation is mirror TTA (features of the mirrored validation images):
        // what `evaluate --validation-split --tta-flip` scores on the best checkpoint (1e-4).
        let split = try CLI.run(["evaluate", "--checkpoint", run + "/best.safetensors.zst", "--data", data,
                                 "--validation-split", "--tta-flip", "--json"])
        XCTAssertEqual(split.status, 0, split.output)
        let json = try JSONSerialization.jsonObject(with: Data(split.stdout.split(separator: "\n").last!.utf8)) as! [String: Any]
        XCTAssertEqual(json["logloss"] as! Double, best.val_loss, accuracy: 1e-4)
        XCTAssertEqual(json["accuracy"] as! Double, best.val_acc, accuracy: 1e-9)
        let refused = try CLI.run(["train", "--model", "efficientnet-lite0", "--data", data, "--checkpoint-dir", run])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("--init-from"), refused.stderr)
    }

    /// `--freeze until:14` end to end on 2 ranks and 60 images: the head trains on the
    /// features, then blocks 14-15 and the head fine-tune for 3 epochs from the activations
    /// kept at the cut. Everything before the cut is bit for bit the imported weights, the
    /// history has the head's epochs and 3 more, and the fine-tuned epochs fit the training set
    /// (accuracy ≥ 0.9). A cut that does not exist is a usage error (exit 64).
    func testFineTuningTheLastBlocksOnTwoRanks() throws {
        let (imported, data, run) = try importedWeightsAndSmallSet()
        let result = try CLI.run(["train", "--model", "efficientnet-lite0", "--init-from", imported, "--data", data,
                                  "--checkpoint-dir", run, "--freeze", "until:14", "--epochs", "3", "--batch-size", "16",
                                  "--patience", "0"], ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("fine-tune epoch 3/3"), result.stdout)
        let checkpoint = try LoadedCheckpoint(path: run + "/best.safetensors.zst")
        let history = checkpoint.metadata.history
        let headEpochs = history.count - 3
        XCTAssertGreaterThan(headEpochs, 0)
        XCTAssertEqual(history.map(\.epoch), Array(1...history.count))
        for epoch in history.suffix(3) { XCTAssertGreaterThanOrEqual(epoch.train_acc, 0.9) }

        let original = try LoadedCheckpoint(path: imported).makeNetwork()
        let tuned = try checkpoint.makeNetwork()
        let cut = EfficientNetLite.lite0.blockInputs()[14]
        let frozen = tuned.parameterRange(after: cut).lowerBound
        XCTAssertGreaterThan(frozen, 0)
        for i in 0..<frozen where tuned.parameters[i] != original.parameters[i] {
            XCTFail("frozen parameter \(i) changed: \(original.parameters[i]) -> \(tuned.parameters[i])")
            break
        }
        XCTAssertEqual(Array(UnsafeBufferPointer(start: tuned.state.pointer, count: tuned.state.count)),
                       Array(UnsafeBufferPointer(start: original.state.pointer, count: original.state.count)),
                       "BatchNorm statistics stay as imported (inference mode)")

        let scratchModel = try CLI.run(["train", "--data", data, "--checkpoint-dir", run, "--freeze", "until:12"])
        XCTAssertEqual(scratchModel.status, 64)  // a usage error: --freeze with a model trained from scratch
        XCTAssertTrue(scratchModel.stderr.contains("efficientnet-lite0"), scratchModel.stderr)
        for (freeze, message) in [("until:17", "until:N"), ("blocks", "until:N")] {
            let refused = try CLI.run(["train", "--model", "efficientnet-lite0", "--init-from", imported, "--data", data,
                                       "--checkpoint-dir", run, "--freeze", freeze])
            XCTAssertEqual(refused.status, 64, freeze)  // usage errors, from parsing and validate()
            XCTAssertTrue(refused.stderr.contains(message), refused.stderr)
        }
    }

    /// `--freeze none` on 2 ranks: all of efficientnet-lite0 trains from the imported weights on
    /// streamed images. The stem's kernel (the first layer) moves, the BatchNorm statistics stay
    /// as imported (inference mode), and the run resumes like any other.
    func testFineTuningTheWholeNetworkStreamsAndResumes() throws {
        let (imported, data, run) = try importedWeightsAndSmallSet()
        let arguments = ["train", "--model", "efficientnet-lite0", "--init-from", imported, "--data", data,
                         "--checkpoint-dir", run, "--freeze", "none", "--batch-size", "16", "--patience", "0", "--cache", "none"]
        let result = try CLI.run(arguments + ["--epochs", "1"], ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("fine-tuning all of efficientnet-lite0"), result.stdout)
        XCTAssertTrue(result.stdout.contains("streaming (--cache none)"), result.stdout)
        let original = try LoadedCheckpoint(path: imported).makeNetwork()
        let tuned = try LoadedCheckpoint(path: run + "/last.safetensors.zst").makeNetwork()
        let stem = original.parameterSlots[0]
        let moved = (stem.offset..<(stem.offset + stem.count)).filter { tuned.parameters[$0] != original.parameters[$0] }.count
        XCTAssertGreaterThan(moved, stem.count / 2, "the first layer must train")
        XCTAssertEqual(Array(UnsafeBufferPointer(start: tuned.state.pointer, count: tuned.state.count)),
                       Array(UnsafeBufferPointer(start: original.state.pointer, count: original.state.count)))
        let resumed = try CLI.run(arguments + ["--epochs", "2", "--resume", "auto"], ranks: 2)
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertTrue(resumed.stdout.contains("resumed from"), resumed.stdout)
        XCTAssertEqual(try LoadedCheckpoint(path: run + "/last.safetensors.zst").metadata.history.count, 2)
    }
}
