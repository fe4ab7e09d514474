import CatdogCore
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
        let labels: [Float] = [1, 0, 1]
        let context = PassContext(training: true)
        var d = [Float](repeating: 0, count: 3)
        func loss() -> Double {
            let z = network.forward(batch: 3, context: context)
            return (0..<3).reduce(0.0) { $0 + Double(BinaryCrossEntropy.loss(logit: z[$1], label: labels[$1])) } / 3
        }
        let z = network.forward(batch: 3, context: context)
        _ = BinaryCrossEntropy.forwardBackward(logits: z, labels: labels, count: 3, normalizer: 3, dLogits: &d)
        network.gradients.zero()
        network.backward(dLogits: d, batch: 3, context: context)
        for _ in 0..<60 {
            let i = random.below(network.parameterCount)
            let saved = network.parameters[i]
            let eps: Float = 1e-2
            network.parameters[i] = saved + eps; let plus = loss()
            network.parameters[i] = saved - eps; let minus = loss()
            network.parameters[i] = saved
            let numeric = (plus - minus) / Double(2 * eps), analytic = Double(network.gradients[i])
            XCTAssertLessThanOrEqual(abs(analytic - numeric), 2e-3 + 3e-2 * max(abs(analytic), abs(numeric)),
                                     "parameter \(i): \(analytic) vs \(numeric)")
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

final class ModelGradientTests: XCTestCase {
    /// Every zoo model end to end (dropout on, with its fixed masks): the loss gradient for
    /// sampled parameters against central differences. Max pooling and ReLU kinks can make a
    /// rare sample disagree, so at most 10% may miss the tolerance of 1e-3 + 5e-2 relative.
    ///
    /// efficientnet-lite0 is left out: through its ~50 layers the parameter gradients of this
    /// small setup are ~1e-5, at the float32 resolution of the loss's finite differences
    /// (7.5e-6 per step), so the check could not tell right from wrong. Each of its layers
    /// (depthwise, 1x1 conv, BatchNorm, ReLU6, Add) is checked on its own above.
    func testZooModelGradientsMatchFiniteDifferences() throws {
        for name in ModelZoo.names where name != "efficientnet-lite0" {
            let network = try ModelZoo.build(name, imageSize: 32)
            network.initialize(seed: 5)
            network.reserve(maxBatch: 4)
            var random = Random(seed: 12)
            for i in 0..<(4 * network.inputShape.count) { network.input[i] = random.uniform(0, 1) }
            let labels: [Float] = [1, 0, 0, 1]
            let context = PassContext(training: true, seed: 3, step: 1)
            var d = [Float](repeating: 0, count: 4)
            func loss() -> Double {
                let z = network.forward(batch: 4, context: context)
                return (0..<4).reduce(0.0) { $0 + Double(BinaryCrossEntropy.loss(logit: z[$1], label: labels[$1])) } / 4
            }
            let z = network.forward(batch: 4, context: context)
            _ = BinaryCrossEntropy.forwardBackward(logits: z, labels: labels, count: 4, normalizer: 4, dLogits: &d)
            network.gradients.zero()
            network.backward(dLogits: d, batch: 4, context: context)
            var misses = 0, checked = 0
            for slot in network.parameterSlots {
                // The three largest-gradient entries of each tensor: tiny ones are all rounding.
                let grads = (0..<slot.count).map { abs(network.gradients[slot.offset + $0]) }
                let top = grads.indices.sorted { grads[$0] > grads[$1] }.prefix(3)
                for k in top where grads[k] > 1e-5 {
                    let i = slot.offset + k
                    let saved = network.parameters[i]
                    let eps: Float = 1e-3 * max(1, abs(saved))
                    network.parameters[i] = saved + eps; let plus = loss()
                    network.parameters[i] = saved - eps; let minus = loss()
                    network.parameters[i] = saved
                    let numeric = (plus - minus) / Double(2 * eps), analytic = Double(network.gradients[i])
                    checked += 1
                    if abs(analytic - numeric) > 1e-3 * abs(numeric) + 5e-2 * max(abs(analytic), abs(numeric)) {
                        misses += 1
                        print("\(name) \(slot.name)[\(k)]: analytic \(analytic) numeric \(numeric)")
                    }
                }
            }
            XCTAssertGreaterThan(checked, 10, name)
            XCTAssertLessThanOrEqual(misses, checked / 10, "\(name): \(misses) of \(checked) gradients disagree")
        }
    }
}
