import CatdogRun
import Foundation
import XCTest

/// Runs the built `catdog-dist` (from the same build folder as the tests), alone or under
/// `mpirun -np N`, and captures its output. `swift test` builds it with the
/// tests (as `cluster/test` runs them).
struct CLIResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var output: String { stdout + stderr }
}

enum CLI {
    /// The executable beside the test bundle (on Linux the bundle URL is the build folder itself).
    static var binary: String {
        let bundle = Bundle(for: BundleMarker.self).bundleURL
        let folders = [bundle, bundle.deletingLastPathComponent(),
                       URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        let candidates = folders.map { $0.appendingPathComponent("catdog-dist").path }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }

    struct NotBuilt: Error, CustomStringConvertible {
        var description: String { "\(CLI.binary) is not built: run the tests with `swift test -c release` (cluster/test does), which builds it" }
    }

    final class BundleMarker {}

    /// mpirun flags for tests as root on a 2-core machine.
    static let mpirunFlags = ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,vader,tcp"]

    static func command(_ arguments: [String], ranks: Int?) -> [String] {
        guard let ranks else { return [binary] + arguments }
        return ["mpirun"] + mpirunFlags + ["-np", String(ranks), binary] + arguments
    }

    @discardableResult
    static func run(_ arguments: [String], ranks: Int? = nil, environment: [String: String] = [:],
                    timeout: TimeInterval = 300) throws -> CLIResult {
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw NotBuilt() }
        // A checkpoint a resume would refuse stops the run that writes it (a warning for users).
        let strict = ["CATDOG_CHECKPOINT_CHECK": "strict"].merging(environment) { _, given in given }
        return try runCommand(command(arguments, ranks: ranks), environment: strict, timeout: timeout)
    }
}

/// A command spawned with stdin from /dev/null and its output going to files, in a process
/// group of its own, reaped with waitpid.
///
/// Not Foundation's `Process` and no pipes: a daemon the command leaves behind (Slurm's,
/// munged, an orted cut off from its mpirun) may keep every descriptor it inherited open, and
/// waiting for such a descriptor to close (as `Process` does to learn that its child ended)
/// hung a CI run for good.
final class SpawnedProcess: @unchecked Sendable {
    let pid: pid_t
    let folder: String
    private let lock = NSLock()
    private var status: Int32?

    init(_ command: [String], environment: [String: String] = [:]) throws {
        folder = NSTemporaryDirectory() + "catdog-run-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, folder + "/stdout", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, folder + "/stderr", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        // /usr/bin/env looks the command up on the PATH unless it is a path.
        let argv = (["/usr/bin/env"] + command).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in argv + envp { free(p) } }
        var child: pid_t = 0
        let spawned = posix_spawn(&child, "/usr/bin/env", &actions, &attributes, argv, envp)
        guard spawned == 0 else {
            try? FileManager.default.removeItem(atPath: folder)
            throw NSError(domain: "SpawnedProcess", code: Int(spawned), userInfo: [
                NSLocalizedDescriptionKey: "could not start \(command.joined(separator: " ")): \(String(cString: strerror(spawned)))"])
        }
        pid = child
    }

    deinit {
        if isRunning { kill(-pid, SIGKILL); waitForExit() }
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func reap(blocking: Bool) {
        lock.lock(); defer { lock.unlock() }
        guard status == nil else { return }
        var raw: Int32 = 0
        while true {
            let r = waitpid(pid, &raw, blocking ? 0 : WNOHANG)
            if r == pid { break }
            if r < 0 && errno == EINTR { continue }
            if r < 0 { status = -1 }  // not our child any more: nothing to wait for
            return
        }
        // The shell's encoding: the exit code, or 128 + the signal that ended it.
        status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
    }

    var isRunning: Bool { reap(blocking: false); lock.lock(); defer { lock.unlock() }; return status == nil }

    /// The exit code (128 + signal when a signal ended it); waits for the end.
    var terminationStatus: Int32 { waitForExit(); lock.lock(); defer { lock.unlock() }; return status ?? -1 }

    func waitForExit() { reap(blocking: true) }

    /// Polls until the command ends or `seconds` pass; true if it ended.
    @discardableResult
    func waitForExit(upTo seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning, Date() < deadline { usleep(20_000) }
        return !isRunning
    }

    /// SIGTERM to the command alone, as `Process.terminate` did.
    func terminate() { if isRunning { kill(pid, SIGTERM) } }

    /// SIGKILL to the command and everything in its process group.
    func killGroup() { kill(-pid, SIGKILL) }

    var stdout: String { (try? String(contentsOfFile: folder + "/stdout", encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: folder + "/stderr", encoding: .utf8)) ?? "" }
}

