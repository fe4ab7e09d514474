import CatdogEngine
import CatdogTraining
import Foundation
import XCTest

/// Where the time goes: `--timeline` writes Chrome trace-event JSON with a track per rank, and
/// each epoch names a rank far slower a sample than the others.
final class TimelineTests: XCTestCase {
    /// 2 ranks, a timeline of the first 7 updates (the first epoch's 5 and 2 of the next):
    /// valid trace-event JSON, one named track per rank, each with the step's phases (input
    /// wait, forward, backward, a bucket's all-reduce, the exposed wait, optimizer, the moving
    /// average, the step's agreement) for every update, durations that fit inside the run, and the first epoch's evaluation and checkpoint.
    func testTheTimelineIsTraceEventJSONWithATrackPerRank() throws {
        let data = try sharedSubset(self, perClass: 40)
        let folder = try temporaryFolder(self)
        let trace = folder + "/timeline.json"
        let command = ["train", "--data", data, "--checkpoint-dir", folder + "/ck", "--model", "resnet", "--image-size", "32",
                       "--batch-size", "16", "--epochs", "2", "--ema", "0.99", "--timeline", trace, "--timeline-steps", "7"]
        let result = try CLI.run(command, ranks: 2)
        XCTAssertEqual(result.status, 0, "mpirun -np 2 catdog-dist \(command.joined(separator: " ")) exited \(result.status):\n\(result.output.suffix(2000))")
        XCTAssertTrue(result.stdout.contains("timeline of updates 1-7 written to \(trace)"), result.stdout)
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: trace))) as? [String: Any]
        let events = try XCTUnwrap(object?["traceEvents"] as? [[String: Any]], "no traceEvents array")
        var names: [Int: String] = [:]
        for event in events where event["ph"] as? String == "M" && event["name"] as? String == "process_name" {
            if let pid = event["pid"] as? Int { names[pid] = (event["args"] as? [String: Any])?["name"] as? String ?? "" }
        }
        XCTAssertEqual(names.keys.sorted(), [0, 1])
        for (pid, name) in names { XCTAssertTrue(name.hasPrefix("rank \(pid) on "), name) }
        let spans = events.filter { $0["ph"] as? String == "X" }
        for rank in [0, 1] {
            let mine = spans.filter { $0["pid"] as? Int == rank }
            func count(_ prefix: String) -> Int { mine.filter { ($0["name"] as? String ?? "").hasPrefix(prefix) }.count }
            // 72 training images, batch 16: 5 steps an epoch, the last of 8 images (a rank may
            // have none of them, and then no forward or backward).
            for phase in ["input wait", "waiting for the all-reduce", "moving average", "agreeing on the step"] {
                XCTAssertEqual(count(phase), 7, "rank \(rank): \(phase)")
            }
            // AdamW updates each bucket's parameters as its sums arrive: a span each.
            let buckets = count("all-reduce bucket ") / 7
            XCTAssertGreaterThanOrEqual(buckets, 1, "rank \(rank)")
            XCTAssertEqual(count("optimizer, bucket "), 7 * buckets, "rank \(rank): an update of each bucket, each step")
            for phase in ["forward", "backward"] { XCTAssertTrue((6...7).contains(count(phase)), "rank \(rank): \(phase) \(count(phase))") }
            XCTAssertEqual(count("all-reduce bucket 0"), 7, "rank \(rank)")
            XCTAssertEqual(count("evaluation"), 1, "rank \(rank): the first epoch ends inside the window")
            XCTAssertGreaterThanOrEqual(count("checkpoint"), 1, "rank \(rank)")
            for span in mine {
                let ts = try XCTUnwrap(span["ts"] as? Double), dur = try XCTUnwrap(span["dur"] as? Double)
                XCTAssertTrue(ts >= 0 && dur >= 0 && ts + dur < 300e6, "\(span)")
            }
        }
    }

    /// The timeline inside the run's own folder (as docs/across-machines.md shows it): a resume
    /// with the same option writes it again, for the updates after the resume; a file the run
    /// folder keeps for itself (metrics.jsonl) is refused before training, and left as it was.
    func testAResumeWritesItsTimelineInTheRunFolderAgain() throws {
        let data = try sharedSubset(self, perClass: 40)
        let folder = try temporaryFolder(self) + "/ck"
        let trace = folder + "/timeline.json"
        func train(_ epochs: Int, timeline: String, resume: Bool) throws -> CLIResult {
            try CLI.run(["train", "--data", data, "--checkpoint-dir", folder, "--model", "simple", "--image-size", "32",
                         "--batch-size", "16", "--epochs", String(epochs), "--timeline", timeline] + (resume ? ["--resume", "auto"] : []))
        }
        var result = try train(1, timeline: trace, resume: false)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("timeline of updates 1-5 written to \(trace)"), result.stdout)
        result = try train(2, timeline: trace, resume: true)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("timeline of updates 6-10 written to \(trace)"), result.stdout)
        XCTAssertNotNil(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: trace))) as? [String: Any])
        let metrics = try Data(contentsOf: URL(fileURLWithPath: folder + "/metrics.jsonl"))
        result = try train(3, timeline: folder + "/metrics.jsonl", resume: true)
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertTrue(result.stderr.contains("it is an existing file of a training run's folder"), result.stderr)
        XCTAssertFalse(result.stdout.contains("epoch 3/3"), "trained before refusing: \(result.stdout)")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: folder + "/metrics.jsonl")), metrics)
    }

    /// The straggler report: the rank whose time a sample is 1.5× the other ranks' median or
    /// more is named with its host, samples a step, input wait and kernels; equal ranks, a
    /// rank without samples and one whose extra time is a sliver of the epoch are not.
    func testAStragglerIsNamedAgainstTheOtherRanks() {
        let hosts = ["lab1", "lab2", "lab3", "lab4"]
        let isa: [KernelInstructionSet] = [.avx512f, .avx512f, .avx512f, .avx2]
        let lines = Trainer.stragglerLines(compute: [2.0, 2.1, 1.9, 3.8], samples: [1000, 1000, 1000, 1000], inputWait: [0, 0, 0, 0.5],
                                           isa: isa, hosts: hosts, epochSeconds: 10, steps: 50, globalBatch: 80)
        XCTAssertEqual(lines, ["straggler: rank 3 on lab4: 1.9× the other ranks' median time a sample (3.80 ms against 2.00 ms); 20 samples a step of the global batch of 80; input wait 5.0%; avx2 kernels"])
        XCTAssertEqual(Trainer.stragglerLines(compute: [2.0, 2.2, 1.9, 2.1], samples: [1000, 1000, 1000, 1000], inputWait: [0, 0, 0, 0],
                                              isa: isa, hosts: hosts, epochSeconds: 10, steps: 50, globalBatch: 80), [])
        let two = Trainer.stragglerLines(compute: [1.0, 2.0], samples: [500, 500], inputWait: [0, 0], isa: [.avx2, .avx2],
                                         hosts: ["a", "b"], epochSeconds: 5, steps: 10, globalBatch: 100)
        XCTAssertEqual(two.count, 1)
        XCTAssertTrue(two[0].hasPrefix("straggler: rank 1 on b: 2.0×"), two[0])
        XCTAssertEqual(Trainer.stragglerLines(compute: [1.0, 0], samples: [500, 0], inputWait: [0, 0], isa: [.avx2, .avx2],
                                              hosts: ["a", "b"], epochSeconds: 5, steps: 10, globalBatch: 100), [])
        // 4× slower on steps of microseconds (a transfer head): 3 ms more over a 2 s epoch, not named.
        XCTAssertEqual(Trainer.stragglerLines(compute: [0.001, 0.004], samples: [10_000, 10_000], inputWait: [0, 0], isa: [.avx2, .avx2],
                                              hosts: ["a", "b"], epochSeconds: 2, steps: 40, globalBatch: 500), [])
        // Balanced shares: the slower rank is still named, with what set its share.
        let balanced = Trainer.stragglerLines(compute: [1.0, 1.0], samples: [700, 300], inputWait: [0, 0], isa: [.avx2, .avx2],
                                              hosts: ["a", "b"], epochSeconds: 5, steps: 10, globalBatch: 100, balance: "auto")
        XCTAssertEqual(balanced, ["straggler: rank 1 on b: 2.3× the other ranks' median time a sample (3.33 ms against 1.43 ms); 30 samples a step of the global batch of 100 (shares set by --balance auto); input wait 0.0%; avx2 kernels"])
    }
}
