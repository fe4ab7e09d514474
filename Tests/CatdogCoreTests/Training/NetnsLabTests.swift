import Foundation
import XCTest

/// Training across two "machines" of a `cluster/netns-lab` (network namespaces on this host,
/// 1 Gbit/s links): each rank reports its own host, and the run completes over TCP.
final class NetnsLabTests: XCTestCase {
    func script(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("cluster/\(name)").path
    }

    @discardableResult
    func lab(_ arguments: [String]) throws -> CLIResult {
        let process = Process(), out = Pipe(), err = Pipe()
        process.executableURL = URL(fileURLWithPath: script("netns-lab"))
        process.arguments = arguments
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile(), stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return CLIResult(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                         stderr: String(decoding: stderr, as: UTF8.self))
    }

    func testTrainingAcrossTwoLabHostsShowsTwoHosts() throws {
        guard getuid() == 0 else { throw XCTSkip("network namespaces need root") }
        guard FileManager.default.isExecutableFile(atPath: CLI.binary) else { throw CLI.NotBuilt() }
        let data = try sharedSubset(self, perClass: 40)
        let checkpoints = try temporaryFolder(self)
        let up = try lab(["up", "2", "--rate", "1gbit"])
        XCTAssertEqual(up.status, 0, up.output)
        addTeardownBlock { _ = try? self.lab(["down"]) }
        let result = try lab(["mpirun", "-np", "2", CLI.binary, "train", "--data", data, "--checkpoint-dir", checkpoints,
                              "--model", "simple", "--image-size", "32", "--epochs", "1", "--batch-size", "24"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("rank 0 of 2 on h1"), result.stdout)
        XCTAssertTrue(result.stdout.contains("rank 1 of 2 on h2"), result.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: checkpoints + "/best.safetensors.zst"))
    }

    /// 2 hosts train; h2's switch port goes down mid-epoch (a silent link). The job must end
    /// within --stall-timeout + 10 s, non-zero: mpirun notices the lost daemon (the lab runs it
    /// with a short TCP keepalive), rank 0's watchdog warns naming the step, and h2's rank ends
    /// itself within the timeout instead of spinning on.
    func testACutLinkEndsTheJobWithinTheStallTimeout() throws {
        guard getuid() == 0 else { throw XCTSkip("network namespaces need root") }
        guard FileManager.default.isExecutableFile(atPath: CLI.binary) else { throw CLI.NotBuilt() }
        let data = try sharedSubset(self, perClass: 300)
        let checkpoints = try temporaryFolder(self)
        let up = try lab(["up", "2", "--rate", "1gbit"])
        XCTAssertEqual(up.status, 0, up.output)
        addTeardownBlock { _ = try? self.lab(["down"]) }
        let run = try BackgroundRun(script("netns-lab"), [
            "mpirun", "-np", "2", CLI.binary, "train", "--data", data, "--checkpoint-dir", checkpoints,
            "--model", "simple", "--image-size", "32", "--epochs", "200", "--batch-size", "24",
            "--patience", "0", "--stall-timeout", "10"])
        run.wait(upTo: 120) { run.stdout.value.contains("epoch 2/200:") }
        XCTAssertTrue(run.process.isRunning, "training ended before the link could be cut: \(run.stdout.value)")
        XCTAssertEqual(try lab(["cut", "2"]).status, 0)
        let ended = run.waitForExit(upTo: 60)
        XCTAssertLessThan(ended, 10 + 10, "the job took longer than --stall-timeout + 10 s to end")
        XCTAssertNotEqual(run.process.terminationStatus, 0)
        let said = run.stdout.value + run.stderr.value
        XCTAssertTrue(said.contains("lost communication with a remote daemon") || said.contains("stalled for"), said)
        // h2's rank ends itself (its watchdog) within the timeout, although its link stays cut.
        Thread.sleep(forTimeInterval: 12)
        let pgrep = Process(), found = Pipe()
        pgrep.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        pgrep.arguments = ["-x", "catdog-dist"]
        pgrep.standardOutput = found
        try pgrep.run()
        let pids = String(decoding: found.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        pgrep.waitUntilExit()
        XCTAssertEqual(pids.trimmingCharacters(in: .whitespacesAndNewlines), "", "h2's rank still runs")
        // h2's orted waits for its link; bring it back so it sees mpirun gone and exits.
        _ = try lab(["restore", "2"])
    }
}
