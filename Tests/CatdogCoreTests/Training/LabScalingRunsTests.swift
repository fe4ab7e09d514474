import Foundation
import XCTest

/// `benchmarks/lab-scaling-runs`, the part of `benchmarks/lab-scaling --runs` that reads run
/// folders: the update at which a run first reached the target, how many of those updates
/// trained at each size, the precision of its first start, and how many samples its BatchNorm
/// normalized together, from files that training wrote; and a clear message for files it
/// cannot use.
final class LabScalingRunsTests: XCTestCase {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("benchmarks/lab-scaling-runs").path

    func read(_ target: String, _ folders: [String]) throws -> CLIResult {
        try runCommand(["python3", script, target, CLI.binary] + folders)
    }

    /// The fields of the line about `folder`.
    func line(_ result: CLIResult, _ folder: String) throws -> [String] {
        let fields = result.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        return try XCTUnwrap(fields.first { $0.count > 1 && $0[1] == folder }, "no line for \(folder) in:\n\(result.output)")
    }

    func testRunsAreReadFromWhatTrainingWrote() throws {
        let data = try sharedSubset(self, perClass: 24)
        var steps = 0  // updates an epoch, from the training images the log counts
        func train(_ extra: [String]) throws -> String {
            let folder = try temporaryFolder(self)
            let result = try CLI.run(["train", "--data", data, "--checkpoint-dir", folder, "--model", "resnet", "--image-size", "32",
                                      "--epochs", "2", "--batch-size", "16", "--patience", "0", "--precision", "fp32"] + extra)
            XCTAssertEqual(result.status, 0, result.output)
            let images = result.stdout.components(separatedBy: "data: ").dropFirst().first?.split(separator: " ").first.flatMap { Int($0) }
            steps = (try XCTUnwrap(images, result.stdout) + 15) / 16
            return folder
        }
        let ghost = try train(["--ghost-batch", "4"])
        let micro = try train(["--micro-batch", "8", "--resize-from", "16"])
        let plain = try train([])
        let n = String(steps)

        // Target 0: every run reaches it at its first epoch.
        let reached = try read("0", [ghost, micro, plain])
        XCTAssertEqual(reached.status, 0, reached.output)
        XCTAssertEqual(try line(reached, ghost), ["reach", ghost, "none", "16", n, "1", "resnet", "fp32", "4", "32:" + n])
        // Micro-batches of 8 (at most 8 normalized together); the first epoch trained at 16 px.
        XCTAssertEqual(try line(reached, micro), ["reach", micro, "none", "16", n, "1", "resnet", "fp32", "<=8", "16:" + n])
        XCTAssertEqual(try line(reached, plain), ["reach", plain, "none", "16", n, "1", "resnet", "fp32", "<=16", "32:" + n])
        XCTAssertEqual(reached.stderr, "")

        // A target no run reaches: its best accuracy and epochs.
        let never = try read("1.01", [plain])
        XCTAssertEqual(never.status, 0, never.output)
        let fields = try line(never, plain)
        XCTAssertEqual(fields.count, 6, "\(fields)")
        XCTAssertEqual(fields[0], "never")
        XCTAssertEqual(fields[5], "2")
        XCTAssertTrue((0...1).contains(Double(fields[4]) ?? -1), "\(fields)")

        // machines.jsonl: lines it cannot read are named and passed over; a line of a build
        // before BatchNorm's samples were recorded falls back to the configuration (at most a
        // rank's slice), and its resume recording none is no change; a resume at another
        // precision is named, the first start's kept.
        let starts = plain + "/machines.jsonl"
        let first = try String(contentsOfFile: starts, encoding: .utf8).split(separator: "\n")[0]
        var object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any])
        object["batchNorm"] = nil
        let older = String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
        object["precision"] = "bf16"
        let resumed = String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
        try ([older, "{\"precision\": ", "[1]", resumed].joined(separator: "\n") + "\n").write(toFile: starts, atomically: true, encoding: .utf8)
        let odd = try read("0", [plain])
        XCTAssertEqual(odd.status, 0, odd.output)
        XCTAssertEqual(try line(odd, plain), ["reach", plain, "none", "16", n, "1", "resnet", "fp32", "<=16", "32:" + n])
        XCTAssertTrue(odd.stderr.contains("\(plain)/machines.jsonl line 2 is not a start this program wrote; passed over"), odd.stderr)
        XCTAssertTrue(odd.stderr.contains("\(plain)/machines.jsonl line 3 is not a start"), odd.stderr)
        XCTAssertTrue(odd.stderr.contains("was resumed at other precisions (bf16, fp32); emulated at its first start's, fp32"), odd.stderr)
        XCTAssertFalse(odd.output.contains("Traceback"), odd.output)

        // A resume with BatchNorm over groups of 8 where the first start took 4: named, the
        // first start's kept in the line.
        let ghostStarts = ghost + "/machines.jsonl"
        let ghostFirst = try String(contentsOfFile: ghostStarts, encoding: .utf8)
        var regrouped = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(ghostFirst.split(separator: "\n")[0].utf8)) as? [String: Any])
        regrouped["batchNorm"] = ["group": 8, "atMost": 8]
        try (ghostFirst + String(decoding: try JSONSerialization.data(withJSONObject: regrouped), as: UTF8.self) + "\n")
            .write(toFile: ghostStarts, atomically: true, encoding: .utf8)
        let resumedGhost = try read("0", [ghost])
        XCTAssertEqual(resumedGhost.status, 0, resumedGhost.output)
        XCTAssertEqual(try line(resumedGhost, ghost), ["reach", ghost, "none", "16", n, "1", "resnet", "fp32", "4", "32:" + n])
        XCTAssertTrue(resumedGhost.stderr.contains("\(ghost) was resumed with BatchNorm over other samples (4, 8); its line gives the first start's, 4"),
                      resumedGhost.stderr)

        // A precision that is no precision, and a folder without a checkpoint: one line, exit 1.
        object["precision"] = ["fp64"]
        try String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self).write(toFile: starts, atomically: true, encoding: .utf8)
        let refused = try read("0", [plain])
        XCTAssertEqual(refused.status, 1, refused.output)
        XCTAssertTrue(refused.stderr.contains("\(plain)/machines.jsonl names the precision \"['fp64']\", not fp32 or bf16"), refused.stderr)
        let empty = try temporaryFolder(self)
        let missing = try read("0", [empty])
        XCTAssertEqual(missing.status, 1, missing.output)
        XCTAssertTrue(missing.stderr.contains("cannot read \(empty)/last.safetensors.zst"), missing.stderr)
        XCTAssertFalse(refused.output.contains("Traceback") || missing.output.contains("Traceback"), refused.output + missing.output)
    }
}
