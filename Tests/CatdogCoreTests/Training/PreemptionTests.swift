import CatdogCheckpoint
import CatdogRun
import Foundation
import XCTest

/// Stop signals (preemption, a scheduler's time limit, Ctrl-C): every rank finishes its step,
/// they agree, one checkpoint is written, and the run exits with 128 + the signal; resumed,
/// it ends bit-identical to a run that was never stopped.
final class PreemptionTests: XCTestCase {
    func arguments(_ data: String, _ folder: String) -> [String] {
        ["train", "--data", data, "--checkpoint-dir", folder, "--model", "simple", "--image-size", "32",
         "--epochs", "12", "--batch-size", "8", "--patience", "0"]
    }

    /// Starts the run on 2 ranks, waits for `epoch 2/`, signals `target(run)` and returns the
    /// run's exit status and the seconds from the signal to its end.
    func stop(_ data: String, _ folder: String, with signal: Int32,
              target: (BackgroundRun) -> pid_t?) throws -> (status: Int32, seconds: Double, output: String) {
        let run = try BackgroundRun(ranks: 2, arguments(data, folder))
        run.wait(upTo: 120) { run.stdout.value.contains("epoch 2/") && target(run) != nil }
        XCTAssertTrue(run.process.isRunning, "the run ended before it could be stopped:\n\(run.stdout.value.suffix(2000))")
        let pid = try XCTUnwrap(target(run), run.stdout.value)
        let sent = Date()
        kill(pid, signal)
        let seconds = run.waitForExit(upTo: 60)
        XCTAssertLessThan(Date().timeIntervalSince(sent), 60, "still running 60 s after the signal")
        return (run.process.terminationStatus, seconds, run.stdout.value + run.stderr.value)
    }

    @discardableResult
    func assertResumesBitExactly(_ data: String, stopped: String, straight: String, arguments: [String]? = nil,
                                 file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let command = (arguments ?? self.arguments(data, stopped)) + ["--resume", "auto"]
        let resumed = try CLI.run(command, ranks: 2)
        XCTAssertEqual(resumed.status, 0, "mpirun -np 2 catdog-dist \(command.joined(separator: " ")) exited \(resumed.status):\n\(resumed.output.suffix(3000))",
                       file: file, line: line)
        let a = try LoadedCheckpoint(path: straight + "/last.safetensors.zst")
        let b = try LoadedCheckpoint(path: stopped + "/last.safetensors.zst")
        XCTAssertEqual(a.metadata.step, b.metadata.step, file: file, line: line)
        for name in a.file.tensors.keys.sorted() where name.hasPrefix("model/") || name.hasPrefix("optimizer/") {
            XCTAssertEqual(try a.file.array(name), try b.file.array(name), name, file: file, line: line)
        }
        XCTAssertEqual(a.metadata.history.map(\.val_loss), b.metadata.history.map(\.val_loss), file: file, line: line)
        return resumed.output
    }

    /// A stop after an epoch's last update, or during the evaluation that ends the epoch (which
    /// a long validation, vgg at 299 px, makes likely), checkpoints that point: the resumed run
    /// ends the epoch first (evaluation, checkpoint) and ends bit-identical to a run never
    /// stopped. (A checkpoint of that point was refused on resume, and an evaluation ran to its
    /// end before the signal was heard.) `--inject-stop` sends the rank a real SIGUSR1 there.
    func testAStopAfterAnEpochsLastUpdateOrDuringItsEvaluationResumesBitExactly() throws {
        let data = try sharedSubset(self, perClass: 60)
        // 108 training images at a global batch of 54: update 4 is epoch 2's last. Passes of 2
        // images: the 6 validation images of each rank take 3 passes, the ranks agreeing after each.
        func arguments(_ folder: String) -> [String] {
            ["train", "--data", data, "--checkpoint-dir", folder, "--model", "simple", "--image-size", "32",
             "--epochs", "4", "--batch-size", "54", "--micro-batch", "2", "--patience", "0"]
        }
        let straight = try temporaryFolder(self)
        let uninterrupted = try CLI.run(arguments(straight), ranks: 2)
        XCTAssertEqual(uninterrupted.status, 0, uninterrupted.output)
        for inject in ["1:4", "0:4:evaluation", "1:2:evaluation"] {
            let folder = try temporaryFolder(self)
            let command = arguments(folder) + ["--inject-stop", inject]
            let stopped = try CLI.run(command, ranks: 2)
            let said = "mpirun -np 2 catdog-dist \(command.joined(separator: " ")) exited \(stopped.status):\n\(stopped.output.suffix(3000))"
            XCTAssertTrue([128 + SIGUSR1, 128 + SIGTERM].contains(stopped.status), said)
            let update = inject.split(separator: ":")[1]
            let epoch = Int(update)! / 2
            XCTAssertTrue(stopped.output.contains("after the last step of epoch \(epoch) (update \(update)), before the end of the epoch"), said)
            let last = try LoadedCheckpoint(path: folder + "/last.safetensors.zst")
            XCTAssertEqual(last.metadata.stepInEpoch, 2, inject)
            XCTAssertEqual(last.metadata.history.count, epoch - 1, "\(inject): the stopped epoch has no metrics yet")
            let output = try assertResumesBitExactly(data, stopped: folder, straight: straight, arguments: arguments(folder))
            XCTAssertTrue(output.contains("resumed from \(folder)/last.safetensors.zst: after the last step of epoch \(epoch)"), output)
            XCTAssertTrue(output.contains("its steps were trained before the resume"), output)
        }
    }

