import CatdogEngine
@testable import CatdogTraining
import Foundation
import XCTest

/// The input loader's buffers hold a rank's whole share of the batch, outside the activations'
/// budget: they are sized by what a step can hold (never more than the training images), and
/// a batch whose buffers would not fit the machine is refused before anything is allocated.
final class InputBufferTests: XCTestCase {
    /// Two buffers of `samples` floats images: refused above a quarter of the available
    /// memory, in one line that says what to change; unknown memory refuses nothing.
    func testInputBuffersBeyondAQuarterOfTheMemoryAreRefused() throws {
        let shape = FeatureShape(height: 256, width: 256, channels: 3)
        let bytesPerSample = 256 * 256 * 3 * 4
        let available = 22 << 30
        // Two buffers of 65,536 images at 256 px: 96 GiB.
        XCTAssertThrowsError(try Trainer.checkInputBuffers(samples: 65_536, shape: shape, globalBatch: 65_536, available: available)) { error in
            let said = "\(error)"
            XCTAssertTrue(said.contains("--batch-size 65536 holds up to 65536 images of 256x256"), said)
            XCTAssertTrue(said.contains("96.0 GiB, more than a quarter of the 22.0 GiB"), said)
            XCTAssertTrue(said.contains("use a smaller --batch-size or --image-size, or more ranks"), said)
            XCTAssertFalse(said.contains("\n"), said)
        }
        // At the edge: a quarter fits, a sample more does not.
        let fits = available / 4 / (2 * bytesPerSample)
        XCTAssertNoThrow(try Trainer.checkInputBuffers(samples: fits, shape: shape, globalBatch: 65_536, available: available))
        XCTAssertThrowsError(try Trainer.checkInputBuffers(samples: fits + 1, shape: shape, globalBatch: 65_536, available: available))
        XCTAssertNoThrow(try Trainer.checkInputBuffers(samples: 65_536, shape: shape, globalBatch: 65_536, available: nil))
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
    }
}
