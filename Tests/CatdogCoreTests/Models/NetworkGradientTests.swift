import CatdogEngine
import CatdogSupport
import XCTest

final class NetworkGradientTests: XCTestCase {
    /// A residual graph (a node read by two layers) end to end: loss gradient w.r.t. sampled
    /// parameters against central differences. Tolerance 2e-3 + 3e-2 relative.
    func testResidualNetworkGradientsMatchFiniteDifferences() throws {
        var b = NetworkBuilder(input: .init(height: 6, width: 6, channels: 2))
        b.add(Conv2D(4, 3, activation: .linear))
        let skip = b.add(BatchNorm())
        b.add(Conv2D(4, 3))
        b.add(Add(), inputs: [b.last, skip])
        b.add(Conv2D(3, 3, stride: 2))  // smooth, unlike max pooling, whose ties break finite differences
        b.add(GlobalAveragePool())
        b.add(Dense(3))
        b.add(Dense(1))
        let network = try b.build()
        network.initialize(seed: 4)
        network.reserve(maxBatch: 3)
        var random = Random(seed: 1)
        for i in 0..<(3 * network.inputShape.count) { network.input[i] = random.uniform(-1, 1) }
        let bce = MeanBCE(network: network, labels: [1, 0, 1], context: PassContext(training: true))
        bce.backpropagate()
        for _ in 0..<60 {
            let i = random.below(network.parameterCount)
            let numeric = centralDifference(network.parameters, i, epsilon: 1e-2, loss: bce.loss)
            let analytic = Double(network.gradients[i])
            XCTAssertTrue(gradientAgrees(analytic, numeric, absolute: 2e-3, relative: 3e-2), "parameter \(i): \(analytic) vs \(numeric)")
        }
    }

    /// A small conv net must drive the loss on 8 fixed random images with fixed labels to ~0.
    func testTinyModelOverfitsTinyBatch() throws {
        var b = NetworkBuilder(input: .init(height: 12, width: 12, channels: 3))
        b.add(Conv2D(8, 3, activation: .relu))
        b.add(MaxPool2D(2))
        b.add(Conv2D(16, 3, activation: .relu))
        b.add(GlobalAveragePool())
        b.add(Dense(16, activation: .relu))
        b.add(Dense(1))
        let network = try b.build()
        network.initialize(seed: 2)
        network.reserve(maxBatch: 8)
        var random = Random(seed: 9)
        for i in 0..<(8 * network.inputShape.count) { network.input[i] = random.uniform(-1, 1) }
        let labels: [Float] = [0, 1, 1, 0, 1, 0, 0, 1]
        let adam = Adam(count: network.parameterCount)
        var d = [Float](repeating: 0, count: 8)
        var first = 0.0, last = 0.0, correct = 0
        for step in 0..<300 {
            let context = PassContext(training: true, step: step)
            let z = network.forward(batch: 8, context: context)
            let result = BinaryCrossEntropy.forwardBackward(logits: z, labels: labels, count: 8, normalizer: 8, dLogits: &d)
            if step == 0 { first = result.lossSum / 8 }
            last = result.lossSum / 8
            correct = result.correct
            network.gradients.zero()
            network.backward(dLogits: d, batch: 8, context: context)
            adam.step(parameters: network.parameters.pointer, gradients: network.gradients.pointer, learningRate: 0.01)
        }
        XCTAssertGreaterThan(first, 0.5)
        XCTAssertLessThan(last, 0.05, "loss went from \(first) to \(last)")
        XCTAssertEqual(correct, 8)
    }
}
