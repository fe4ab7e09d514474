import CatdogEngine
import CatdogSupport
@testable import CatdogTraining
import Foundation
import XCTest

/// The input loader's buffers hold a rank's whole share of the batch, outside the activations'
/// budget: they are sized by what a step can hold (never more than the training images), and
/// a batch whose buffers, or whose micro-batch's activations, would not fit the machine is
/// refused before anything is allocated.
final class InputBufferTests: XCTestCase {
    /// Two buffers of `samples` floats images: refused above a quarter of the available
    /// memory, in one line that says what to change; unknown memory refuses nothing.
    func testInputBuffersBeyondAQuarterOfTheMemoryAreRefused() throws {
        let shape = FeatureShape(height: 256, width: 256, channels: 3)
        let bytesPerSample = 256 * 256 * 3 * 4
        let available = AvailableMemory(bytes: 22 << 30)
        // Two buffers of 65,536 images at 256 px: 96 GiB.
        XCTAssertThrowsError(try Trainer.checkBatchMemory(samples: 65_536, shape: shape, globalBatch: 65_536, available: available)) { error in
            let said = "\(error)"
            XCTAssertTrue(said.contains("--batch-size 65536 holds up to 65536 images of 256x256"), said)
            XCTAssertTrue(said.contains("96.0 GiB, more than a quarter of the 22.0 GiB"), said)
            XCTAssertTrue(said.contains("use a smaller --batch-size or --image-size, or more machines"), said)
            XCTAssertFalse(said.contains("\n"), said)
        }
        // At the edge: a quarter fits, a sample more does not.
        let fits = available.bytes / 4 / (2 * bytesPerSample)
        XCTAssertNoThrow(try Trainer.checkBatchMemory(samples: fits, shape: shape, globalBatch: 65_536, available: available))
        XCTAssertThrowsError(try Trainer.checkBatchMemory(samples: fits + 1, shape: shape, globalBatch: 65_536, available: available))
        XCTAssertNoThrow(try Trainer.checkBatchMemory(samples: 65_536, shape: shape, globalBatch: 65_536, available: nil))
        // The machine's ranks share its memory: 4 ranks, a quarter of the quarter each.
        XCTAssertThrowsError(try Trainer.checkBatchMemory(samples: fits / 4 + 1, shape: shape, globalBatch: 65_536, ranksOnMachine: 4,
                                                          available: available)) { error in
            XCTAssertTrue("\(error)".contains("a quarter of this rank's part (5.5 GiB, 1/4) of the 22.0 GiB this machine has available"), "\(error)")
        }
        XCTAssertNoThrow(try Trainer.checkBatchMemory(samples: fits / 4, shape: shape, globalBatch: 65_536, ranksOnMachine: 4,
                                                      available: available))
        // A micro-batch's activations, as large as a group of ghost batch normalization makes it.
        let perSample = 3 << 20
        let most = available.bytes / 4 / perSample
        XCTAssertNoThrow(try Trainer.checkBatchMemory(samples: 1, shape: shape, globalBatch: 65_536, micro: most,
                                                      activationBytesPerSample: perSample, available: available))
        XCTAssertThrowsError(try Trainer.checkBatchMemory(samples: 1, shape: shape, globalBatch: 65_536, micro: most + 1,
                                                          activationBytesPerSample: perSample, available: available)) { error in
            let said = "\(error)"
            XCTAssertTrue(said.contains("micro-batches of \(most + 1) samples (at least one group of ghost batch normalization"), said)
            XCTAssertTrue(said.contains("use a smaller --ghost-batch, --micro-batch or --batch-size"), said)
        }
    }

