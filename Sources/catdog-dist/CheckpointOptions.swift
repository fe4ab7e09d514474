import ArgumentParser
import CatdogInference
import CatdogRun

/// `--checkpoint FILE`, shared by evaluate, predict and submit.
struct CheckpointOptions: ParsableArguments {
    @Option(help: "A checkpoint written by `train` (e.g. ck/best.safetensors.zst). The model and its preprocessing come from it.")
    var checkpoint: String

    @Option(help: "Images per forward pass.")
    var batchSize = 32

    func validate() throws {
        guard (1...4096).contains(batchSize) else { throw ValidationError("--batch-size must be between 1 and 4096") }
    }

    func predictor() throws -> Predictor {
        do { return try Predictor(checkpoint: LoadedCheckpoint(path: checkpoint), batchSize: batchSize) } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
    }
}