    /// SIGUSR1 to mpirun (which forwards it to every rank at once; train.sbatch and
    /// train-until-done turn SIGTERM and SIGINT into it), and SIGTERM to one rank alone (as a
    /// node's own shutdown would): a checkpoint, the status of the signal, a bit-exact resume.
    func testAStopSignalCheckpointsAndTheResumeIsBitExact() throws {
        let data = try sharedSubset(self, perClass: 60)
        let straight = try temporaryFolder(self)
        let uninterrupted = try CLI.run(arguments(data, straight), ranks: 2)
        XCTAssertEqual(uninterrupted.status, 0, uninterrupted.output)
        for (signal, target, name) in [(SIGUSR1, { (run: BackgroundRun) in Optional(run.process.pid) }, "SIGUSR1"),
                                       (SIGTERM, { (run: BackgroundRun) in run.pid(ofRank: 1) }, "SIGTERM")] {
            let folder = try temporaryFolder(self)
            let stopped = try stop(data, folder, with: signal, target: target)
            XCTAssertEqual(stopped.status, 128 + signal, stopped.output)
            XCTAssertTrue(stopped.output.contains("stopped by"), stopped.output)
            // A step here takes milliseconds: the checkpoint within one step plus 5 s.
            XCTAssertLessThan(stopped.seconds, 5 + 2, "\(name): \(stopped.seconds) s from the signal to the end")
            let last = try LoadedCheckpoint(path: folder + "/last.safetensors.zst")
            XCTAssertFalse(last.metadata.finished, name)
            XCTAssertLessThan(last.metadata.epoch, 12, name)
            try assertResumesBitExactly(data, stopped: folder, straight: straight)
        }
    }

    /// A second stop signal (after the first's grace of 2 s) ends a rank at once, mid-step.
    func testASecondSignalStopsAtOnce() throws {
        let data = try sharedSubset(self, perClass: 40)
        let folder = try temporaryFolder(self)
        // vgg at 224 px on 64 images a step: a step takes seconds, so the first signal is still
        // waiting for it when the second comes.
        let run = try BackgroundRun(CLI.binary, ["train", "--data", data, "--checkpoint-dir", folder, "--model", "vgg",
                                                 "--image-size", "224", "--batch-size", "64", "--epochs", "3"])
        run.wait(upTo: 120) { run.stdout.value.contains("memory per rank") }
        XCTAssertTrue(run.process.isRunning, run.stdout.value + run.stderr.value)
        Thread.sleep(forTimeInterval: 0.5)
        // The process is frozen around each signal, so that the step the first one waits for is
        // still running when the second comes, however fast this machine is today: it takes
        // each signal as it resumes, and is frozen again as soon as it has announced the first
        // (within one 50 ms poll of a step that takes seconds).
        let pid = run.process.pid
        kill(pid, SIGSTOP)
        kill(pid, SIGTERM)
        kill(pid, SIGCONT)
        run.wait(upTo: 30) { run.stderr.value.contains("stop signal received") }
        kill(pid, SIGSTOP)
        XCTAssertTrue(run.stderr.value.contains("stop signal received"), "no announcement of the first signal:\n\(run.stderr.value.suffix(2000))")
        XCTAssertTrue(run.process.isRunning, "the run ended within 50 ms of the first signal:\n\(run.stdout.value.suffix(2000))")
        Thread.sleep(forTimeInterval: 2.3)  // past the first signal's grace of 2 s
        kill(pid, SIGTERM)
        kill(pid, SIGCONT)
        let waited = run.waitForExit(upTo: 30)
        XCTAssertLessThan(waited, 2, "a second signal should end the process at once")
        XCTAssertEqual(run.process.terminationStatus, 128 + SIGTERM, run.stderr.value)
        XCTAssertTrue(run.stderr.value.contains("a second stop signal"), run.stderr.value)
    }

    /// SIGTERM to cluster/train-until-done reaches the job as SIGUSR1, and the stopped job is
    /// not restarted.
    func testTrainUntilDoneForwardsAStopAndDoesNotRestart() throws {
        let data = try sharedSubset(self, perClass: 60)
        let folder = try temporaryFolder(self)
        let script = TensorBoardTests.repository.appendingPathComponent("cluster/train-until-done").path
        let run = try BackgroundRun(script, ["--"] + CLI.command(arguments(data, folder), ranks: 2))
        run.wait(upTo: 120) { run.stdout.value.contains("epoch 2/") }
        XCTAssertTrue(run.process.isRunning, run.stdout.value + run.stderr.value)
        kill(run.process.pid, SIGTERM)
        run.waitForExit(upTo: 60)
        let output = run.stdout.value + run.stderr.value
        XCTAssertEqual(run.process.terminationStatus, 128 + SIGUSR1, output)
        XCTAssertTrue(output.contains("stopped by SIGUSR1"), output)
        XCTAssertTrue(output.contains("not restarting"), output)
        XCTAssertFalse(output.contains("restart 1 of"), output)
        XCTAssertFalse(try LoadedCheckpoint(path: folder + "/last.safetensors.zst").metadata.finished)
    }
}