    /// `bench` times one pass of a rank's whole batch: its activations beyond a quarter of the
    /// available memory are refused in one line before anything is allocated (65,536 images
    /// of `simple` at 32 px were killed by the kernel at 24 GB).
    func testABenchPassBeyondAQuarterOfTheMemoryIsRefused() throws {
        let network = try ModelZoo.build("simple", imageSize: 32)
        let perSample = network.activationBytesPerSample
        let available = AvailableMemory(bytes: 16 << 30)
        let fits = available.bytes / 4 / perSample
        XCTAssertNoThrow(try Benchmark.checkMemory(network, model: "simple", imageSize: 32, globalBatch: 2 * fits, batch: fits,
                                                   available: available))
        XCTAssertThrowsError(try Benchmark.checkMemory(network, model: "simple", imageSize: 32, globalBatch: 65_536, batch: 65_536,
                                                       available: available)) { error in
            let said = "\(error)"
            XCTAssertTrue(said.contains("--batch-size 65536 times one pass of 65536 images a rank, whose activations (simple at 32x32)"), said)
            XCTAssertTrue(said.contains("more than a quarter of the 16.0 GiB this machine has available"), said)
            XCTAssertFalse(said.contains("\n"), said)
        }
        XCTAssertThrowsError(try Benchmark.checkMemory(network, model: "simple", imageSize: 32, globalBatch: fits + 1, batch: fits + 1,
                                                       available: available))
        // Two ranks on the machine: half as much each.
        XCTAssertNoThrow(try Benchmark.checkMemory(network, model: "simple", imageSize: 32, globalBatch: fits, batch: fits / 2,
                                                   ranksOnMachine: 2, available: available))
        XCTAssertThrowsError(try Benchmark.checkMemory(network, model: "simple", imageSize: 32, globalBatch: fits + 2, batch: fits / 2 + 1,
                                                       ranksOnMachine: 2, available: available)) { error in
            XCTAssertTrue("\(error)".contains("a quarter of this rank's part (8.0 GiB, 1/2) of the 16.0 GiB this machine has available"), "\(error)")
        }
        // vgg at 256 px: terabytes for 65,536 images, beyond any machine's quarter.
        let command = ["bench", "--model", "vgg", "--image-size", "256", "--batch-size", "65536", "--steps", "1"]
        let result = try CLI.run(command)
        XCTAssertEqual(result.status, 1, "catdog-dist \(command.joined(separator: " ")): \(result.output.suffix(2000))")
        XCTAssertTrue(result.stderr.contains("whose activations (vgg at 256x256) would take"), result.stderr)
    }

    /// A batch larger than the training set trains each epoch in one step of every image, and
    /// its buffers and micro-batches are sized by those images, not by the batch: 65,536 on 36
    /// images took 2.6 GB before, and at 256 px asked for 51.5 GB and aborted.
    func testABatchLargerThanTheDataIsSizedByTheData() throws {
        let data = try sharedSubset(self, perClass: 20)
        let folder = try temporaryFolder(self)
        let arguments = ["train", "--data", data, "--checkpoint-dir", folder, "--model", "simple", "--image-size", "32",
                         "--epochs", "1", "--batch-size", "65536"]
        let result = try CLI.run(arguments)
        XCTAssertEqual(result.status, 0, "catdog-dist \(arguments.joined(separator: " ")) exited \(result.status):\n\(result.output.suffix(3000))")
        let images = try XCTUnwrap(result.stdout.firstMatch(of: /data: (\d+) training/).flatMap { Int($0.1) }, result.stdout)
        XCTAssertTrue(result.stdout.contains("micro-batches of \(images) within"), result.stdout)
        XCTAssertTrue(result.stdout.contains("1 steps per epoch"), result.stdout)
        // With shares by speed, BatchNorm's groups (of 4,096 here) outnumber the images: a
        // micro-batch still holds a whole group.
        let balanced = ["train", "--data", data, "--checkpoint-dir", try temporaryFolder(self), "--model", "simple", "--image-size", "32",
                        "--epochs", "1", "--batch-size", "65536", "--balance", "auto"]
        let two = try CLI.run(balanced, ranks: 2)
        XCTAssertEqual(two.status, 0, "mpirun -np 2 catdog-dist \(balanced.joined(separator: " ")) exited \(two.status):\n\(two.output.suffix(3000))")
        XCTAssertTrue(two.stdout.contains("BatchNorm over groups of 4096 samples"), two.stdout)
        // A group that no machine's memory holds in one pass (resnet-pool at 1024 px): refused
        // in one line before anything is allocated.
        let group = ["train", "--data", data, "--checkpoint-dir", try temporaryFolder(self), "--image-size", "1024",
                     "--epochs", "1", "--batch-size", "65536", "--ghost-batch", "65536"]
        let refused = try CLI.run(group)
        XCTAssertEqual(refused.status, 1, "catdog-dist \(group.joined(separator: " ")): \(refused.output.suffix(3000))")
        XCTAssertTrue(refused.stderr.contains("micro-batches of 65536 samples (at least one group of ghost batch normalization"), refused.stderr)
        XCTAssertFalse(refused.output.contains("runtime failure"), refused.output)
    }
}
