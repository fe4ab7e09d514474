import CatdogDistributed
import CatdogEngine
import CatdogSupport
import CatdogTraining
import XCTest

/// The whole of efficientnet-lite0 against finite differences, in inference mode (BatchNorm on
/// its moving statistics, as feature extraction and fine-tuning run it). The loss is the sum of
/// the logits, whose gradients are large enough for float32 central differences (the BCE
/// loss at 32 px gives ~1e-5, at float32's resolution). In each parameter tensor the entry with
/// the largest gradient is checked if that exceeds 1e-3 (about 60 of the 149 tensors, mostly the
/// later blocks: with random weights the signal fades towards the stem, where float32 central
/// differences stop resolving it; every layer type also has its own check). Tolerance 1e-4 +
/// 3e-2 relative; at most 1 in 20 may miss, where a ReLU6 kink falls inside ±ε.
final class EfficientNetGradientTests: XCTestCase {
    func testWholeNetworkGradientsMatchFiniteDifferences() throws {
        let network = try ModelZoo.build("efficientnet-lite0", imageSize: 32)
        network.initialize(seed: 6)
        var random = Random(seed: 8)
        // Moving statistics away from 0/1, so BatchNorm's scale and shift matter.
        for slot in network.stateSlots {
            for i in slot.offset..<(slot.offset + slot.count) {
                network.state[i] = slot.name.hasSuffix("variance") ? random.uniform(0.5, 2) : random.uniform(-0.2, 0.2)
            }
        }
        network.reserve(maxBatch: 2)
        for i in 0..<(2 * network.inputShape.count) { network.input[i] = random.uniform(-1, 1) }
        let context = PassContext(training: false)
        func loss() -> Double {
            let z = network.forward(batch: 2, context: context)
            return Double(z[0]) + Double(z[1])
        }
        _ = loss()
        network.gradients.zero()
        var ones: [Float] = [1, 1]
        network.backward(dLogits: &ones, batch: 2, context: context)
        // In every parameter tensor, the entry with the largest gradient: each layer gets checked
        // where its signal is strongest.
        var misses = 0, checked = 0
        for slot in network.parameterSlots {
            var i = slot.offset
            for j in slot.offset..<(slot.offset + slot.count) where abs(network.gradients[j]) > abs(network.gradients[i]) { i = j }
            let analytic = Double(network.gradients[i])
            guard abs(analytic) > 1e-3 else { continue }
            let numeric = centralDifference(network.parameters, i, epsilon: 1e-2, loss: loss)
            checked += 1
            if !gradientAgrees(analytic, numeric, absolute: 1e-4, relative: 3e-2) {
                misses += 1
                print("\(slot.name)[\(i - slot.offset)]: analytic \(analytic) numeric \(numeric)")
            }
        }
        print("efficientnet-lite0 gradient check: \(checked) of \(network.parameterSlots.count) tensors checked, \(misses) misses")
        XCTAssertGreaterThanOrEqual(checked, network.parameterSlots.count * 2 / 5, "too few gradients above 1e-3 to test anything")
        XCTAssertLessThanOrEqual(misses, checked / 20, "\(misses) of \(checked) tensors disagree")
    }
}
