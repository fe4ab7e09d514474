import CatdogCheckpoint
import CatdogRun
import Foundation
import XCTest

/// A rank killed with SIGKILL mid-training ends the whole job within seconds, and
/// `cluster/train-until-done` then finishes the run from the newest checkpoint.
final class KillRankTests: XCTestCase {
    final class Lines: @unchecked Sendable {
        private let lock = NSLock()
        private var text = ""
        func append(_ data: Data) { lock.lock(); text += String(decoding: data, as: UTF8.self); lock.unlock() }
        var value: String { lock.lock(); defer { lock.unlock() }; return text }
    }

    func testKilledRankEndsJobAndTrainUntilDoneFinishesIt() throws {
        let data = try sharedSubset(self, perClass: 120)
        let folder = try temporaryFolder(self)
        let arguments = ["train", "--data", data, "--checkpoint-dir", folder, "--model", "vgg", "--image-size", "48",
                         "--epochs", "3", "--batch-size", "24", "--patience", "0", "--checkpoint-every", "4"]
        guard FileManager.default.isExecutableFile(atPath: CLI.binary) else { throw CLI.NotBuilt() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = CLI.command(arguments, ranks: 2)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        let output = Lines()
        pipe.fileHandleForReading.readabilityHandler = { output.append($0.availableData) }
        try process.run()
        // Wait for rank 1's pid and a first checkpoint.
        let deadline = Date().addingTimeInterval(120)
        var victim: Int32?
        while Date() < deadline, process.isRunning {
            if victim == nil, let match = output.value.firstMatch(of: /rank 1 of 2 on \S+ \(pid (\d+)\)/) { victim = Int32(match.1) }
            if victim != nil, !CheckpointStore(directory: folder).numbered().isEmpty { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        let pid = try XCTUnwrap(victim, "rank 1 never said where it runs: \(output.value)")
        XCTAssertTrue(process.isRunning, "training ended before it could be interrupted")
        kill(pid, SIGKILL)
        let killed = Date()
        while process.isRunning, Date().timeIntervalSince(killed) < 30 { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertFalse(process.isRunning, "the job still runs 30 s after a rank died")
        process.waitUntilExit()
        pipe.fileHandleForReading.readabilityHandler = nil
        XCTAssertLessThan(Date().timeIntervalSince(killed), 10, "the job took too long to end")
        XCTAssertNotEqual(process.terminationStatus, 0)

        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("cluster/train-until-done").path
        let restart = Process()
        restart.executableURL = URL(fileURLWithPath: script)
        restart.arguments = ["--max-restarts", "1", "--"] + CLI.command(arguments, ranks: 2)
        let restartOutput = Pipe()
        restart.standardOutput = restartOutput
        restart.standardError = FileHandle.nullDevice
        try restart.run()
        let text = String(decoding: restartOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        restart.waitUntilExit()
        XCTAssertEqual(restart.terminationStatus, 0, text)
        XCTAssertTrue(text.contains("resumed from"), text)
        let last = try LoadedCheckpoint(path: folder + "/last.safetensors.zst")
        XCTAssertEqual(last.metadata.epoch, 3)
        XCTAssertTrue(last.metadata.finished)
        XCTAssertEqual(last.metadata.history.map(\.epoch), [1, 2, 3])
    }
}
