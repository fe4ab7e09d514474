import CatdogDistributed
import CatdogTraining
import Foundation
import XCTest

/// The stall watchdog: a slow but expected operation passes, a stalled one warns at half the
/// timeout and then ends the rank; a frozen rank (SIGSTOP) stops the whole job.
final class StallWatchdogTests: XCTestCase {
    final class Record: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        private var expiries = 0
        func report(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
        func expire() { lock.lock(); expiries += 1; lock.unlock() }
        var value: (lines: [String], expiries: Int) { lock.lock(); defer { lock.unlock() }; return (lines, expiries) }
    }

    /// The heartbeat's report names the peers a waiting rank needs: one that has not finished
    /// computing this update, and, while the rank listens in an all-reduce, one gone silent
    /// (not one that repeats its heartbeat); a rank that has not listened lately names only
    /// the ones behind. The stall message carries it.
    func testHeartbeatNamesThePeersBehindOrSilent() {
        let table = HeartbeatTable(rank: 0, hosts: ["h1", "h1", "h2", "h3"])
        let t0 = Date()
        XCTAssertTrue(table.report(now: t0).contains("No update computed yet"))
        table.announced(120)
        table.heard(rank: 1, progress: 120, at: t0)
        table.heard(rank: 2, progress: 119, at: t0)
        table.heard(rank: 3, progress: 120, at: t0)
        table.heard(rank: 3, progress: 118, at: t0)  // an older heartbeat does not overwrite a newer one
        table.polled(at: t0.addingTimeInterval(9))
        table.heard(rank: 1, progress: 120, at: t0.addingTimeInterval(9))  // waiting too, still heard
        let now = t0.addingTimeInterval(10)
        let report = table.report(now: now)
        XCTAssertTrue(report.hasPrefix("Waiting for rank 2 on h2 (not done computing update 120, last heard 10 s ago, done with update 119), rank 3 on h3 (silent, last heard 10 s ago, done with update 120)"), report)
        XCTAssertFalse(report.contains("rank 1 "), report)
        // Not listening (e.g. in a blocking collective): the heard times are stale; only rank 2 is behind.
        let later = table.report(now: now.addingTimeInterval(30))
        XCTAssertTrue(later.hasPrefix("Waiting for rank 2 on h2"), later)
        XCTAssertFalse(later.contains("rank 3"), later)

        let record = Record()
        let watchdog = StallWatchdog(timeout: 10, describe: "rank 0 of 4 on h1", peers: { table.report(now: now) },
                                     report: { record.report($0) }, expire: { record.expire() })
        watchdog.begin("epoch 2, step 3", expected: 0)
        XCTAssertTrue(watchdog.check(now: Date().addingTimeInterval(11)))
        XCTAssertTrue(record.value.lines.last?.contains("epoch 2, step 3") == true && record.value.lines.last?.contains("Waiting for rank 2 on h2") == true,
                      record.value.lines.joined(separator: "\n"))
    }

    /// During a checkpoint (rank 0 writes, the others wait listening), a peer that finished
    /// the update and then went silent ends the wait once the wait has lasted the timeout, long
    /// before the checkpoint's own allowance; rank 0, busy writing, and a peer still computing
    /// are never taken for silent, and nothing is judged while this rank does not listen. Its
    /// silence before the wait began does not count: after an 88 s evaluation of 8 ranks on 2
    /// cores, the last rank to finish it had not been heard since, and rank 0 ended the job
    /// as soon as it began its checkpoint.
    func testAPeerSilentDuringACheckpointIsFoundWithinTheTimeout() {
        let table = HeartbeatTable(rank: 1, hosts: ["h0", "h1", "h2", "h3"])
        let t0 = Date()
        table.announced(50)
        table.heard(rank: 0, progress: 50, at: t0)  // then writes the checkpoint, not heard
        table.heard(rank: 2, progress: 50, at: t0)  // then frozen
        table.heard(rank: 3, progress: 49, at: t0)  // still computing update 50
        let now = t0.addingTimeInterval(5)
        XCTAssertNil(table.silentPeer(now: now, longerThan: 3, except: 0), "not listening yet")
        table.polled(at: now.addingTimeInterval(-0.5))
        let silent = table.silentPeer(now: now, longerThan: 3, except: 0)
        XCTAssertEqual(silent?.peer.rank, 2)
        XCTAssertEqual(silent?.silence ?? 0, 5, accuracy: 1e-6)
        XCTAssertNil(table.silentPeer(now: now, longerThan: 6, except: 0), "not yet past the timeout")
        table.heard(rank: 2, progress: 50, at: now)
        XCTAssertNil(table.silentPeer(now: now, longerThan: 3, except: 0), "heard again")

        let frozen = HeartbeatTable(rank: 1, hosts: ["h0", "h1", "h2"])
        frozen.announced(50)
        frozen.heard(rank: 0, progress: 50, at: t0)
        frozen.heard(rank: 2, progress: 50, at: t0)
        frozen.polled(at: now)
        let record = Record()
        let watchdog = StallWatchdog(timeout: 3, describe: "rank 1 of 3 on h1",
                                     silence: { longerThan, except in
                                         frozen.silentPeer(now: now, longerThan: longerThan, except: except)
                                             .map { "rank \($0.peer.rank) on \($0.peer.host) has been silent for \(Int($0.silence)) s" } },
                                     report: { record.report($0) }, expire: { record.expire() })
        watchdog.begin("a training step", expected: 100)  // silence is not judged outside a listening wait
        XCTAssertFalse(watchdog.check(now: Date()))
        watchdog.begin("writing a checkpoint (rank 0) and waiting for it", expected: 100, listening: true, quiet: 0)
        XCTAssertFalse(watchdog.check(now: Date()), "silent before the wait began: not judged yet")
        XCTAssertEqual(record.value.expiries, 0, record.value.lines.joined(separator: "\n"))
        // Its own thread looks too (in 3 s): either look ends it.
        _ = watchdog.check(now: Date().addingTimeInterval(3.5))
        XCTAssertGreaterThanOrEqual(record.value.expiries, 1, "a peer silent for 5 s, 3.5 s of them in the wait, with --stall-timeout 3")
        XCTAssertTrue(record.value.lines.last?.contains("rank 2 on h2 has been silent for 5 s") == true, record.value.lines.joined(separator: "\n"))
        XCTAssertFalse(record.value.lines.last?.contains("rank 0 on") == true, record.value.lines.joined(separator: "\n"))
    }

