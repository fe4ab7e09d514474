import CatdogRun
import Foundation
import XCTest

/// Runs the built `catdog-dist` (from the same build folder as the tests), alone or under
/// `mpirun -np N`, and captures its output. `swift build` must have run first
/// (`cluster/test` does).
struct CLIResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var output: String { stdout + stderr }
}

/// Output read on another thread; the DispatchGroup orders the write before the read.
final class Collected: @unchecked Sendable { var data = Data() }

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
        var description: String { "\(CLI.binary) is not built: run `swift build -c release` (cluster/test does) before the tests" }
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
        return try runCommand(command(arguments, ranks: ranks), environment: environment, timeout: timeout)
    }
}

/// Runs `command` (looked up on the PATH unless it is a path) with `environment` added to this
/// process's, and captures its output; terminated (and a test failure) after `timeout` seconds.
@discardableResult
func runCommand(_ command: [String], environment: [String: String] = [:], timeout: TimeInterval = 300) throws -> CLIResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = command
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    process.environment = env
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read both pipes concurrently so neither fills up and blocks the child.
    let stdoutData = Collected(), stderrData = Collected()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async { stdoutData.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    group.enter()
    DispatchQueue.global().async { stderrData.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
    if process.isRunning {
        process.terminate()
        XCTFail("timed out after \(timeout) s: \(command.joined(separator: " "))")
    }
    process.waitUntilExit()
    group.wait()
    return CLIResult(status: process.terminationStatus, stdout: String(decoding: stdoutData.data, as: UTF8.self),
                     stderr: String(decoding: stderrData.data, as: UTF8.self))
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

/// Text that arrives on another thread (a pipe's readability handler), read safely.
final class Lines: @unchecked Sendable {
    private let lock = NSLock()
    private var text = ""
    func append(_ data: Data) { lock.lock(); text += String(decoding: data, as: UTF8.self); lock.unlock() }
    var value: String { lock.lock(); defer { lock.unlock() }; return text }
}

/// A command started in the background whose output is gathered as it comes, for tests that
/// act on a run while it trains (kill a rank, freeze it, cut its link).
final class BackgroundRun {
    let process = Process()
    let stdout = Lines(), stderr = Lines()
    private let out = Pipe(), err = Pipe()

    init(_ executable: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = out
        process.standardError = err
        let stdout = stdout, stderr = stderr
        out.fileHandleForReading.readabilityHandler = { stdout.append($0.availableData) }
        err.fileHandleForReading.readabilityHandler = { stderr.append($0.availableData) }
        try process.run()
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

    /// Waits up to `seconds` for the run to end (terminating it if it does not); returns the
    /// seconds waited.
    @discardableResult
    func waitForExit(upTo seconds: Double) -> Double {
        let start = Date()
        wait(upTo: seconds) { false }
        let waited = Date().timeIntervalSince(start)
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        out.fileHandleForReading.readabilityHandler = nil
        err.fileHandleForReading.readabilityHandler = nil
        return waited
    }
}
