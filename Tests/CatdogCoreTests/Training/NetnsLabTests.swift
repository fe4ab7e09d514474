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
}
