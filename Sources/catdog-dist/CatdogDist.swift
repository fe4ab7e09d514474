import CatdogSupport
import Foundation
import ArgumentParser

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
            Inspect.self, Bench.self, Models.self, Import.self, Export.self,
        ])

    /// The process-wide switches the environment sets, before any command makes a buffer:
    /// `CATDOG_HUGE_PAGES=0` keeps large buffers in ordinary pages (to measure what huge pages
    /// buy, docs/performance.md); `1` or empty leaves the kernel's setting; anything else is
    /// refused, as `CATDOG_KERNELS` refuses what is not an instruction set.
    static func main() {
        switch ProcessInfo.processInfo.environment["CATDOG_HUGE_PAGES"] {
        case nil, "", "1": break
        case "0": HugePages.turnOff(because: "CATDOG_HUGE_PAGES=0")
        case let value?: exit(withError: BadHugePagesVariable(value: value))
        }
        var command: ParsableCommand
        do { command = try parseAsRoot(nil) } catch {
            if let rank = launcherRank, rank != 0 { otherRankRefused(error, rank: rank) }
            exit(withError: error)
        }
        // --help is parsed into ArgumentParser's own command that prints it: the first rank's.
        // So is a command that runs on one machine alone (predict, submit, export, models, ...):
        // under mpirun the first rank runs it, not once a rank.
        if let rank = launcherRank, rank != 0, !(command is Train || command is Evaluate || command is Bench) { Glibc.exit(0) }
        do { try command.run() } catch {
            exit(withError: error)
        }
    }

    /// A mistyped option (or --help) under `mpirun -np 32` is said once, by the first rank,
    /// not 32 times. A clean end (an error with status 0) ends the other ranks at once. A refusal waits 2 s
    /// first: the same refusal on the first rank has ended the job by then (the launcher ends
    /// every rank when one fails); one that only this rank's machine makes (a file it cannot
    /// read) is then printed, naming the rank.
    static func otherRankRefused(_ error: Error, rank: Int) -> Never {
        let code = exitCode(for: error)
        if code == .success { Glibc.exit(0) }
        waitForTheFirstRank()
        FileHandle.standardError.write(Data("rank \(rank) on \(ProcessInfo.processInfo.hostName): \(fullMessage(for: error))\n".utf8))
        Glibc.exit(code.rawValue)
    }

    /// This process's rank as the launcher (Open MPI, MPICH, PMIx, Slurm's srun) tells it in
    /// the environment, before MPI starts; nil when started alone.
    static var launcherRank: Int? {
        let environment = ProcessInfo.processInfo.environment
        for name in ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"] {
            if let value = environment[name], let rank = Int(value) { return rank }
        }
        return nil
    }

    struct BadHugePagesVariable: Error, CustomStringConvertible {
        let value: String
        var description: String {
            "CATDOG_HUGE_PAGES=\(printable(value.prefix(64))) in the environment is neither 0 (ordinary pages) nor 1 (the kernel's setting); set one of them, or unset it"
        }
    }
}

/// Prints `message` to standard error, prefixed with the program's name, as one line: a
/// newline in it (from a file's name) is escaped like any other control character. A message
/// longer than `errorCharacters` (a string from a file quoted whole, such as a crafted model
/// name of 100 kB) keeps its start and its end, where what to do is said, and says what it left out.
func printError(_ message: String) {
    FileHandle.standardError.write(Data("catdog-dist: \(bounded(printable(message), errorCharacters))\n".utf8))
}

/// The most characters one error line prints.
let errorCharacters = 2_000

/// `text` if it has at most `limit` characters; else its first two thirds of them and its
/// last third, with how many were left out between.
func bounded(_ text: String, _ limit: Int) -> String {
    guard text.count > limit else { return text }
    let head = limit * 2 / 3, tail = limit - head
    return "\(text.prefix(head)) [... \(text.count - head - tail) characters left out ...] \(text.suffix(tail))"
}

/// Everything the command line prints goes through `printable`: names and strings that come
/// from files (a checkpoint's metadata and tensor names, image file names) cannot move the
/// cursor, clear the screen or set the window title. (This shadows `Swift.print` in this module.)
/// It keeps line breaks, so a line that names a file passes the name through `printable` first.
func print(_ items: Any..., separator: String = " ", terminator: String = "\n") {
    Swift.print(printable(items.map { "\($0)" }.joined(separator: separator), keepingLines: true), terminator: terminator)
}
