import CatdogRun
import CatdogSupport
import Foundation
import XCTest

/// TensorBoard event files: the checksum is CRC-32C, and what `train` writes reads back with
/// the `tensorboard` Python package's own event reader (installed by cluster/install-deps into
/// .cache/python) with the values of metrics.jsonl.
final class TensorBoardTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    func testCRC32CMatchesTheStandardCheckValue() {
        // The check values over "123456789" of CRC-32C (Castagnoli) and of zip's CRC-32 (IEEE).
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([]), 0)
        XCTAssertEqual(CRC32.ieee.checksum(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(CRC32.ieee.checksum(Array("0123456789".utf8)[1...]), 0xCBF4_3926, "a slice that does not start at 0")
    }

    func testTrainWritesEventsThatTensorBoardReads() throws {
        let python = Self.repository.appendingPathComponent(".cache/python/bin/python3").path
        guard FileManager.default.isExecutableFile(atPath: python) else {
            XCTFail("\(python) is missing: cluster/install-deps installs tensorboard there")
            return
        }
        let data = try sharedSubset(self, perClass: 40)
        let checkpoints = try temporaryFolder(self)
        let train = try CLI.run(["train", "--data", data, "--checkpoint-dir", checkpoints, "--model", "simple",
                                 "--image-size", "32", "--epochs", "2", "--batch-size", "8"], ranks: 2)
        XCTAssertEqual(train.status, 0, train.output)
        XCTAssertTrue(train.stdout.contains("TensorBoard: tensorboard --logdir \(checkpoints)"), train.stdout)
        let files = try FileManager.default.contentsOfDirectory(atPath: checkpoints).filter { $0.hasPrefix("events.out.tfevents.") }
        XCTAssertEqual(files.count, 1, "\(files)")
        let script = """
            import json, sys
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
            acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "tensors": 0})
            acc.Reload()
            tags = acc.Tags()
            out = {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]}
            out["run"] = [[e.step, e.tensor_proto.string_val[0].decode()] for e in acc.Tensors("run")]
            print(json.dumps(out))
            """
        let read = try runCommand([python, "-c", script, checkpoints])
        XCTAssertEqual(read.status, 0, read.stderr)
        let text = Data(read.stdout.utf8)
        let events = try XCTUnwrap(JSONSerialization.jsonObject(with: text) as? [String: [[Any]]])
        let metrics = try String(contentsOfFile: checkpoints + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(metrics.count, 2)
        // The run trains at its one size: both epochs' train_size is 32.
        XCTAssertEqual(metrics.map { $0["train_size"] as? Int }, [32, 32])
        for (tag, key) in [("loss/train", "train_loss"), ("loss/validation", "val_loss"), ("accuracy/train", "train_acc"),
                           ("accuracy/validation", "val_acc"), ("learning_rate", "lr"), ("ranks", "ranks"),
                           ("train_size", "train_size")] {
            let series = try XCTUnwrap(events[tag], "no \(tag) in \(events.keys.sorted())")
            XCTAssertEqual(series.map { $0[0] as? Int }, [1, 2], tag)
            for (point, epoch) in zip(series, metrics) {
                let expected = (epoch[key] as? NSNumber)?.doubleValue ?? .nan
                // Scalars are stored as float32.
                XCTAssertEqual((point[1] as? NSNumber)?.doubleValue ?? .nan, expected, accuracy: 1e-6 * max(1, abs(expected)), tag)
            }
        }
        // 80 images, 72 to train, global batch 8: 9 updates per epoch; the batch loss every 10.
        XCTAssertEqual(events["loss/batch"]?.map { $0[0] as? Int }, [10], "\(events["loss/batch"] ?? [])")
        let run = try XCTUnwrap(events["run"]?.first)
        XCTAssertEqual(run[0] as? Int, 0)
        XCTAssertTrue((run[1] as? String ?? "").contains("Started on 2 rank(s)"), "\(run)")
        XCTAssertTrue((run[1] as? String ?? "").contains("\"globalBatch\" : 8"), "\(run)")
    }
}
