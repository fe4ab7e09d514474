import CatdogEngine
import Foundation
import XCTest

/// Training runs through the command line, alone and under mpirun, on real images from
/// ../shared. Small models and images keep each run to seconds.
final class DistributedTrainingTests: XCTestCase {
    /// A quick configuration: the study's simple net at 32x32 on a few hundred images.
    func trainArguments(_ data: String, _ checkpoints: String, epochs: Int = 1, batch: Int = 24, extra: [String] = []) -> [String] {
        ["train", "--data", data, "--checkpoint-dir", checkpoints, "--model", "simple", "--image-size", "32",
         "--epochs", String(epochs), "--batch-size", String(batch), "--patience", "0"] + extra
    }

    func testTwoAndThreeRanksTrainAndSayWhereTheyRun() throws {
        let data = try sharedSubset(self, perClass: 60)
        for ranks in [2, 3] {
            let checkpoints = try temporaryFolder(self)
            let result = try CLI.run(trainArguments(data, checkpoints), ranks: ranks)
            XCTAssertEqual(result.status, 0, result.output)
            for rank in 0..<ranks { XCTAssertTrue(result.stdout.contains("rank \(rank) of \(ranks) on "), result.stdout) }
            XCTAssertTrue(result.stdout.contains("global batch 24 = \(ranks) x \(24 / ranks)"), result.stdout)
            let lines = try String(contentsOfFile: checkpoints + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            XCTAssertEqual(lines.count, 1)
            let metrics = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
            for key in ["epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "images_per_s", "elapsed_s", "lr"] {
                XCTAssertNotNil(metrics[key], "metrics.jsonl lacks \(key)")
            }
            XCTAssertEqual(metrics["step"] as? Int, 5)  // 108 training images / 24 = 4.5 → 5 steps
            XCTAssertEqual(metrics["ranks"] as? Int, ranks)
        }
    }

    func testSameSeedAndRankCountGiveBitIdenticalWeights() throws {
        let data = try sharedSubset(self, perClass: 40)
        let a = try temporaryFolder(self), b = try temporaryFolder(self)
        XCTAssertEqual(try CLI.run(trainArguments(data, a), ranks: 2).status, 0)
        XCTAssertEqual(try CLI.run(trainArguments(data, b), ranks: 2).status, 0)
        XCTAssertEqual(try modelTensors(a + "/last.safetensors.zst"), try modelTensors(b + "/last.safetensors.zst"))
    }

    /// Same global batch on 1 and 2 ranks: the same samples, augmentations and dropout masks
    /// each step, so only float summation order differs. Tolerance after 5 updates: 1e-4
    /// absolute in fp32; 1e-3 in bf16, where a split also changes which two products each
    /// `vdpbf16ps` adds at once along the samples of a weight gradient (1.1e-4 measured).
    func testOneAndTwoRanksAgreeToFloatTolerance() throws {
        let data = try sharedSubset(self, perClass: 60)
        let bf16Here = Precision.bf16.unavailableReason == nil
        for (precision, tolerance) in [("fp32", Float(1e-4))] + (bf16Here ? [("bf16", Float(1e-3))] : []) {
            let one = try temporaryFolder(self), two = try temporaryFolder(self)
            let extra = ["--precision", precision]
            XCTAssertEqual(try CLI.run(trainArguments(data, one) + extra, ranks: 1).status, 0)
            XCTAssertEqual(try CLI.run(trainArguments(data, two) + extra, ranks: 2).status, 0)
            let a = try modelTensors(one + "/last.safetensors.zst"), b = try modelTensors(two + "/last.safetensors.zst")
            XCTAssertEqual(Set(a.keys), Set(b.keys))
            var largest: Float = 0
            for (name, values) in a { for (x, y) in zip(values, b[name]!) { largest = max(largest, abs(x - y)) } }
            XCTAssertLessThan(largest, tolerance, precision)
        }
    }

    /// `--allreduce hierarchical` over 4 ranks in two machines of 2 (`--machine-ranks 2`):
    /// the run says so, and after 5 updates its weights are within 1e-4 of the flat
    /// all-reduce's (only the order of the additions differs), as 1 and 2 ranks are.
    func testHierarchicalAllReduceTrainsAsTheFlatOne() throws {
        try assertTrainsAsTheFlatAllReduce("hierarchical", ranks: 4, with: ["--machine-ranks", "2"],
                                           saying: "exact fp32 sums machine by machine (--allreduce hierarchical): 2 machine(s)")
    }

    /// `--allreduce parted` (MPI point-to-point messages, each rank summing the part of every
    /// bucket its share gives it) over 3 ranks split 3:2:1: the run says so, and after 5
    /// updates its weights are within 1e-4 of the flat all-reduce's with the same split (only
    /// the order of the additions differs), as 1 and 2 ranks are. Rank 0 alone, or a part
    /// summed wrongly, moves Adam's updates by about the learning rate (1e-3).
    func testPartedAllReduceTrainsAsTheFlatOne() throws {
        try assertTrainsAsTheFlatAllReduce("parted", ranks: 3, with: ["--balance", "3,2,1"],
                                           saying: "exact fp32 sums parted by share (--allreduce parted)")
    }

    /// Trains with `--allreduce flat` and with `topology` (both with `options`): the second run
    /// logs `saying`, and its last weights are within 1e-4 of the first's.
    func assertTrainsAsTheFlatAllReduce(_ topology: String, ranks: Int, with options: [String], saying: String,
                                        file: StaticString = #filePath, line: UInt = #line) throws {
        let data = try sharedSubset(self, perClass: 60)
        let flat = try temporaryFolder(self), other = try temporaryFolder(self)
        var result = try CLI.run(trainArguments(data, flat, extra: options), ranks: ranks)
        XCTAssertEqual(result.status, 0, result.output, file: file, line: line)
        result = try CLI.run(trainArguments(data, other, extra: options + ["--allreduce", topology]), ranks: ranks)
        XCTAssertEqual(result.status, 0, result.output, file: file, line: line)
        XCTAssertTrue(result.stdout.contains(saying), result.stdout, file: file, line: line)
        let a = try modelTensors(flat + "/last.safetensors.zst"), b = try modelTensors(other + "/last.safetensors.zst")
        XCTAssertEqual(Set(a.keys), Set(b.keys), file: file, line: line)
        var largest: Float = 0
        for (name, values) in a { for (x, y) in zip(values, b[name] ?? []) { largest = max(largest, abs(x - y)) } }
        XCTAssertLessThan(largest, 1e-4, "--allreduce \(topology) against flat", file: file, line: line)
    }

    /// The fp16-compressed all-reduce: the weights move off the fp32 run's (so the compression
    /// is really used) but stay within 1e-2 of them after 5 updates.
    func testFP16AllReduceStaysCloseToFP32() throws {
        let data = try sharedSubset(self, perClass: 60)
        let full = try temporaryFolder(self), half = try temporaryFolder(self)
        XCTAssertEqual(try CLI.run(trainArguments(data, full), ranks: 2).status, 0)
        let result = try CLI.run(trainArguments(data, half, extra: ["--fp16-allreduce"]), ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        let a = try modelTensors(full + "/last.safetensors.zst"), b = try modelTensors(half + "/last.safetensors.zst")
        var largest: Float = 0
        for (name, values) in a { for (x, y) in zip(values, b[name]!) { largest = max(largest, abs(x - y)) } }
        XCTAssertGreaterThan(largest, 0)
        XCTAssertLessThan(largest, 1e-2)
    }

    func testARankThatFailsEndsTheJobNamingIt() throws {
        let data = try sharedSubset(self, perClass: 40)
        let checkpoints = try temporaryFolder(self)
        let started = Date()
        let result = try CLI.run(trainArguments(data, checkpoints, epochs: 5, extra: ["--inject-fault", "1:3"]), ranks: 2, timeout: 120)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("rank 1 of 2"), result.stderr)
        XCTAssertTrue(result.stderr.contains("injected fault at gradient reduction 3"), result.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(started), 60, "the job must end, not hang")
    }

    func testBatchThatDoesNotDivideIsAClearError() throws {
        let data = try sharedSubset(self, perClass: 10)
        let result = try CLI.run(trainArguments(data, try temporaryFolder(self), batch: 16), ranks: 3)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("does not divide among 3 ranks"), result.stderr)
    }

    func testMissingDataFolderIsAClearError() throws {
        let result = try CLI.run(trainArguments("/nonexistent/catdog", try temporaryFolder(self)))
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("/nonexistent/catdog"), result.stderr)
        XCTAssertFalse(result.stderr.contains("Fatal error"), result.stderr)
    }
}
