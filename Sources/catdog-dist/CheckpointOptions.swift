import ArgumentParser
import CatdogInference
import CatdogRun

/// `--checkpoint FILE`, shared by evaluate, predict and submit.
struct CheckpointOptions: ParsableArguments {
    @Option(help: "A checkpoint written by `train` (e.g. ck/best.safetensors.zst). The model and its preprocessing come from it.")
    var checkpoint: String

    @Option(help: "Images per forward pass.")
    var batchSize = 32

    @Option(help: "Score at this input size instead of the one the checkpoint was trained at: the same crop of each image at more pixels (e.g. 80 for a 64 px model). For models with global pooling (resnet, efficientnet-liteN). (default: the checkpoint's)")
    var imageSize: Int?

    func validate() throws {
        guard (1...4096).contains(batchSize) else { throw ValidationError("--batch-size must be between 1 and 4096") }
        if let imageSize, !(16...CheckpointLimits.maxImageSize).contains(imageSize) {
            throw ValidationError("--image-size must be between 16 and \(CheckpointLimits.maxImageSize)")
        }
    }

    /// The checkpoint's model, computing as `compute` says, in the precision `train` would
    /// compute that model in on this machine (`--precision auto`) unless it names one.
    func predictor(_ compute: ComputeOptions) throws -> Predictor {
        do {
            let loaded = try LoadedCheckpoint(path: checkpoint)
            let precision = compute.localPrecision(default: .auto, model: loaded.metadata.model)
            return try Predictor(checkpoint: loaded, batchSize: batchSize, imageSize: imageSize,
                                 convolution: compute.convolutionOptions(precision: precision))
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
    }
}
