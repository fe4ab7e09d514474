import ArgumentParser

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Draw training curves from metrics.jsonl.")

    func run() throws { try notYetAvailable("plot", issue: 6) }
}
