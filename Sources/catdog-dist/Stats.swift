import ArgumentParser
import CatdogData
import CatdogSupport
import Foundation

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Count images per class and their sizes; draw the figures.",
        discussion: "Reads only the JPEG headers, so it is quick even on the full Kaggle set.")

    @Option(help: "Labelled folder (Kaggle names or cats/ and dogs/ subfolders).")
    var data: String

    @Option(help: "Write the class bar chart and width/height histograms to this SVG file.")
    var plot: String?

    func run() throws {
        if let plot {
            do {
                try checkOutputFormat(plot, writes: "SVG", suffixes: [".svg"], hint: "convert it afterwards for another format, e.g. rsvg-convert -o stats.png stats.svg")
                try checkOutputPath(plot)
            } catch {
                printError("\(error)")
                throw ExitCode(1)
            }
        }
        let stats: DatasetStatistics
        do { stats = try DatasetStatistics(folder: data, warn: { printError($0) }) } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        print(stats.report)
        for (path, reason) in stats.unreadable.prefix(20) { print("  unreadable: \(printable(path)): \(reason)") }
        if let plot {
            do { try writeOutputFile(Array(stats.figure.utf8), to: plot) } catch {
                printError("\(error)")
                throw ExitCode(1)
            }
            print("figures written to \(plot)")
        }
    }
}
