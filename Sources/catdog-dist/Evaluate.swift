import ArgumentParser
import CatdogData
import CatdogDistributed
import CatdogEngine
import CatdogInference
import Foundation

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score a checkpoint on a labelled folder: logloss, accuracy, confusion matrix.",
        discussion: """
            Runs alone or under mpirun (each rank scores 1/N of the images; the sums are reduced, \
            so the numbers match one process). Example:
              catdog-dist evaluate --checkpoint ck/best.safetensors.zst --data holdout/
              catdog-dist evaluate --checkpoint ck/best.safetensors.zst --data train/ --validation-split --tta-flip
            """)

    @OptionGroup var model: CheckpointOptions
    @OptionGroup var compute: ComputeOptions

    @Option(help: "Labelled folder (Kaggle names or cats/ and dogs/ subfolders).")
    var data: String

    @OptionGroup var testTime: TestTimeOptions

    @Flag(help: "Score only the validation images that the checkpoint's training run held out of --data (its seed and --val-fraction).")
    var validationSplit = false

    @Option(help: "Before scoring, re-estimate the BatchNorm statistics at the scoring size (precise BatchNorm) from this many images of the checkpoint's training part of --data, spread evenly over it. It pays when scoring at another --image-size than the model trained at. (default: 0, the statistics as trained)")
    var recalibrate = 0

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard (0...1_000_000).contains(recalibrate) else {
            throw ValidationError("--recalibrate takes a number of images from 0 to 1000000, not \(recalibrate)")
        }
    }

    func run() throws {
        try runDistributed(announce: false) { comm in
            try compute.apply()
            let predictor = try model.predictor(compute)
            var files = try DataFolder.labeledFiles(in: data, warn: comm.rank == 0 ? { printError($0) } : { _ in })
            if recalibrate > 0 || validationSplit {
                let config = predictor.checkpoint.metadata.config
                let split = DataFolder.split(files, validationFraction: config.validationFraction, seed: config.seed)
                if recalibrate > 0 { try recalibrateBatchNorm(predictor, from: split.train, comm) }
                if validationSplit { files = split.validation }
            }
            let block = comm.block(of: files.count)
            let mine = Array(files[block])
            let progress = comm.rank == 0 ? imageProgress(comm.size > 1 ? "evaluate (rank 0's share)" : "evaluate", total: mine.count) : nil
            let results = predictor.dogProbabilities(mine.map(\.path), tta: testTime.resolved, progress: progress)
            var pairs: [(Double, Int)] = []
            var unreadable = 0
            for (file, result) in zip(mine, results) {
                switch result {
                case .success(let p): pairs.append((p, file.label))
                case .failure(let error):
                    unreadable += 1
                    printError("skipped \(file.path): \(error)")
                }
            }
            var sums = Evaluation.sums(pairs, unreadable: unreadable)
            try comm.allReduceSum(&sums)
            let e = Evaluation(sums: sums)
            // No score from no images: a logloss of nan with exit 0 would pass for a result.
            guard e.count > 0 else {
                if comm.rank == 0 {
                    let split = validationSplit ? " (its validation split, \(files.count) of the folder's images at the checkpoint's --val-fraction)" : ""
                    printError("no image of \(data)\(split) could be scored (\(e.unreadable) unreadable): nothing to evaluate; pass a folder with readable labelled images")
                }
                throw ExitCode(1)
            }
            guard comm.rank == 0 else { return }
            if json {
                return try printJSON(e)
            }
            print("\(data)\(validationSplit ? " (validation split)" : ""): \(e.count) images scored\(e.unreadable > 0 ? ", \(e.unreadable) unreadable skipped" : "")")
            print(String(format: "  logloss  %.4f\n  accuracy %.4f (%.2f%%)", e.logloss, e.accuracy, e.accuracy * 100))
            print("  confusion   predicted cat  predicted dog")
            print("  true cat    \(String(e.confusion[0][0]).leftPadded(13))  \(String(e.confusion[0][1]).leftPadded(13))")
            print("  true dog    \(String(e.confusion[1][0]).leftPadded(13))  \(String(e.confusion[1][1]).leftPadded(13))")
        }
    }

    /// `--recalibrate`: the BatchNorm statistics re-estimated from `recalibrate` of `train`
    /// (spread evenly over the sorted list, so each class is in it in its share), each rank
    /// measuring its block, the ranks' statistics averaged by the images each read.
    private func recalibrateBatchNorm(_ predictor: Predictor, from train: [LabeledFile], _ comm: Communicator) throws {
        guard predictor.network.hasTrainableBatchNorm else {
            if comm.rank == 0 {
                printError("checkpoint \(model.checkpoint): \(predictor.checkpoint.metadata.model) has no BatchNorm layer whose statistics --recalibrate could re-estimate; leave it out")
            }
            throw ExitCode(1)
        }
        let n = min(recalibrate, train.count)
        let chosen = (0..<n).map { train[$0 * train.count / n].path }
        let used = predictor.recalibrateBatchNorm(Array(chosen[comm.block(of: chosen.count)]))
        var total = [Double(used)]
        try comm.allReduceSum(&total)
        guard total[0] > 0 else {
            if comm.rank == 0 {
                printError("no image of the training part of \(data) (\(train.count) images at the checkpoint's --val-fraction) could be read to re-estimate the BatchNorm statistics: pass the folder the model trained on, or leave out --recalibrate")
            }
            throw ExitCode(1)
        }
        let state = predictor.network.state
        for i in 0..<state.count { state.pointer[i] *= Float(used) }
        try comm.allReduceSum(state.pointer, count: state.count)
        for i in 0..<state.count { state.pointer[i] /= Float(total[0]) }
        if comm.rank == 0 { printError("BatchNorm statistics re-estimated from \(Int(total[0])) training images at \(predictor.preprocessing.imageSize) px") }
    }
}
