import Foundation
import XCTest

/// `export` writes every model as ONNX, and onnxruntime (from PyPI, in .cache/python) gives the
/// same dog probabilities as `predict` on real photos at their original sizes, to 1e-4.
final class ONNXExportTests: XCTestCase {
    static let python = TensorBoardTests.repository.appendingPathComponent(".cache/python/bin/python3").path

    /// Exports `checkpoint` with four original photos as examples, runs the model with
    /// onnxruntime and compares with `predict --json` on the same photos.
    func assertONNXMatchesPredict(_ checkpoint: String, model: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = try temporaryFolder(self)
        let photos = ["cat.3", "cat.11", "dog.4", "dog.9"].map { sharedData + "/originals/\($0).jpg" }
        let onnx = folder + "/\(model).onnx"
        let export = try CLI.run(["export", checkpoint, "--out", onnx, "--example"] + photos)
        XCTAssertEqual(export.status, 0, export.output, file: file, line: line)
        // The exported model computes in fp32; predict does too when asked (its default is
        // train's precision, bf16 on a CPU with AVX512_BF16).
        let predict = try CLI.run(["predict", "--checkpoint", checkpoint, "--json", "--precision", "fp32"] + photos)
        XCTAssertEqual(predict.status, 0, predict.output, file: file, line: line)
        let expected = try predict.stdout.split(separator: "\n").map {
            try XCTUnwrap((JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["dog_probability"] as? Double)
        }
        let script = """
            import json, sys, numpy, onnxruntime
            session = onnxruntime.InferenceSession(sys.argv[1])
            meta = session.get_modelmeta().custom_metadata_map
            out = session.run(None, {"image": numpy.load(sys.argv[2])})[0]
            print(json.dumps({"p": [float(v) for v in out.ravel()], "size": meta["catdog.image_size"], "model": meta["catdog.model"],
                              "input": session.get_inputs()[0].name, "output": session.get_outputs()[0].name}))
            """
        let run = try runCommand([Self.python, "-c", script, onnx, folder + "/\(model).example.npy"])
        XCTAssertEqual(run.status, 0, run.stderr, file: file, line: line)
        let text = Data(run.stdout.utf8)
        let result = try XCTUnwrap(JSONSerialization.jsonObject(with: text) as? [String: Any])
        let got = try XCTUnwrap(result["p"] as? [Double])
        XCTAssertEqual(got.count, photos.count, file: file, line: line)
        for (g, e) in zip(got, expected) { XCTAssertEqual(g, e, accuracy: 1e-4, "\(model): \(got) vs \(expected)", file: file, line: line) }
        XCTAssertEqual(result["model"] as? String, model, file: file, line: line)
        XCTAssertEqual(result["input"] as? String, "image", file: file, line: line)
        XCTAssertEqual(result["output"] as? String, "dog_probability", file: file, line: line)
    }

    func requirements() throws {
        struct MissingRuntime: Error, CustomStringConvertible {
            var description: String { "\(ONNXExportTests.python) is missing: cluster/install-deps installs onnxruntime there" }
        }
        guard FileManager.default.isExecutableFile(atPath: Self.python) else { throw MissingRuntime() }
        guard FileManager.default.fileExists(atPath: sharedData + "/originals/cat.3.jpg") else {
            throw XCTSkip("\(sharedData)/originals is missing: tests need ../shared beside the repository")
        }
    }

    /// simple, vgg, resnet and resnet-pool, each trained for 2 epochs at 48 px on 120 images.
    func testModelsTrainedFromScratchMatchPredict() throws {
        try requirements()
        let data = try sharedSubset(self, perClass: 60)
        for model in ["simple", "vgg", "resnet", "resnet-pool"] {
            let run = try temporaryFolder(self)
            let train = try CLI.run(["train", "--data", data, "--checkpoint-dir", run, "--model", model, "--image-size", "48",
                                     "--epochs", "2", "--batch-size", "16"])
            XCTAssertEqual(train.status, 0, train.output)
            try assertONNXMatchesPredict(run + "/best.safetensors.zst", model: model)
        }
    }

    /// EfficientNet-Lite0 (ImageNet weights) with a head trained on 60 images: depthwise
    /// convolutions, ReLU6 and BatchNorm, at 256 px.
    func testEfficientNetWithItsHeadMatchesPredict() throws {
        try requirements()
        guard FileManager.default.fileExists(atPath: EfficientNetImportTests.pth) else { throw EfficientNetImportTests.MissingWeights() }
        let folder = try temporaryFolder(self)
        XCTAssertEqual(try CLI.run(["import", EfficientNetImportTests.pth, "--out", folder + "/lite0.safetensors.zst"]).status, 0)
        let data = try sharedSubset(self, perClass: 30)
        let train = try CLI.run(["train", "--model", "efficientnet-lite0", "--init-from", folder + "/lite0.safetensors.zst",
                                 "--data", data, "--checkpoint-dir", folder + "/run", "--freeze", "backbone", "--epochs", "5"])
        XCTAssertEqual(train.status, 0, train.output)
        try assertONNXMatchesPredict(folder + "/run/best.safetensors.zst", model: "efficientnet-lite0")
    }

    func testAnUnreadableExampleIsReportedAndTheModelStillWritten() throws {
        try requirements()
        let folder = try temporaryFolder(self)
        let data = try sharedSubset(self, perClass: 20)
        XCTAssertEqual(try CLI.run(["train", "--data", data, "--checkpoint-dir", folder + "/run", "--model", "simple",
                                    "--image-size", "32", "--epochs", "1"]).status, 0)
        try Data("not a jpeg".utf8).write(to: URL(fileURLWithPath: folder + "/broken.jpg"))
        let export = try CLI.run(["export", folder + "/run/best.safetensors.zst", "--out", folder + "/m.onnx",
                                  "--example", folder + "/broken.jpg", sharedData + "/originals/dog.1.jpg"])
        XCTAssertEqual(export.status, 1, export.output)
        XCTAssertTrue(export.stderr.contains("broken.jpg: cannot read it"), export.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/m.onnx"))
        XCTAssertTrue(export.stdout.contains("1 image(s) as the model's input"), export.stdout)
        // None readable: no empty example file. More than the most examples: refused before anything is written.
        let none = try CLI.run(["export", folder + "/run/best.safetensors.zst", "--out", folder + "/n.onnx", "--example", folder + "/broken.jpg"])
        XCTAssertEqual(none.status, 1, none.output)
        XCTAssertTrue(none.stderr.contains("no example could be read, so \(folder)/n.example.npy was not written"), none.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/n.example.npy"))
        let many = try CLI.run(["export", folder + "/run/best.safetensors.zst", "--out", folder + "/k.onnx", "--example"]
                               + Array(repeating: sharedData + "/originals/dog.1.jpg", count: 65))
        XCTAssertEqual(many.status, 64, many.output)
        XCTAssertTrue(many.stderr.contains("--example names 65 images; at most 64"), many.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/k.onnx"))
    }
}
