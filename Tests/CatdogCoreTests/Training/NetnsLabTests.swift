import CatdogCheckpoint
import CatdogRun
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
    func lab(_ arguments: [String]) throws -> CLIResult { try runCommand([script("netns-lab")] + arguments) }

    /// Makes a lab of `hosts` hosts at 1 Gbit/s for this test (taken down after it), or skips
    /// the test where network namespaces or the build are missing.
    func upLab(_ hosts: Int) throws {
        guard getuid() == 0 else { throw XCTSkip("network namespaces need root") }
        guard FileManager.default.isExecutableFile(atPath: CLI.binary) else { throw CLI.NotBuilt() }
        let up = try lab(["up", String(hosts), "--rate", "1gbit"])
        XCTAssertEqual(up.status, 0, up.output)
        addTeardownBlock { _ = try? self.lab(["down"]) }
    }

    func testTrainingAcrossTwoLabHostsShowsTwoHosts() throws {
        try upLab(2)
        let data = try sharedSubset(self, perClass: 40)
        let checkpoints = try temporaryFolder(self)
        let result = try lab(["mpirun", "-np", "2", CLI.binary, "train", "--data", data, "--checkpoint-dir", checkpoints,
                              "--model", "simple", "--image-size", "32", "--epochs", "1", "--batch-size", "24"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("rank 0 of 2 on h1"), result.stdout)
        XCTAssertTrue(result.stdout.contains("rank 1 of 2 on h2"), result.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: checkpoints + "/best.safetensors.zst"))
    }

    /// PowerSGD between machines over TCP: 2 lab hosts of 2 ranks each (`--allreduce
    /// hierarchical`, the machines found by shared memory), so each bucket's factors cross
    /// between the hosts on its rail. It trains, names 2 machines, and a resume from update 3
    /// ends bit-identical to the straight run.
    func testPowerSGDBetweenTwoLabHostsResumesBitExact() throws {
        try upLab(2)
        let data = try sharedSubset(self, perClass: 60)
        let hostfile = try temporaryFolder(self) + "/hosts"
        try "10.99.0.1 slots=2\n10.99.0.2 slots=2\n".write(toFile: hostfile, atomically: true, encoding: .utf8)
        let arguments = ["--model", "simple", "--image-size", "32", "--epochs", "2", "--batch-size", "24", "--patience", "0",
                         "--checkpoint-every", "3", "--keep", "20", "--compress", "powersgd:2", "--warmup-epochs", "0", "--allreduce", "hierarchical"]
        let straight = try temporaryFolder(self), resumed = try temporaryFolder(self)
        var result = try lab(["mpirun", "--oversubscribe", "--hostfile", hostfile, "-np", "4", CLI.binary, "train", "--data", data,
                              "--checkpoint-dir", straight] + arguments)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("between 2 machines (fp32 sums within each)"), result.stdout)
        result = try lab(["mpirun", "--oversubscribe", "--hostfile", hostfile, "-np", "4", CLI.binary, "train", "--data", data,
                          "--checkpoint-dir", resumed, "--resume", straight + "/ckpt-e0000-s00000003.safetensors.zst"] + arguments)
        XCTAssertEqual(result.status, 0, result.output)
        try assertSameTensorsAndHistory(try LoadedCheckpoint(path: straight + "/last.safetensors.zst"),
                                        try LoadedCheckpoint(path: resumed + "/last.safetensors.zst"))
    }

    enum Fault: String { case cut, freeze }

    /// 2 hosts train under `cluster/train-until-done --hostfile`; after two epochs h2 fails
    /// (`fault`: its switch port goes down, or all its processes are frozen with SIGSTOP).
    /// The job must stop within --stall-timeout + 10 s, naming the step and the peer (in the
    /// watchdog's warning, or, when Open MPI's loss of h2's daemon ends the job first, in rank
    /// 0's report on the SIGTERM that mpirun then sends: CI once saw the job end before the
    /// warning); then train-until-done finds h2 not answering, drops it and finishes the run on
    /// h1 alone from the last checkpoint, and metrics.jsonl shows 2 ranks, then 1. No watchdog warning comes
    /// before the fault (a first step and checkpoint writes do not trip it). A frozen h2 that
    /// thaws is taken back at the next start.
    /// With `extra` (e.g. PowerSGD compression) on the train command of every start.
    func rehearse(_ fault: Fault, extra: [String] = []) throws {
        try upLab(2)
        let data = try sharedSubset(self, perClass: 300)
        let checkpoints = try temporaryFolder(self)
        let epochs = 10, stallTimeout = 10.0
        let run = try BackgroundRun(script("train-until-done"), [
            "--hostfile", script("../hostfiles/netns-lab"), "--", script("netns-lab"), "mpirun",
            CLI.binary, "train", "--data", data, "--checkpoint-dir", checkpoints, "--model", "simple", "--image-size", "32",
            "--epochs", "\(epochs)", "--batch-size", "24", "--patience", "0", "--stall-timeout", "\(Int(stallTimeout))"] + extra)
        defer { if run.process.isRunning { run.process.terminate() } }
        run.wait(upTo: 120) { run.stdout.value.contains("epoch 2/\(epochs):") }
        XCTAssertTrue(run.process.isRunning, "training ended before the fault: \(run.stdout.value + run.stderr.value)")
        XCTAssertFalse(run.stderr.value.contains("warning:"), "the watchdog warned before any fault: \(run.stderr.value)")
        // Into epoch 3's steps (an epoch takes ~1.5 s; its evaluation and checkpoint ~0.1 s).
        Thread.sleep(forTimeInterval: 0.5)
        let faulted = Date()
        XCTAssertEqual(try lab([fault.rawValue, "2"]).status, 0)
        run.wait(upTo: 60) { run.stderr.value.contains("train-until-done: the job failed") }
        let stopped = Date().timeIntervalSince(faulted)
        XCTAssertLessThan(stopped, stallTimeout + 10, "the job took longer than --stall-timeout + 10 s to stop: \(run.stderr.value)")
        let said = run.stderr.value
        if extra.isEmpty {
            XCTAssertTrue(said.contains("epoch 3, step") && said.contains("Waiting for rank 1 on h2"),
                          "no message naming the step and the peer: \(said)")
        } else {
            // Compressed, an epoch takes a quarter of a second here, and Open MPI's own loss of
            // the daemon can end the job before the watchdog's warning at half its timeout:
            // either names what went wrong.
            XCTAssertTrue(said.contains("Waiting for rank 1 on h2") || said.contains("ORTE has lost communication with a remote daemon"),
                          "no message naming the peer or the lost daemon: \(said)")
        }
        run.waitForExit(upTo: 120)
        XCTAssertTrue(run.stderr.value.contains("dropped (no answer through"), run.stderr.value)
        XCTAssertEqual(run.process.terminationStatus, 0, run.stdout.value + run.stderr.value)
        XCTAssertTrue(run.stdout.value.contains("written by 2 ranks, continuing on 1"), run.stdout.value)
        if extra.contains("--compress") {
            XCTAssertTrue(run.stdout.value.contains("error feedback: the sum of the 2 ranks' that wrote the checkpoint goes on from rank 0"),
                          run.stdout.value)
        }
        XCTAssertTrue(run.stdout.value.contains("epoch \(epochs)/\(epochs):"), run.stdout.value)
        let metrics = try String(contentsOfFile: checkpoints + "/metrics.jsonl", encoding: .utf8)
            .split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let ranks = metrics.map { $0["ranks"] as? Int ?? 0 }
        XCTAssertEqual(ranks.first, 2)
        XCTAssertEqual(ranks.last, 1)
        XCTAssertEqual(metrics.last?["epoch"] as? Int, epochs)
        if fault == .freeze {
            // h2 comes back: the next start takes it back, and the run goes on with 2 ranks.
            let thaw = try lab(["thaw", "2"])
            XCTAssertEqual(thaw.status, 0, thaw.output + "; lab downs so far: "
                           + ((try? String(contentsOfFile: "/tmp/catdog-netns-lab.log", encoding: .utf8)) ?? "none logged"))
            let more = try BackgroundRun(script("train-until-done"), [
                "--hostfile", script("../hostfiles/netns-lab"), "--", script("netns-lab"), "mpirun",
                CLI.binary, "train", "--data", data, "--checkpoint-dir", checkpoints, "--epochs", "\(epochs + 1)",
                "--stall-timeout", "\(Int(stallTimeout))"])
            more.waitForExit(upTo: 120)
            XCTAssertEqual(more.process.terminationStatus, 0, more.stdout.value + more.stderr.value)
            XCTAssertTrue(more.stderr.value.contains("hosts that answer: 10.99.0.1 (1) 10.99.0.2 (1)\n"), more.stderr.value)
            XCTAssertTrue(more.stdout.value.contains("written by 1 ranks, continuing on 2"), more.stdout.value)
            XCTAssertTrue(more.stdout.value.contains("epoch \(epochs + 1)/\(epochs + 1):"), more.stdout.value)
        }
        if fault == .cut {
            // h2's own rank ends itself (its watchdog) although its link stays cut.
            let left = try processes(onHost: 2).filter { $0 == "catdog-dist" }
            XCTAssertEqual(left, [], "h2's rank still runs after its link was cut")
        }
    }

    /// Names of the processes inside lab host K.
    func processes(onHost k: Int) throws -> [String] {
        let text = try runCommand(["ip", "netns", "pids", "catdog-h\(k)"], timeout: 30).stdout
        return text.split(separator: "\n").compactMap {
            try? String(contentsOfFile: "/proc/\($0)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    /// Below --min-ranks, train-until-done --hostfile stops (exit 69) without starting the job,
    /// saying which hosts it dropped; -np in the command is refused, since it sets the ranks.
    func testTrainUntilDoneStopsBelowMinRanks() throws {
        let folder = try temporaryFolder(self)
        let hostfile = folder + "/hosts"
        try "# two machines\nlocalhost slots=1\nnode-gone slots=2  # its disk died\n".write(toFile: hostfile, atomically: true, encoding: .utf8)
        let stops = try BackgroundRun(script("train-until-done"), [
            "--hostfile", hostfile, "--min-ranks", "2", "--agent", "false", "--", "mpirun", CLI.binary, "train",
            "--data", folder, "--checkpoint-dir", folder + "/ck"])
        stops.waitForExit(upTo: 60)
        XCTAssertEqual(stops.process.terminationStatus, 69, stops.stderr.value)
        XCTAssertTrue(stops.stderr.value.contains("hosts that answer: localhost (1); dropped (no answer through 'false'): node-gone"), stops.stderr.value)
        XCTAssertTrue(stops.stderr.value.contains("fewer than --min-ranks 2"), stops.stderr.value)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/ck"), "the job started")
        let refused = try BackgroundRun(script("train-until-done"), [
            "--hostfile", hostfile, "--", "mpirun", "-np", "2", CLI.binary, "train", "--data", folder, "--checkpoint-dir", folder + "/ck"])
        refused.waitForExit(upTo: 60)
        XCTAssertEqual(refused.process.terminationStatus, 2)
        XCTAssertTrue(refused.stderr.value.contains("leave -np out of the command"), refused.stderr.value)
    }

    /// How many of the slots a (re)start takes: 3 slots and a global batch of 64 run 2 ranks
    /// (64 must divide among them), with `--balance auto` all 3 (shares are whole groups), and
    /// with auto and `--ghost-batch 32` 2 (two groups, one a rank). --min-ranks 4 stops each
    /// before the job starts, saying how many could run.
    func testTrainUntilDoneTakesEverySlotWithBalanceAuto() throws {
        let folder = try temporaryFolder(self)
        let hostfile = folder + "/hosts"
        try "localhost slots=3\n".write(toFile: hostfile, atomically: true, encoding: .utf8)
        for (extra, ranks, why) in [
            ([String](), 2, "running 2 of the 3 slots: the global batch 64 must divide among the ranks"),
            (["--balance", "auto"], 3, nil),
            (["--balance=auto", "--ghost-batch", "32"], 2, "running 2 of the 3 slots: --balance auto gives every rank at least one of the global batch's 2 groups"),
        ] {
            let run = try BackgroundRun(script("train-until-done"), [
                "--hostfile", hostfile, "--min-ranks", "4", "--agent", "true", "--", "mpirun", CLI.binary, "train",
                "--data", folder, "--checkpoint-dir", folder + "/ck", "--batch-size", "64"] + extra)
            run.waitForExit(upTo: 60)
            XCTAssertEqual(run.process.terminationStatus, 69, "\(extra): \(run.stderr.value)")
            XCTAssertTrue(run.stderr.value.contains("only \(ranks) rank(s) can run"), "\(extra): \(run.stderr.value)")
            if let why { XCTAssertTrue(run.stderr.value.contains(why), "\(extra): \(run.stderr.value)") }
            else { XCTAssertFalse(run.stderr.value.contains("running "), "\(extra): \(run.stderr.value)") }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/ck"), "the job started")
    }

    /// Weights (`--balance 2,1,1`) are one a rank of the whole hostfile: a start without one of
    /// its hosts trains with `--balance auto` instead, says so, and finishes (the old script
    /// passed the weights on, and train refused 3 weights for 2 ranks).
    func testTrainUntilDoneTakesBalanceAutoWhenWeightsLackAHost() throws {
        guard FileManager.default.isExecutableFile(atPath: CLI.binary) else { throw CLI.NotBuilt() }
        let data = try sharedSubset(self, perClass: 20)
        let folder = try temporaryFolder(self)
        let hostfile = folder + "/hosts"
        try "localhost slots=2\nabsent.invalid slots=1\n".write(toFile: hostfile, atomically: true, encoding: .utf8)
        let run = try BackgroundRun(script("train-until-done"), [
            "--hostfile", hostfile, "--agent", "false", "--max-restarts", "0", "--", "mpirun"] + CLI.mpirunFlags + [
            CLI.binary, "train", "--data", data, "--checkpoint-dir", folder + "/ck", "--model", "simple",
            "--image-size", "32", "--epochs", "1", "--batch-size", "24", "--balance", "2,1,1"])
        defer { if run.process.isRunning { run.process.terminate() } }
        run.waitForExit(upTo: 120)
        let said = run.stdout.value + run.stderr.value
        XCTAssertEqual(run.process.terminationStatus, 0, said)
        XCTAssertTrue(said.contains("without absent.invalid this start takes --balance auto"), said)
        XCTAssertTrue(said.contains("batch split auto"), said)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/ck/last.safetensors.zst"), said)
    }

    /// The hostfile is untrusted: a "host" that would reach the agent as an option (`ssh
    /// -oProxyCommand=...` runs a command) and slot counts outside 1...65536 or not numbers are
    /// refused, naming the line, before any host is asked or the job started; nothing is run.
    func testTrainUntilDoneRefusesAHostfileThatIsNoListOfHosts() throws {
        let folder = try temporaryFolder(self)
        let hostfile = folder + "/hosts", planted = folder + "/planted"
        for (text, expected) in [
            ("localhost slots=1\n-oProxyCommand=touch\\${IFS}\(planted) slots=1\n", "line 2: -oProxyCommand"),
            ("localhost slots=99999999999999999999\n", "line 1: slots=99999999999999999999 is not a whole number from 1 to 65536"),
            ("# none\nlocalhost slots=0\n", "line 2: slots=0 is not"),
            ("localhost slots=two\n", "line 1: slots=two is not"),
            ("local$(touch \(planted))host\n", "line 1:"),
        ] {
            try text.write(toFile: hostfile, atomically: true, encoding: .utf8)
            let run = try BackgroundRun(script("train-until-done"), [
                "--hostfile", hostfile, "--agent", "sh -c", "--", "mpirun", CLI.binary, "train",
                "--data", folder, "--checkpoint-dir", folder + "/ck"])
            run.waitForExit(upTo: 60)
            XCTAssertEqual(run.process.terminationStatus, 2, "hostfile \(text.debugDescription): \(run.stderr.value)")
            XCTAssertTrue(run.stderr.value.contains(expected), "hostfile \(text.debugDescription): \(run.stderr.value)")
            XCTAssertTrue(run.stderr.value.contains("correct the hostfile"), run.stderr.value)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: planted), "a host name was run as a command")
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/ck"), "the job started")
    }

    func testACutLinkStopsTheJobAndTrainUntilDoneFinishesOnTheOtherHost() throws { try rehearse(.cut) }

    /// The same with PowerSGD on: the elastic restart onto one rank goes on with the two
    /// ranks' error feedback summed.
    func testACutLinkWithPowerSGDStillFinishesOnTheOtherHost() throws {
        try rehearse(.cut, extra: ["--compress", "powersgd:2", "--warmup-epochs", "0"])
    }

    /// PowerSGD across 4 lab hosts at 1 Gbit/s (real compute, 2 ranks a core): the run
    /// trains (finite losses; the training loss of the last of 4 epochs at least 0.05 below the
    /// first's: 108 images are learnt by heart; 12 validation images say little), and the same
    /// run resumed on the 4 hosts from its checkpoint at update 3 ends bit-identical to it,
    /// every rank's error feedback included.
    func testPowerSGDAcrossFourHostsResumesBitExactly() throws {
        try upLab(4)
        let data = try sharedSubset(self, perClass: 60)
        func train(_ folder: String, _ extra: [String] = []) throws -> CLIResult {
            try lab(["mpirun", "-np", "4", CLI.binary, "train", "--data", data, "--checkpoint-dir", folder, "--model", "resnet",
                     "--image-size", "32", "--epochs", "4", "--batch-size", "24", "--patience", "0", "--checkpoint-every", "3",
                     "--keep", "20", "--compress", "powersgd:2", "--warmup-epochs", "0"] + extra)
        }
        let straight = try temporaryFolder(self)
        var result = try train(straight)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("rank 3 of 4 on h4"), result.stdout)
        let metrics = try String(contentsOfFile: straight + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let trainLoss = metrics.map { $0["train_loss"] as? Double ?? .nan }, validation = metrics.map { $0["val_loss"] as? Double ?? .nan }
        XCTAssertEqual(metrics.count, 4)
        XCTAssertTrue((trainLoss + validation).allSatisfy(\.isFinite), "\(trainLoss) \(validation)")
        XCTAssertLessThan(trainLoss.last!, trainLoss.first! - 0.05, "training loss by epoch: \(trainLoss)")
        let resumed = try temporaryFolder(self)
        result = try train(resumed, ["--resume", straight + "/ckpt-e0000-s00000003.safetensors.zst"])
        XCTAssertEqual(result.status, 0, result.output)
        let a = try LoadedCheckpoint(path: straight + "/last.safetensors.zst")
        let b = try LoadedCheckpoint(path: resumed + "/last.safetensors.zst")
        XCTAssertNotNil(a.file.tensors["compression/error/3"])
        try assertSameTensorsAndHistory(a, b)
    }

    func testAFrozenHostStopsTheJobAndTrainUntilDoneFinishesOnTheOtherHost() throws { try rehearse(.freeze) }
}
