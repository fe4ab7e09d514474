import ArgumentParser
import CatdogRun
import CatdogSupport
import Foundation

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a checkpoint's metadata and tensors.",
        discussion: "Example: catdog-dist inspect ck/best.safetensors.zst")

    @Argument(help: "A .safetensors.zst checkpoint.")
    var file: String

    @Flag(help: "Print the metadata as JSON.")
    var json = false

    func run() throws {
        let checkpoint: LoadedCheckpoint
        do { checkpoint = try LoadedCheckpoint(path: file) } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        let m = checkpoint.metadata
        if json {
            print(checkpoint.file.metadata["catdog"] ?? "{}")
            return
        }
        let raw = checkpoint.file.bytes.count
        print(printable(file))
        print("  format        catdog-dist checkpoint v\(m.formatVersion), written \(printable(m.created)) by \(m.ranks) rank(s)\(m.finished ? ", finished run" : "")")
        print("  model         \(m.model) at \(m.imageSize)x\(m.imageSize), \(m.parameterCount) parameters")
        print("  preprocessing fit \(m.preprocessing.fit.rawValue), pixels \(m.preprocessing.scale.rawValue), crop margin \(m.preprocessing.cropMargin)")
        print("  position      \(m.epoch) epochs done of \(m.config.epochs), step \(m.stepInEpoch) into the next, update \(m.step)")
        print("  training      global batch \(m.globalBatch), \(m.optimizer) \(m.optimizerHyperparameters.sorted { $0.key < $1.key }.map { "\($0.key)=\(String(format: "%g", $0.value))" }.joined(separator: " ")), lr \(m.schedule.baseRate) \(m.schedule.decay.rawValue), seed \(m.seed), augment \(m.config.augmentation.description)")
        if let best = m.bestValidationLoss { print(String(format: "  best          val_loss %.4f", best)) }
        for e in m.history {
            // As the training log words it: an epoch the run did not validate (NaN in the history) and
            // one whose steps were trained before a resume (no speed) say so rather than print nan.
            let scores = e.val_loss.isNaN ? "not validated" : String(format: "val_loss %.4f val_acc %.4f", e.val_loss, e.val_acc)
            let speed = e.images_per_s.isFinite ? String(format: "%.1f img/s", e.images_per_s) : "speed not measured"
            print(String(format: "  epoch %3d     loss %.4f acc %.4f | %@ | %@", e.epoch, e.train_loss, e.train_acc, scores, speed))
        }
        print(String(format: "  size          %.2f MB compressed, %.2f MB raw, ratio %.2f", Double(checkpoint.compressedBytes) / 1e6, Double(raw) / 1e6, Double(raw) / Double(max(checkpoint.compressedBytes, 1))))
        print("  tensors")
        for (name, t) in checkpoint.file.tensors.sorted(by: { $0.key < $1.key }) {
            print("    \(printable(name).padding(toLength: 44, withPad: " ", startingAt: 0)) \(t.dtype) \(t.shape)")
        }
    }
}
