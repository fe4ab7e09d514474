import Foundation
import XCTest

/// cluster/slurm/train.sbatch on a one-node Slurm started for the test (cluster/slurm/one-node):
/// the job trains on 2 ranks through mpirun inside the allocation. (A requeued job resuming is
/// rehearsed by hand, see docs/across-machines.md: forcing its restart with `scontrol update StartTime=now`
/// did not always take, so it is not part of the suite.)
final class SlurmTests: XCTestCase {
    func script(_ path: String) -> String {
        TensorBoardTests.repository.appendingPathComponent("cluster/" + path).path
    }

    func testTrainSbatchTrainsOnTwoRanksInTheAllocation() throws {
        guard getuid() == 0 else { throw XCTSkip("starting Slurm's daemons needs root") }
        guard FileManager.default.isExecutableFile(atPath: CLI.binary) else { throw CLI.NotBuilt() }
        let folder = try temporaryFolder(self)
        let slurm = folder + "/slurm"
        let up = try runCommand([script("slurm/one-node"), "up", slurm], environment: [:])
        XCTAssertEqual(up.status, 0, up.output)
        addTeardownBlock { _ = try? runCommand([self.script("slurm/one-node"), "down", slurm], environment: [:]) }
        guard up.status == 0 else { return }
        let env = ["SLURM_CONF": slurm + "/slurm.conf", "CATDOG_DIST": CLI.binary,
                   "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"]
        let data = try sharedSubset(self, perClass: 100)
        let checkpoints = folder + "/ck", output = folder + "/job.out"
        let submit = try runCommand(["sbatch", "--wait", "--parsable", "--nodes", "1", "--ntasks-per-node", "2", "--output", output,
                                  script("slurm/train.sbatch"), data, checkpoints, "--model", "simple", "--image-size", "32",
                                  "--epochs", "2"], environment: env)
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        XCTAssertEqual(submit.status, 0, submit.output + text)
        let job = submit.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(text.contains("job \(job) (restart 0) on"), text)
        XCTAssertTrue(text.contains("rank 0 of 2 on") && text.contains("rank 1 of 2 on"), text)
        XCTAssertTrue(text.contains("finished 2 epochs"), text)
        XCTAssertTrue(FileManager.default.fileExists(atPath: checkpoints + "/best.safetensors.zst"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: checkpoints + "/.lock"), "the lock is released")
    }

    /// A host name that does not resolve (a fresh machine whose /etc/hosts lacks it) is one line
    /// naming it and the fix, exit 1, at once and before any daemon starts: Slurm's own commands
    /// would retry the lookup for minutes.
    func testOneNodeRefusesAHostNameThatDoesNotResolve() throws {
        let folder = try temporaryFolder(self)
        let bin = folder + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        for tool in ["slurmctld", "slurmd", "sbatch", "munged"] where !commandExists(tool) {
            throw XCTSkip("\(tool) is missing (cluster/install-deps --for-tests installs Slurm)")
        }
        try "#!/bin/sh\necho no-such-host.invalid\n".write(toFile: bin + "/hostname", atomically: true, encoding: .utf8)
        chmod(bin + "/hostname", 0o755)
        let started = Date()
        let up = try runCommand([script("slurm/one-node"), "up", folder + "/slurm"],
                                environment: ["PATH": bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")], timeout: 60)
        XCTAssertEqual(up.status, 1, "cluster/slurm/one-node up: \(up.output)")
        XCTAssertTrue(up.stderr.contains("host name 'no-such-host.invalid' does not resolve") && up.stderr.contains("/etc/hosts"), up.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(started), 10)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/slurm/slurmctld.pid"), "no daemon started")
    }

    func commandExists(_ name: String) -> Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(name)")
        }
    }
}
