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

    @Option(help: "Output SVG file (a name ending in .svg, or without an extension).")
    var out = "curves.svg"

    /// A run's metrics.jsonl holds one line of ~220 bytes an epoch: 100,000 epochs (the most a
    /// run can have) take 22 MB. A larger file is not one of ours and is not read.
    static let maxBytes = 64 << 20

    func run() throws {
        do { try checkOutputFormat(out, writes: "SVG", suffixes: [".svg"], hint: "convert it afterwards for another format, e.g. rsvg-convert -o curves.png curves.svg") } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        let text: String
        do { text = String(decoding: try readBoundedFile(metrics, limit: Plot.maxBytes), as: UTF8.self) } catch {
            printError("cannot read \(printable(metrics)): \(error)")
            throw ExitCode(1)
        }
        var epochs: [EpochMetrics] = []
        for (number, line) in text.split(separator: "\n").enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            do { epochs.append(try JSONDecoder().decode(EpochMetrics.self, from: Data(line.utf8))) } catch {
                printError("\(printable(metrics)) line \(number + 1) is not a metrics record: \(describe(error))")
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
