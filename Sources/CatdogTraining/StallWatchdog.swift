import Foundation

/// Notices when this rank has waited too long in one operation (a training step, with its
/// all-reduces; an evaluation; a checkpoint) and ends the process, so a silent link or a frozen
/// peer stops the job instead of hanging it (PyTorch's NCCL timeout, Horovod's stall check).
///
/// The training thread brackets each operation with `begin`/`end`. A helper thread checks once a
/// second: past `expected + timeout / 2` it warns once; past `expected + timeout` it prints what
/// it was doing and where, then exits the process with status 75 (EX_TEMPFAIL). An MPI call
/// cannot be interrupted from another thread, and `mpirun` reacts to a rank that exits by
/// ending the job, so exiting is how every rank gets out of a collective that will never end.
/// `expected` is what the caller knows: the slowest step so far, an estimate of an evaluation.
///
/// A stop signal wakes the helper at once: when the process is being ended from outside
/// (mpirun ending the job because Open MPI lost a host's daemon, which can come before the
/// warning), a late operation says there and then what it waits in and for whom.
public final class StallWatchdog: @unchecked Sendable {
    public let timeout: Double
    private let lock = NSLock()
    private var operation: String?
    private var started = Date()
    private var expected = 0.0
    private var warned = false
    private var paused = 0.0
    private let describe: String
    private let peers: (@Sendable () -> String)?
    private let silence: (@Sendable (_ longerThan: Double, _ except: Int?) -> String?)?
    /// A rank expected not to be heard during the current operation (rank 0 writing a
    /// checkpoint), and whether peers' silence counts in it at all.
    private var quiet: Int?
    private var judgesSilence = false
    private let report: @Sendable (String) -> Void
    private let expire: @Sendable () -> Void

