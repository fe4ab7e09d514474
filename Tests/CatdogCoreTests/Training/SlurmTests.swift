import Foundation
import XCTest

/// cluster/slurm/train.sbatch on a one-node Slurm started for the test (cluster/slurm/one-node):
/// the job trains on 2 ranks through mpirun inside the allocation; requeued mid-run (as
/// preemption or a failed node would), it starts again and resumes from its newest checkpoint.
final class SlurmTests: XCTestCase {
    func script(_ path: String) -> String {
        TensorBoardTests.repository.appendingPathComponent("cluster/" + path).path
    }

    @discardableResult
    func command(_ arguments: [String], environment: [String: String]) throws -> CLIResult {
        let process = Process(), out = Pipe(), err = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile(), stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return CLIResult(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                         stderr: String(decoding: stderr, as: UTF8.self))
    }

    func testTrainSbatchRunsAndARequeuedJobResumes() throws {
        guard getuid() == 0 else { throw XCTSkip("starting Slurm's daemons needs root") }
        guard FileManager.default.isExecutableFile(atPath: CLI.binary) else { throw CLI.NotBuilt() }
        let folder = try temporaryFolder(self)
        let slurm = folder + "/slurm"
        let up = try command([script("slurm/one-node"), "up", slurm], environment: [:])
        XCTAssertEqual(up.status, 0, up.output)
        addTeardownBlock { _ = try? self.command([self.script("slurm/one-node"), "down", slurm], environment: [:]) }
        guard up.status == 0 else { return }
        let env = ["SLURM_CONF": slurm + "/slurm.conf", "CATDOG_DIST": CLI.binary,
                   "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"]
        let data = try sharedSubset(self, perClass: 300)
        let checkpoints = folder + "/ck", output = folder + "/job.out"
        let submit = try command(["sbatch", "--parsable", "--nodes", "1", "--ntasks-per-node", "2", "--output", output,
                                  script("slurm/train.sbatch"), data, checkpoints, "--model", "simple", "--image-size", "32",
                                  "--epochs", "8", "--patience", "0"], environment: env)
        XCTAssertEqual(submit.status, 0, submit.output)
        let job = submit.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        func said() -> String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }
        func queued() -> Bool { ((try? command(["squeue", "-h", "-j", job, "-o", "%T"], environment: env).stdout) ?? "").contains { $0.isLetter } }
        var deadline = Date().addingTimeInterval(120)
        while Date() < deadline, !said().contains("epoch 3/8:") { Thread.sleep(forTimeInterval: 0.2) }
        XCTAssertTrue(said().contains("epoch 3/8:"), said())
        XCTAssertEqual(try command(["scontrol", "requeue", job], environment: env).status, 0)
        // Slurm holds a requeued job (~2 min) before it may start again: once it is pending, let it go.
        deadline = Date().addingTimeInterval(90)
        while Date() < deadline, !said().contains("(restart 1)") {
            if try command(["squeue", "-h", "-j", job, "-o", "%T"], environment: env).stdout.contains("PENDING") {
                try command(["scontrol", "update", "JobId=\(job)", "StartTime=now"], environment: env)
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
        deadline = Date().addingTimeInterval(180)
        while Date() < deadline, queued() { Thread.sleep(forTimeInterval: 1) }
        XCTAssertFalse(queued(), "the job is still queued or running: \(said())")
        let text = said()
        XCTAssertTrue(text.contains("job \(job) (restart 0) on") && text.contains("job \(job) (restart 1) on"), text)
        XCTAssertTrue(text.contains("rank 1 of 2 on"), text)
        XCTAssertTrue(text.contains("resumed from \(checkpoints)/last.safetensors.zst"), text)
        XCTAssertTrue(text.contains("finished 8 epochs"), text)
        let epochs = try String(contentsOfFile: checkpoints + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["epoch"] as? Int }
        XCTAssertEqual(epochs.last, 8)
    }
}
