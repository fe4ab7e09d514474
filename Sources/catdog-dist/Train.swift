import ArgumentParser

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a model, one process or data-parallel under mpirun.")

    func run() throws { try notYetAvailable("train", issue: 4) }
}
