import ArgumentParser

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a checkpoint's metadata and tensors.")

    func run() throws { try notYetAvailable("inspect", issue: 5) }
}
