import Foundation
import ArgumentParser
import CatdogCore

@main
struct CatdogDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catdog-dist",
        abstract: "Train a cat/dog image classifier on CPUs, data-parallel over MPI.",
        discussion: """
            Run one process, or many with `mpirun -np N catdog-dist train ...` on one machine or \
            across machines from a hostfile. Label 1 = dog, 0 = cat; scored by logloss.
            """,
        subcommands: [
            Train.self, Evaluate.self, Predict.self, Submit.self, Stats.self, Plot.self,
            Inspect.self, Bench.self, Models.self, Import.self,
        ])
}

/// Prints `message` to standard error, prefixed with the program's name.
func printError(_ message: String) {
    FileHandle.standardError.write(Data("catdog-dist: \(message)\n".utf8))
}

/// Ends a subcommand that a later release fills in, with exit code 2.
func notYetAvailable(_ name: String, issue: Int) throws -> Never {
    printError("`\(name)` is not yet available in this build (tracked in issue \(issue)).")
    throw ExitCode(2)
}
