import ArgumentParser
import CatdogInference
import CatdogRun
import CatdogSupport
import Foundation

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a trained model as an ONNX file, to run it with onnxruntime or any ONNX runtime.",
        discussion: """
            Every model exports (simple, vgg, resnet, efficientnet-lite0 with its head). The ONNX model \
            takes `image`: float32 RGB pixel values 0–255, shape (batch, S, S, 3), the photo \
            already resized as its metadata says (catdog.resize); it scales them itself and returns \
            `dog_probability`, shape (batch, 1).

            --example IMAGE... also writes those images as the model's input (NumPy \
            .npy beside the model) and prints what catdog-dist predicts for them, to check \
            another runtime against. Example:
              catdog-dist export ck/best.safetensors.zst --out m.onnx --example a.jpg
            and in Python, with numpy and onnxruntime:
              s = onnxruntime.InferenceSession("m.onnx")
              s.run(None, {"image": numpy.load("m.example.npy")})
            """)

    @Argument(help: "A .safetensors.zst checkpoint (e.g. runs/a/best.safetensors.zst).")
    var checkpoint: String

    @Option(help: "Where to write the ONNX model.")
    var out: String

    @Option(parsing: .upToNextOption, help: "JPEG images to write as example input (OUT without .onnx, plus .example.npy); at most \(Export.maxExamples).")
    var example: [String] = []

    /// The most examples: they are decoded and written as one array (64 at 224 px take 38 MB),
    /// and a few check a runtime as well as thousands.
    static let maxExamples = 64

    func validate() throws {
        guard example.count <= Export.maxExamples else {
            throw ValidationError("--example names \(example.count) images; at most \(Export.maxExamples) (a few check another runtime as well as many)")
        }
    }

    func run() throws {
        let loaded: LoadedCheckpoint
        let predictor: Predictor
        let npy = (out.hasSuffix(".onnx") ? String(out.dropLast(5)) : out) + ".example.npy"
        do {
            try checkOutputPath(out, inputs: [checkpoint] + example)
            if !example.isEmpty { try checkOutputPath(npy, inputs: [checkpoint] + example) }
            loaded = try LoadedCheckpoint(path: checkpoint)
            predictor = try Predictor(checkpoint: loaded)
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        let m = loaded.metadata, p = m.preprocessing
        let centre = p.cropMargin > 0 ? ", then take the centre \(p.imageSize)x\(p.imageSize)" : ""
        let resize = p.fit == .squash
            ? "squash the whole photo to \(p.storedSize)x\(p.storedSize) (aspect ratio not kept)\(centre)"
            : "take the largest centred square and resize it to \(p.storedSize)x\(p.storedSize)\(centre)"
        let (multiplier, offsets) = p.affine()
        let scaling = "inside the graph (\(p.scale.rawValue)): x * \(multiplier) + [\(offsets.map { "\($0)" }.joined(separator: ", "))] per RGB channel"
        let metadata: [(String, String)] = [
            ("catdog.model", m.model), ("catdog.image_size", "\(p.imageSize)"),
            ("catdog.input", "image: float32 RGB pixel values 0-255, shape (batch, \(p.imageSize), \(p.imageSize), 3), channels last"),
            ("catdog.resize", resize + " (bilinear)"),
            ("catdog.scaling", scaling),
            ("catdog.output", "dog_probability: shape (batch, 1), the probability that the image is a dog (label 1; cat is 0)"),
            ("catdog.checkpoint", "\((checkpoint as NSString).lastPathComponent): \(m.epoch) epochs, update \(m.step)"
                + (m.bestValidationLoss.map { String(format: ", best val_loss %.4f", $0) } ?? "")),
        ]
        let bytes: [UInt8]
        do {
            bytes = try ONNXExport.model(predictor.network, preprocessing: p, modelName: "catdog-\(m.model)", metadata: metadata)
        } catch {
            printError("cannot export \(checkpoint): \(error)")
            throw ExitCode(1)
        }
        do { try writeOutputFile(bytes, to: out, inputs: [checkpoint] + example) } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        print(String(format: "wrote %@: %@ at %dx%d, %.1f MB, opset 13; input image (batch, %d, %d, 3) RGB 0-255, output dog_probability",
                     out, m.model, p.imageSize, p.imageSize, Double(bytes.count) / 1e6, p.imageSize, p.imageSize))
        guard !example.isEmpty else { return }
        let (pixels, read, failed) = predictor.pixels(example)
        for (path, error) in failed { printError("\(path): cannot read it: \(error)") }
        guard !read.isEmpty else {
            printError("no example could be read, so \(npy) was not written")
            throw ExitCode(1)
        }
        do { try writeOutputFile(NumPy.float32(pixels, shape: [read.count, p.imageSize, p.imageSize, 3]), to: npy, inputs: [checkpoint] + example) } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        print("wrote \(npy): \(read.count) image(s) as the model's input; catdog-dist's dog probabilities:")
        for (path, result) in zip(read, predictor.dogProbabilities(read)) {
            if case .success(let probability) = result { print("  \(printable(path)): \(probability)") }
        }
        if !failed.isEmpty { throw ExitCode(1) }
    }
}

/// NumPy's .npy format (version 1.0) for a little-endian float32 array.
enum NumPy {
    static func float32(_ values: [Float], shape: [Int]) -> [UInt8] {
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(dims)), }"
        // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        bytes += [UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        bytes += Array(header.utf8)
        bytes.reserveCapacity(bytes.count + values.count * 4)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        return bytes
    }
}
