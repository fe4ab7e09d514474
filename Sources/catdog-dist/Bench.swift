import ArgumentParser

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure training throughput on synthetic data.")

    func run() throws { try notYetAvailable("bench", issue: 7) }
}