    /// Timeout 10 s, an operation expected to take 20 s: nothing at 25 s (inside 20 + 10/2),
    /// a warning at 26 s, the end at 31 s; after `end()` nothing fires however late.
    func testSlowButExpectedPassesAndAStallWarnsThenEnds() {
        let record = Record()
        let watchdog = StallWatchdog(timeout: 10, describe: "rank 1 of 2 on h2",
                                     report: { record.report($0) }, expire: { record.expire() })
        let start = Date()
        watchdog.begin("epoch 3, step 7", expected: 20)
        XCTAssertFalse(watchdog.check(now: start.addingTimeInterval(25)))
        XCTAssertEqual(record.value.lines.count, 0)
        XCTAssertFalse(watchdog.check(now: start.addingTimeInterval(26)))
        XCTAssertEqual(record.value.lines.count, 1)
        XCTAssertTrue(record.value.lines[0].contains("warning: epoch 3, step 7"), record.value.lines[0])
        XCTAssertTrue(watchdog.check(now: start.addingTimeInterval(31)))
        XCTAssertEqual(record.value.expiries, 1)
        XCTAssertTrue(record.value.lines[1].contains("rank 1 of 2 on h2: stalled for 31 s in epoch 3, step 7"), record.value.lines[1])
        watchdog.end()
        XCTAssertFalse(watchdog.check(now: start.addingTimeInterval(1000)))
        XCTAssertEqual(record.value.expiries, 1)
    }

    /// A stop signal during an operation: one on time (under 1.5× its expected time, half the
    /// timeout, and 1 s) says nothing; a late one is reported at once with whom it waits for,
    /// without ending the rank (the signal's own path does that).
    func testAStopSignalInALateOperationSaysWhereAndForWhom() {
        let record = Record()
        let watchdog = StallWatchdog(timeout: 20, describe: "rank 0 of 2 on h1", peers: { "Waiting for rank 1 on h2." },
                                     report: { record.report($0) }, expire: { record.expire() })
        let start = Date()
        XCTAssertFalse(watchdog.stopSignalArrived("SIGTERM", now: start.addingTimeInterval(30)), "no operation")
        watchdog.begin("epoch 3, step 20", expected: 4)
        XCTAssertFalse(watchdog.stopSignalArrived("SIGTERM", now: start.addingTimeInterval(5.9)), "within 1.5 × 4 s")
        XCTAssertTrue(watchdog.stopSignalArrived("SIGTERM", now: start.addingTimeInterval(6.5)))
        watchdog.begin("epoch 3, step 21", expected: 30)
        XCTAssertFalse(watchdog.stopSignalArrived("SIGTERM", now: start.addingTimeInterval(9.5)), "within half the timeout")
        XCTAssertTrue(watchdog.stopSignalArrived("SIGTERM", now: start.addingTimeInterval(10.5)))
        watchdog.begin("epoch 3, step 22", expected: 0.01)
        XCTAssertFalse(watchdog.stopSignalArrived("SIGUSR1", now: start.addingTimeInterval(0.5)), "within 1 s")
        let lines = record.value.lines
        XCTAssertEqual(lines.count, 2, lines.joined(separator: "\n"))
        XCTAssertEqual(lines.first, "rank 0 of 2 on h1: SIGTERM arrived while epoch 3, step 20 had waited 6 s (expected 4 s, --stall-timeout 20 s). Waiting for rank 1 on h2.")
        XCTAssertTrue(lines.last?.contains("epoch 3, step 21 had waited 10 s") == true, lines.joined(separator: "\n"))
        XCTAssertEqual(record.value.expiries, 0)
    }

