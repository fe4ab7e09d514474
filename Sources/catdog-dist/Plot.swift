import ArgumentParser
import CatdogCore
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
        // A resumed run may repeat an epoch; the last record of each epoch wins.
        let byEpoch = Dictionary(epochs.map { ($0.epoch, $0) }, uniquingKeysWith: { _, last in last })
        let ordered = byEpoch.keys.sorted().map { byEpoch[$0]! }
        func series(_ name: String, _ value: (EpochMetrics) -> Double) -> (name: String, points: [(Double, Double)]) {
            (name, ordered.map { (Double($0.epoch), value($0)) })
        }
        var figure = SVGFigure(panelWidth: 480, panelHeight: 340)
        figure.lines(title: "Loss", series: [series("training loss", \.train_loss), series("validation loss", \.val_loss)],
                     xLabel: "epoch", yLabel: "binary cross-entropy")
        figure.lines(title: "Accuracy", series: [series("training accuracy", \.train_acc), series("validation accuracy", \.val_acc)],
                     xLabel: "epoch", yLabel: "accuracy")
        do { try figure.svg.write(toFile: out, atomically: true, encoding: .utf8) } catch {
            printError("cannot write \(out): \(error.localizedDescription)")
            throw ExitCode(1)
        }
        print("wrote \(out): \(ordered.count) epochs")
    }
}
