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
        let process = Process()
        let command = command(arguments, ranks: ranks)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw NotBuilt() }
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
