import ArgumentParser

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Count images per class and their sizes; draw the figures.")

    func run() throws { try notYetAvailable("stats", issue: 3) }
}