/// Runs `command` (looked up on the PATH unless it is a path) with `environment` added to this
/// process's, and captures its output; after `timeout` seconds its whole process group is
/// killed and the test fails.
@discardableResult
func runCommand(_ command: [String], environment: [String: String] = [:], timeout: TimeInterval = 300) throws -> CLIResult {
    let child = try SpawnedProcess(command, environment: environment)
    if !child.waitForExit(upTo: timeout) {
        child.killGroup()
        XCTFail("timed out after \(timeout) s: \(command.joined(separator: " "))")
    }
    return CLIResult(status: child.terminationStatus, stdout: child.stdout, stderr: child.stderr)
}

/// A folder of symbolic links to the first `perClass` cats and dogs of the shared training set.
func sharedSubset(_ test: XCTestCase, perClass: Int) throws -> String {
    let folder = try temporaryFolder(test)
    let source = sharedData + "/train"
    guard FileManager.default.fileExists(atPath: source + "/cat.0.jpg") else {
        throw XCTSkip("\(source) is missing: tests need ../shared beside the repository")
    }
    for i in 0..<perClass {
        for animal in ["cat", "dog"] {
            try FileManager.default.createSymbolicLink(atPath: "\(folder)/\(animal).\(i).jpg", withDestinationPath: "\(source)/\(animal).\(i).jpg")
        }
    }
    return folder
}

/// All model tensors of a checkpoint, by name.
func modelTensors(_ path: String) throws -> [String: [Float]] {
    let checkpoint = try LoadedCheckpoint(path: path)
    var tensors: [String: [Float]] = [:]
    for name in checkpoint.file.tensors.keys where name.hasPrefix("model/") { tensors[name] = try checkpoint.file.array(name) }
    return tensors
}

/// How far apart two checkpoints' weights are: the L2 norm of their difference over the norm of
/// `a`'s (all tensors of `a` together), and the largest single difference. Runs that only sum
/// in another order are compared by the norm: Adam moves a weight by about its learning rate
/// whatever the size of its gradient, so a weight whose gradient is float noise near 0 can end
/// a whole step apart in two such runs (1.4e-3 in one weight, seen with other dropout masks).
/// Measured here: 2e-8 to 6e-8 relative for the same run summed in another order.
func weightDistance(_ a: [String: [Float]], _ b: [String: [Float]]) -> (relative: Double, largest: Float) {
    var difference = 0.0, norm = 0.0, largest: Float = 0
    for (name, values) in a {
        guard let other = b[name], other.count == values.count else { return (.infinity, .infinity) }
        for (x, y) in zip(values, other) {
            difference += Double(x - y) * Double(x - y)
            norm += Double(x) * Double(x)
            largest = max(largest, abs(x - y))
        }
    }
    return ((difference / max(norm, .leastNormalMagnitude)).squareRoot(), largest)
}

/// Output a running command has written so far.
struct Output {
    let read: () -> String
    var value: String { read() }
}

/// A command started in the background whose output is gathered as it comes, for tests that
/// act on a run while it trains (kill a rank, freeze it, cut its link).
final class BackgroundRun {
    let process: SpawnedProcess
    let stdout: Output, stderr: Output

    init(_ executable: String, _ arguments: [String]) throws {
        let process = try SpawnedProcess([executable] + arguments)
        self.process = process
        stdout = Output { process.stdout }
        stderr = Output { process.stderr }
    }

    /// `catdog-dist ARGUMENTS` under mpirun with `ranks` ranks.
    convenience init(ranks: Int, _ arguments: [String]) throws {
        guard FileManager.default.isExecutableFile(atPath: CLI.binary) else { throw CLI.NotBuilt() }
        try self.init("/usr/bin/env", CLI.command(arguments, ranks: ranks))
    }

    /// Polls until `done` holds (or the run ends, or `seconds` pass).
    func wait(upTo seconds: Double, until done: () -> Bool) {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline, process.isRunning, !done() { Thread.sleep(forTimeInterval: 0.05) }
    }

    /// The pid rank `rank` printed ("rank 1 of 2 on host (pid N)"), once it has.
    func pid(ofRank rank: Int) -> Int32? {
        stdout.value.firstMatch(of: try! Regex("rank \(rank) of \\d+ on \\S+ \\(pid (\\d+)\\)"))
            .flatMap { Int32($0.output[1].substring ?? "") }
    }

    /// Waits up to `seconds` for the run to end (then ends its whole process group); returns
    /// the seconds waited.
    @discardableResult
    func waitForExit(upTo seconds: Double) -> Double {
        let start = Date()
        let ended = process.waitForExit(upTo: seconds)
        let waited = Date().timeIntervalSince(start)
        if !ended {
            process.terminate()
            if !process.waitForExit(upTo: 5) { process.killGroup() }
        }
        process.waitForExit()
        return waited
    }
}
