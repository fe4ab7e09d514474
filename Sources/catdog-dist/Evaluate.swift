import ArgumentParser

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Score a checkpoint on a labelled folder.")

    func run() throws { try notYetAvailable("evaluate", issue: 6) }
}
