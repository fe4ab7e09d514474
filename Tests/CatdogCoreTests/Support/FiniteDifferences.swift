import CatdogEngine
import CatdogSupport

/// The central difference (loss(x + ε) − loss(x − ε)) / 2ε in entry `i` of `values`, which is
/// restored afterwards: the one finite-difference step every gradient check uses.
func centralDifference(_ values: FloatBuffer, _ i: Int, epsilon: Float, loss: () -> Double) -> Double {
    let saved = values[i]
    values[i] = saved + epsilon
    let plus = loss()
    values[i] = saved - epsilon
    let minus = loss()
    values[i] = saved
    return (plus - minus) / Double(2 * epsilon)
}

/// Whether an analytic gradient matches its finite difference:
/// |analytic − numeric| ≤ absolute + relative · max(|analytic|, |numeric|). NaN never agrees.
func gradientAgrees(_ analytic: Double, _ numeric: Double, absolute: Double, relative: Double) -> Bool {
    abs(analytic - numeric) <= absolute + relative * max(abs(analytic), abs(numeric))
}

/// The mean binary cross-entropy of a network on the batch already in its input, against
/// `labels`: `loss()` for finite differences, `backpropagate()` for the analytic gradients
/// (into zeroed `network.gradients`). The whole-network gradient checks share it.
struct MeanBCE {
    let network: Network
    let labels: [Float]
    let context: PassContext

    func loss() -> Double {
        let z = network.forward(batch: labels.count, context: context)
        return labels.indices.reduce(0.0) { $0 + Double(BinaryCrossEntropy.loss(logit: z[$1], label: labels[$1])) } / Double(labels.count)
    }

    func backpropagate() {
        var d = [Float](repeating: 0, count: labels.count)
        let z = network.forward(batch: labels.count, context: context)
        _ = BinaryCrossEntropy.forwardBackward(logits: z, labels: labels, count: labels.count, normalizer: labels.count, dLogits: &d)
        network.gradients.zero()
        network.backward(dLogits: d, batch: labels.count, context: context)
    }
}