    /// `describe` names this rank ("rank 1 of 2 on h2"); `peers` says whom it is waiting for
    /// (the heartbeat's report); `silence` names a peer silent for longer than the time given,
    /// other than the rank given (the heartbeat's `silentPeer`); `report` prints a line
    /// (stderr); `expire` ends the process (tests replace it); `stopSignal` waits up to the
    /// time given for a stop signal and names it, once (`StopSignals.wait`), nil for none.
    public init(timeout: Double, describe: String, peers: (@Sendable () -> String)? = nil,
                silence: (@Sendable (_ longerThan: Double, _ except: Int?) -> String?)? = nil,
                report: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) },
                expire: @escaping @Sendable () -> Void = { _exit(75) },
                stopSignal: (@Sendable (_ upTo: Double) -> String?)? = nil) {
        self.timeout = timeout
        self.describe = describe
        self.peers = peers
        self.silence = silence
        self.report = report
        self.expire = expire
        let interval = min(1, max(timeout / 10, 0.05))
        let thread = Thread { [weak self] in
            var last = Date()
            while let watchdog = self {
                let now = Date()
                // A look far later than the sleep allows: this process itself did not run.
                let gap = now.timeIntervalSince(last) - interval
                if gap > max(3, 3 * interval) { watchdog.notePause(gap) }
                last = now
                if watchdog.check(now: now) { return }
                if let stopSignal {
                    if let signal = stopSignal(interval) { watchdog.stopSignalArrived(signal) }
                } else {
                    Thread.sleep(forTimeInterval: interval)
                }
            }
        }
        thread.name = "catdog-watchdog"
        thread.start()
    }

    /// Starts timing `operation` (e.g. "the all-reduce of epoch 3, step 120"), which should
    /// take about `expected` seconds. With `listening`, every rank but `quiet` waits in it
    /// hearing the others (a checkpoint: rank 0 writes, the rest wait in a barrier), so a peer
    /// silent for `timeout` of it ends it then, however long the operation may take. Only
    /// silence within the operation counts: before it, the peers need not have been heard (the
    /// last rank to finish a long evaluation is not heard during it, nor in a collective that
    /// it completes on arrival).
    public func begin(_ operation: String, expected: Double, listening: Bool = false, quiet: Int? = nil) {
        lock.lock()
        self.operation = operation
        self.expected = max(expected, 0)
        judgesSilence = listening
        self.quiet = quiet
        started = Date()
        warned = false
        paused = 0
        lock.unlock()
    }

    /// This process did not run for `seconds` (SIGSTOP, a suspended machine) during the
    /// current operation: said when it stalls, since then the fault is this rank's own.
    public func notePause(_ seconds: Double) {
        lock.lock()
        if operation != nil { paused += seconds }
        lock.unlock()
    }

    public func end() {
        lock.lock()
        operation = nil
        lock.unlock()
    }

    /// Runs `body` as one watched operation.
    public func watch<T>(_ operation: String, expected: Double, listening: Bool = false, quiet: Int? = nil,
                         _ body: () throws -> T) rethrows -> T {
        begin(operation, expected: expected, listening: listening, quiet: quiet)
        defer { end() }
        return try body()
    }

    /// A stop signal (`signal`, e.g. "SIGTERM") arrived. When the current operation is already
    /// late (past 1.5× what it was expected to take or past half the timeout, and past 1 s),
    /// says at once where this rank waits and for whom, because the process may be killed
    /// before its own warning. An operation on time says nothing (a preemption mid-step).
    /// Returns whether it said so.
    @discardableResult
    public func stopSignalArrived(_ signal: String, now: Date = Date()) -> Bool {
        lock.lock()
        guard let operation else { lock.unlock(); return false }
        let (waited, expected) = (now.timeIntervalSince(started), expected)
        lock.unlock()
        guard waited > max(1, min(1.5 * expected, timeout / 2)) else { return false }
        let whom = peers.map { " " + $0() } ?? ""
        report(String(format: "%@: %@ arrived while %@ had waited %.0f s (expected %.0f s, --stall-timeout %.0f s).%@",
                      describe, signal, operation, waited, expected, timeout, whom))
        return true
    }

    /// One look; true once it has fired (the thread then stops).
    public func check(now: Date) -> Bool {
        lock.lock()
        guard let operation else { lock.unlock(); return false }
        let waited = now.timeIntervalSince(started)
        let limit = expected + timeout
        let warn = !warned && waited > expected + timeout / 2
        if warn { warned = true }
        let paused = paused
        let (judgesSilence, quiet) = (self.judgesSilence, self.quiet)
        lock.unlock()
        if judgesSilence, paused == 0, waited > timeout, let silent = silence?(timeout, quiet) {
            report(String(format: "%@: stalled in %@: %@ (--stall-timeout %.0f s). "
                + "Its host or the network stopped answering (a cut link or a frozen machine); "
                + "ending this rank so the job stops instead of hanging. Resume with --resume auto "
                + "(cluster/train-until-done --hostfile drops hosts that do not answer).",
                describe, operation, silent, timeout))
            expire()
            return true
        }
        if waited > limit {
            let whom = paused > 0
                ? String(format: " This rank itself did not run for %.0f s of that (its process was stopped or its machine suspended), so the fault is likely its own.", paused)
                : peers.map { " " + $0() } ?? ""
            report(String(format: "%@: stalled for %.0f s in %@ (allowed %.0f s: %.0f s expected + --stall-timeout %.0f s).%@ "
                + "A peer rank, its host or the network stopped answering (a cut link or a frozen machine); "
                + "ending this rank so the job stops instead of hanging. Resume with --resume auto "
                + "(cluster/train-until-done --hostfile drops hosts that do not answer).",
                describe, waited, operation, limit, expected, timeout, whom))
            expire()
            return true
        }
        if warn {
            let whom = peers.map { " " + $0() } ?? ""
            report(String(format: "%@: warning: %@ has waited %.0f s (expected %.0f s); stopping at %.0f s unless it completes.%@",
                          describe, operation, waited, expected, limit, whom))
        }
        return false
    }
}
