import CatdogEngine
import CatdogSupport
import XCTest

final class ModelGradientTests: XCTestCase {
    /// Every zoo model end to end (dropout on, with its fixed masks): the loss gradient for
    /// sampled parameters against central differences. Max pooling and ReLU kinks can make a
    /// rare sample disagree, so at most 10% may miss the tolerance of 1e-3 + 5e-2 relative.
    ///
    /// The EfficientNet-Lite models are left out: through their 50–70 layers the parameter
    /// gradients of this small setup are ~1e-5, at the float32 resolution of the loss's finite
    /// differences (7.5e-6 per step), so the check could not tell right from wrong. Each of
    /// their layers (depthwise, 1x1 conv, BatchNorm, ReLU6, Add) is checked on its own, and
    /// Lite0 as a whole in `EfficientNetGradientTests`.
    func testZooModelGradientsMatchFiniteDifferences() throws {
        for name in ModelZoo.names where EfficientNetLite(model: name) == nil {
            let network = try ModelZoo.build(name, imageSize: 32)
            network.initialize(seed: 5)
            network.reserve(maxBatch: 4)
            var random = Random(seed: 12)
            for i in 0..<(4 * network.inputShape.count) { network.input[i] = random.uniform(0, 1) }
            let bce = MeanBCE(network: network, labels: [1, 0, 0, 1], context: PassContext(training: true, seed: 3, step: 1))
            bce.backpropagate()
            var misses = 0, checked = 0
            for slot in network.parameterSlots {
                // The three largest-gradient entries of each tensor: tiny ones are all rounding.
                let grads = (0..<slot.count).map { abs(network.gradients[slot.offset + $0]) }
                let top = grads.indices.sorted { grads[$0] > grads[$1] }.prefix(3)
                for k in top where grads[k] > 1e-5 {
                    let i = slot.offset + k
                    let eps: Float = 1e-3 * max(1, abs(network.parameters[i]))
                    let numeric = centralDifference(network.parameters, i, epsilon: eps, loss: bce.loss)
                    let analytic = Double(network.gradients[i])
                    checked += 1
                    if !gradientAgrees(analytic, numeric, absolute: 1e-3 * abs(numeric), relative: 5e-2) {
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