    /// The same through a real run: 2 ranks, rank 1 frozen, 5 s later a SIGTERM to rank 0 (as
    /// mpirun sends when Open MPI has lost a host's daemon, which can come before the
    /// watchdog's warning): within 2 s rank 0 names what it waits in (a step, or rarely the
    /// evaluation or checkpoint after an epoch) and whom, long before the warning at half
    /// the 30 s timeout.
    func testAStopSignalWhileWaitingForAFrozenRankNamesItAtOnce() throws {
        let (run, waiting, frozen) = try trainAndFreezeRank1(stallTimeout: 30)
        defer { if run.process.isRunning { run.process.terminate() } }
        defer { kill(frozen, SIGKILL) }
        Thread.sleep(forTimeInterval: 5)
        kill(waiting, SIGTERM)
        let signalled = Date()
        run.wait(upTo: 10) { run.stderr.value.contains("SIGTERM arrived while") }
        let said = run.stderr.value
        XCTAssertLessThan(Date().timeIntervalSince(signalled), 2, "no report within 2 s of the signal: \(said)")
        // In a step, rank 1 has not finished computing it or, waiting in its all-reduce, went
        // silent; in a collective after an epoch, the heartbeat can only say that every peer
        // finished the update.
        XCTAssertNotNil(said.firstMatch(of: /rank 0 of 2 on \S+: SIGTERM arrived while .+ had waited [4-9] s \(expected \d+ s, --stall-timeout 30 s\)\. (Waiting for rank 1 on \S+ \((not done computing|silent)|Every peer finished computing update)/),
                        said)
        XCTAssertFalse(said.contains("warning:"), "the report came from the warning, not the signal: \(said)")
        kill(frozen, SIGKILL)
        run.waitForExit(upTo: 30)
        XCTAssertNotEqual(run.process.terminationStatus, 0)
    }

    /// 2 ranks train; rank 1 is frozen (SIGSTOP, as a machine that hangs without its processes
    /// dying): rank 0's watchdog names the step it was in and ends, and the job stops within
    /// --stall-timeout + 10 s, exit non-zero.
    func testAFrozenRankStopsTheJobWithinTheTimeout() throws {
        let (run, _, frozen) = try trainAndFreezeRank1(stallTimeout: 3)
        defer { kill(frozen, SIGKILL) }
        let waited = run.waitForExit(upTo: 60)
        XCTAssertLessThan(waited, 60, "the job still runs 60 s after a rank froze")
        XCTAssertLessThan(waited, 3 + 10, "the job took longer than --stall-timeout + 10 s to end")
        XCTAssertNotEqual(run.process.terminationStatus, 0)
        let stderr = run.stderr
        // Frozen in a step, or in the epoch's checkpoint or the agreement after it (then its
        // heartbeat's silence names it, instead of the checkpoint's own longer allowance).
        XCTAssertNotNil(stderr.value.firstMatch(of: /rank 0 of 2 on \S+: stalled (for \d+ s in epoch \d+, step \d+|(for \d+ s )?in (writing a checkpoint \(rank 0\) and waiting for it|agreeing whether to stop after epoch \d+)(: rank 1 on \S+ has been silent for \d+ s)?)/), stderr.value)
    }

    /// 2 ranks train `simple` for long; once both ranks have said their pids and the first epoch
    /// has ended (so steps have been timed), rank 1 is frozen with SIGSTOP (a machine that hangs
    /// without its processes dying). Returns the run and the ranks' pids.
    func trainAndFreezeRank1(stallTimeout: Int) throws -> (run: BackgroundRun, rank0: pid_t, rank1: pid_t) {
        let data = try sharedSubset(self, perClass: 150)
        let folder = try temporaryFolder(self)
        let arguments = ["train", "--data", data, "--checkpoint-dir", folder, "--model", "simple", "--image-size", "32",
                         "--epochs", "200", "--batch-size", "24", "--patience", "0", "--stall-timeout", "\(stallTimeout)"]
        let run = try BackgroundRun(ranks: 2, arguments)
        run.wait(upTo: 120) { run.pid(ofRank: 1) != nil && run.pid(ofRank: 0) != nil && run.stdout.value.contains("epoch 1/200:") }
        let rank1 = try XCTUnwrap(run.pid(ofRank: 1), "rank 1 never said where it runs: \(run.stdout.value)")
        let rank0 = try XCTUnwrap(run.pid(ofRank: 0), "rank 0 never said where it runs: \(run.stdout.value)")
        XCTAssertTrue(run.process.isRunning, "training ended before rank 1 could be frozen: \(run.stderr.value)")
        kill(rank1, SIGSTOP)
        return (run, rank0, rank1)
    }
}
