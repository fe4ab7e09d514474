import ArgumentParser
import CatdogData
import CatdogEngine
import CatdogSupport
import Foundation

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a Kaggle submission CSV for a numbered test folder.",
        discussion: """
            Format of Kaggle's "Dogs vs. Cats Redux": a header `id,label`, one row per numbered \
            image (1.jpg, 2.jpg, ...) sorted by id, label = probability of dog.
            --clip EPS keeps every probability in [EPS, 1-EPS]: logloss punishes a confident \
            mistake without bound (-log(1e-15) = 34.5 for one image), so a small clip such as \
            0.005 caps that at -log(0.005) = 5.3 while costing at most -log(0.995) = 0.005 on \
            a correct, sure answer.
            --tta-flip averages each image with its mirror image, which usually lowers logloss a little.
            An unreadable image is scored 0.5 (logloss log 2 = 0.693, the least a guess can lose) and reported.
            An image whose name is not a plain number (cat.3.jpg, -3.jpg, 1e5.jpg) gets no row; a note names it.
            """)

    @OptionGroup var model: CheckpointOptions
    @OptionGroup var compute: ComputeOptions

    @Option(help: "Folder of numbered test images (Kaggle's test1/).")
    var testDir: String

    @Option(help: "Output CSV file.")
    var out = "submission.csv"

    @Option(help: "Clip probabilities to [EPS, 1-EPS] (0 = no clipping).")
    var clip = 0.0

    @OptionGroup var testTime: TestTimeOptions

    func validate() throws {
        guard clip >= 0, clip < 0.5 else { throw ValidationError("--clip must be in [0, 0.5)") }
        let target = URL(fileURLWithPath: out).resolvingSymlinksInPath().path
        if target == URL(fileURLWithPath: model.checkpoint).resolvingSymlinksInPath().path || out.hasSuffix(".safetensors.zst") {
            throw ValidationError("--out \(out) would overwrite a checkpoint; write the submission to a .csv file")
        }
    }

    func run() throws {
        do { try checkOutputPath(out, inputs: [model.checkpoint]) } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        try compute.apply()  // first: the kernels it selects decide what auto can take
        let predictor = try model.predictor(compute)
        let numbered: [(id: Int, path: String)]
        do { numbered = try DataFolder.numberedFiles(in: testDir) { printError($0) } } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        let results = predictor.dogProbabilities(numbered.map(\.path), tta: testTime.resolved,
                                                 progress: imageProgress("submit", total: numbered.count))
        var csv = "id,label\n"
        var unreadable = 0
        for (entry, result) in zip(numbered, results) {
            var p: Double
            switch result {
            case .success(let probability): p = probability
            case .failure(let error):
                unreadable += 1
                p = 0.5
                printError("\(entry.path): cannot read it (\(error)); scored 0.5")
            }
            if clip > 0 { p = min(max(p, clip), 1 - clip) }
            csv += "\(entry.id),\(String(format: "%.6f", p))\n"
        }
        do { try writeOutputFile(Array(csv.utf8), to: out, inputs: [model.checkpoint]) } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        print("wrote \(out): \(numbered.count) rows\(unreadable > 0 ? ", \(unreadable) unreadable scored 0.5" : "")\(clip > 0 ? ", clipped to [\(clip), \(1 - clip)]" : "")")
    }
}
