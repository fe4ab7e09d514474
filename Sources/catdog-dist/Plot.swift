import ArgumentParser
import CatdogReports
import CatdogRun
import CatdogSupport
import Foundation

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw training curves from metrics.jsonl.",
        discussion: """
            Two panels as in the 2017 study: training and validation loss per epoch, and training \
            and validation accuracy per epoch. Example:
              catdog-dist plot ck/metrics.jsonl --out curves.svg
            """)

    @Argument(help: "metrics.jsonl from a checkpoint folder.")
    var metrics: String

    @Option(help: "Output SVG file.")
    var out = "curves.svg"

    func run() throws {
        guard let text = try? String(contentsOfFile: metrics, encoding: .utf8) else {
            printError("cannot read \(metrics)")
            throw ExitCode(1)
        }
        var epochs: [EpochMetrics] = []
        for (number, line) in text.split(separator: "\n").enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            do { epochs.append(try JSONDecoder().decode(EpochMetrics.self, from: Data(line.utf8))) } catch {
                printError("\(metrics) line \(number + 1) is not a metrics record: \(error)")
                throw ExitCode(1)
            }
        }
        guard !epochs.isEmpty else {
            printError("\(metrics) has no epochs yet")
            throw ExitCode(1)
        }
        let (svg, count) = trainingCurves(epochs)
        do { try writeOutputFile(Array(svg.utf8), to: out, inputs: [metrics]) } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        print("wrote \(out): \(count) epochs")
    }
}
