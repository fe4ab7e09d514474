import CatdogEngine
import CatdogSupport
import XCTest

/// `Network.recalibrateBatchNorm` (precise BatchNorm) against statistics computed here from the
/// layer's inputs.
final class PreciseBatchNormTests: XCTestCase {
    /// Batches of 4, 4 and 2 samples: every moving mean and variance becomes the mean of the
    /// batches' means and (biased) variances, weighted by their samples (1e-5 relative + 1e-6),
    /// whatever the statistics were before; the weights are untouched bit for bit.
    func testMovingStatisticsBecomeTheSampleWeightedMeanOfTheBatches() throws {
        var b = NetworkBuilder(input: .init(height: 6, width: 6, channels: 2))
        let conv = b.add(Conv2D(4, 3, activation: .linear))
        b.add(BatchNorm(activation: .relu))
        b.add(GlobalAveragePool())
        b.add(Dense(1))
        let network = try b.build()
        network.initialize(seed: 3)
        network.reserve(maxBatch: 4)
        let c = 4, pixels = 36, sample = network.inputShape.count
        var random = Random(seed: 5)
        let batches: [[Float]] = [4, 4, 2].map { n in (0..<(n * sample)).map { _ in random.uniform(-1, 2) } }
        var mean = [Double](repeating: 0, count: c), variance = mean
        for batch in batches {
            let n = batch.count / sample, rows = n * pixels
            for i in batch.indices { network.input[i] = batch[i] }
            network.forward(batch: n, context: PassContext(training: false))
            let x = network.activation(conv)
            for ch in 0..<c {
                let values = (0..<rows).map { Double(x[$0 * c + ch]) }
                let m = values.reduce(0, +) / Double(rows)
                let v = values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(rows)
                mean[ch] += m * Double(n) / 10
                variance[ch] += v * Double(n) / 10
            }
        }
        for i in 0..<network.state.count { network.state.pointer[i] = 7 }
        let weights = Array(network.parameters.buffer)
        var next = 0
        let seen = network.recalibrateBatchNorm(maxBatch: 4) { input in
            guard next < batches.count else { return 0 }
            let batch = batches[next]
            next += 1
            for i in batch.indices { input[i] = batch[i] }
            return batch.count / sample
        }
        XCTAssertEqual(seen, 10)
        XCTAssertEqual(Array(network.parameters.buffer), weights)
        for ch in 0..<c {
            let m = Double(network.state.pointer[ch]), v = Double(network.state.pointer[c + ch])
            XCTAssertEqual(m, mean[ch], accuracy: 1e-6 + 1e-5 * abs(mean[ch]), "mean of channel \(ch)")
            XCTAssertEqual(v, variance[ch], accuracy: 1e-6 + 1e-5 * variance[ch], "variance of channel \(ch)")
        }
    }

    /// No batch leaves the statistics as they were; a network without BatchNorm is not run.
    func testNothingChangesWithoutBatchesOrBatchNorm() throws {
        var b = NetworkBuilder(input: .init(height: 4, width: 4, channels: 1))
        b.add(Conv2D(2, 3))
        b.add(BatchNorm())
        b.add(GlobalAveragePool())
        b.add(Dense(1))
        let network = try b.build()
        network.initialize(seed: 1)
        let before = Array(network.state.buffer)
        XCTAssertEqual(network.recalibrateBatchNorm(maxBatch: 2) { _ in 0 }, 0)
        XCTAssertEqual(Array(network.state.buffer), before)

        var plain = NetworkBuilder(input: .init(height: 4, width: 4, channels: 1))
        plain.add(Conv2D(2, 3))
        plain.add(GlobalAveragePool())
        plain.add(Dense(1))
        let withoutBatchNorm = try plain.build()
        XCTAssertFalse(withoutBatchNorm.hasTrainableBatchNorm)
        var calls = 0
        XCTAssertEqual(withoutBatchNorm.recalibrateBatchNorm(maxBatch: 2) { _ in calls += 1; return 1 }, 0)
        XCTAssertEqual(calls, 0)
    }
}
