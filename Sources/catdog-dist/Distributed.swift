import ArgumentParser
import CatdogData
import CatdogDistributed
import CatdogEngine
import CatdogSupport
import Foundation

/// Open MPI's non-blocking all-reduce (libnbc, which carries the gradient buckets) takes a
/// binomial tree for every in-place sum (`MPI_IN_PLACE`, as the buckets are): all of it is
/// reduced into one rank and broadcast back, so that rank's link carries the gradients
/// 2 log₂ N times. Rabenseifner's reduce-scatter and all-gather sends each rank 2(N − 1)/N of
/// them. On 8 emulated machines at 1 Gbit/s (`resnet` 64 px, exact fp32) a step took 142 ms
/// instead of 408 (docs/across-machines.md). Set before MPI starts, and only where the user
/// has not chosen (`mpirun --mca coll_libnbc_iallreduce_algorithm N` or the environment).
func chooseNonBlockingAllReduce() {
    setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "3", 0)
}

/// Runs `body` on this rank. Any error ends the whole job: the rank prints what went wrong
/// and calls MPI_Abort, so the other ranks never wait forever in a collective. A rank other
/// than the first waits 2 s before it does: a refusal every rank makes (an option the resumed
/// run does not keep) is then said once, by the first rank, whose abort has ended the job;
/// one only this rank makes (a file its machine cannot read) is said after the wait.
func runDistributed(announce: Bool = true, faults: FaultOptions? = nil, machineRanks: Int? = nil,
                    _ body: (Communicator) throws -> Void) throws {
    chooseNonBlockingAllReduce()
    let comm: MPICommunicator
    do { comm = try MPICommunicator(machineRanks: machineRanks) } catch {
        printError("cannot start MPI: \(error)")
        throw ExitCode(1)
    }
    if announce {
        print("rank \(comm.rank) of \(comm.size) on \(comm.hostName) (pid \(getpid()))")
        fflush(nil)
    }
    do {
        try body(faults?.wrap(comm) ?? comm)
    } catch let stop as ResumableStop {
        // Every rank got here together, after the checkpoint: a clean end, not an abort.
        comm.finalize()
        throw ExitCode(stop.exitCode)
    } catch let error as ExitCode {
        if comm.size > 1, error != .success { comm.abort(code: error.rawValue) }
        comm.finalize()
        throw error
    } catch {
        if comm.rank != 0 { waitForTheFirstRank() }
        printError(comm.size > 1 ? "rank \(comm.rank) of \(comm.size) on \(comm.hostName): \(error)" : "\(error)")
        if comm.size > 1 { comm.abort(code: 1) }
        throw ExitCode(1)
    }
    comm.finalize()
}

/// What a rank other than the first does before it prints a refusal and ends: waits 2 s, so
/// that the same refusal on the first rank has ended the job (said once) while one only this
/// rank makes is still said. The whole 2 s: Open MPI's signals cut a plain sleep short.
func waitForTheFirstRank() {
    let until = Date(timeIntervalSinceNow: 2)
    while Date() < until { usleep(50_000) }
}

/// Training stopped by a signal after writing the checkpoint it resumes from. The exit status
/// is the shell's for that signal (143 for SIGTERM, 130 for SIGINT, 138 for SIGUSR1), so a
/// scheduler or script sees that it was stopped, not that it failed.
struct ResumableStop: Error {
    var signal: Int32
    var exitCode: Int32 { 128 + signal }
}

/// Rank 0's messages to the user; the other ranks stay quiet.
struct RankLog {
    let comm: Communicator
    init(_ comm: Communicator) { self.comm = comm }
    func info(_ message: String) {
        guard comm.rank == 0 else { return }
        print(message)
        fflush(nil)
    }
}

/// A live status line on a terminal (rewritten in place); on a pipe, a line every 15 s.
/// Nothing in the first `quietSeconds`, so that a command that ends soon prints none.
final class ProgressLine {
    private let isTerminal = isatty(STDERR_FILENO) == 1
    private var lastPrinted = Date.distantPast
    private var shown = false
    private let quietUntil: Date

    init(quietSeconds: Double = 0) {
        quietUntil = Date(timeIntervalSinceNow: quietSeconds)
    }

    func update(_ text: String) {
        guard Date() >= quietUntil else { return }
        if isTerminal {
            FileHandle.standardError.write(Data("\r\u{1B}[2K\(text)".utf8))
            shown = true
        } else if Date().timeIntervalSince(lastPrinted) >= 15 {
            FileHandle.standardError.write(Data("\(text)\n".utf8))
            lastPrinted = Date()
        }
    }

    func clear() {
        if shown { FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8)); shown = false }
    }
}

/// "evaluate: 3200/12500 images  85.2 a second  ETA 1:49" on stderr once `label`'s work has
/// run 10 s (a short one prints none), cleared when the last image is done; stdout keeps the
/// result alone.
func imageProgress(_ label: String, total: Int) -> (Int) -> Void {
    let line = ProgressLine(quietSeconds: 10)
    let start = Date()
    return { done in
        let rate = Double(done) / max(Date().timeIntervalSince(start), 1e-9)
        line.update(String(format: "%@: %d/%d images  %.1f a second  ETA %@", label, done, total, rate,
                           formatDuration(Double(total - done) / max(rate, 1e-9))))
        if done >= total { line.clear() }
    }
}
