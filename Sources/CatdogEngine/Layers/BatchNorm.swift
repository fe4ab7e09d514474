import CKernels
import CatdogSupport

/// Batch normalization over the channel axis of NHWC batches (Ioffe & Szegedy, 2015), with
/// Keras's defaults: momentum 0.99, epsilon 1e-3, moving variance from the biased batch variance.
///
/// Training: y = γ·x̂ + β with x̂ = (x − μ_B)/√(σ²_B + ε), statistics over the (n·H·W) rows of
/// this rank's batch (or of each group of `PassContext.normalizationGroup` samples), moving
/// statistics updated. Inference: the moving statistics instead.
public final class BatchNorm: Layer {
    public let momentum: Float
    public let epsilon: Float
    /// A frozen layer always normalizes with its moving statistics and leaves them alone
    /// (as Keras does for a non-trainable BatchNormalization when fine-tuning).
    public var frozen = false
    private var shape = FeatureShape(height: 1, width: 1, channels: 1)
    private var gamma: UnsafeMutablePointer<Float>!
    private var beta: UnsafeMutablePointer<Float>!
    private var dGamma: UnsafeMutablePointer<Float>!
    private var dBeta: UnsafeMutablePointer<Float>!
    private var movingMean: UnsafeMutablePointer<Float>!
    private var movingVariance: UnsafeMutablePointer<Float>!
    /// Per-channel work memory (see `PerChannel`); the loops below read it through these.
    private var work = PerChannel(count: 1)
    private var inverseStd: UnsafeMutablePointer<Float> { work.inverseStd }
    private var mean: UnsafeMutablePointer<Float> { work.mean }
    private var sum: UnsafeMutablePointer<Double> { work.sum }
    private var sumSquares: UnsafeMutablePointer<Double> { work.sumSquares }
    private var scale: UnsafeMutablePointer<Float> { work.scale }
    private var shift: UnsafeMutablePointer<Float> { work.shift }
    private var factor: UnsafeMutablePointer<Float> { work.factor }
    private var usedBatchStatistics = false

    /// Applied to the output in the same pass (resnet's BatchNorm + ReLU as one layer: the
    /// activation costs no pass of its own, forward or backward).
    public let activation: Activation

    public init(momentum: Float = 0.99, epsilon: Float = 1e-3, activation: Activation = .linear) {
        self.momentum = momentum
        self.epsilon = epsilon
        self.activation = activation
    }

    /// The addition that alone reads this layer's output, the addition's other input (computed
    /// before this layer) and its output: under `PassContext.addsIntoReader`, a training forward
    /// with batch statistics writes the sum there itself (`catdog_batchnorm_add`, a group at a
    /// time while the group is in cache) and leaves its own output unwritten (a linear
    /// BatchNorm's backward does not read it, nor does the addition's). Set by `Network.reserve`.
    public var addsInto: (add: Add, addend: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>)?

    public var kind: String { "batchnorm" }
    public var summary: String { activation == .linear ? kind : "\(kind) \(activation.rawValue)" }

    public func configure(inputs: [FeatureShape]) throws -> FeatureShape {
        guard inputs.count == 1 else { throw ShapeError("batchnorm takes one input") }
        shape = inputs[0]
        work = PerChannel(count: shape.channels)
        return shape
    }

    public var parameterSpecs: [ParameterSpec] {
        [ParameterSpec("gamma", [shape.channels], .ones), ParameterSpec("beta", [shape.channels], .zeros)]
    }

    public var stateSpecs: [ParameterSpec] {
        [ParameterSpec("moving_mean", [shape.channels], .zeros),
         ParameterSpec("moving_variance", [shape.channels], .ones, nonNegative: true)]
    }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, state: UnsafeMutablePointer<Float>) {
        gamma = parameters
        beta = parameters + shape.channels
        dGamma = gradients
        dBeta = gradients + shape.channels
        movingMean = state
        movingVariance = state + shape.channels
    }

    /// The groups' statistics only for training: inference reads none (y = x·s + t). x̂ is not
    /// kept: backward recomputes it from the input, forward's mean and 1/σ, in the same
    /// operations (`catdog_batchnorm_gradient_sums`), which costs less than writing and reading
    /// an activation-sized copy.
    public func reserve(maxBatch: Int, scratch: Scratch, training: Bool) {
        maxGroups = training ? max(maxBatch, 1) : 0
        groupStatistics = FloatBuffer(count: 2 * maxGroups * shape.channels)
    }

    public func workspaceBytesPerSample(training: Bool) -> Int { training ? 2 * shape.channels * 4 : 0 }

    public var forwardFLOPs: Int { 4 * shape.count }

    /// The last training forward's groups: their count, samples each (the last may have
    /// fewer), and per group and channel the mean and 1/σ (means first, then 1/σ).
    private var groups = 1
    private var groupSamples = 0
    private var groupStatistics = FloatBuffer(count: 0)
    private var maxGroups = 1
    private func groupMean(_ g: Int) -> UnsafeMutablePointer<Float> { groupStatistics.pointer + g * shape.channels }
    private func groupInverseStd(_ g: Int) -> UnsafeMutablePointer<Float> { groupStatistics.pointer + (maxGroups + g) * shape.channels }

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        let c = shape.channels
        let rows = batch * shape.height * shape.width
        let x = inputs[0]
        usedBatchStatistics = context.training && !frozen
        guard usedBatchStatistics else {
            movingStatistics()
            if !context.training {
                // Inference: y = x·s + t, one read and one write.
                for ch in 0..<c {
                    scale[ch] = gamma[ch] * inverseStd[ch]
                    shift[ch] = beta[ch] - movingMean[ch] * scale[ch]
                }
                catdog_scale_shift(x, scale, shift, output, rows, c, activation.kernelCode)
                return
            }
            precondition(maxGroups > 0, "batchnorm: reserved for inference only; reserve(maxBatch:) to train")
            catdog_batchnorm_forward(x, mean, inverseStd, gamma, beta, output, rows, c, activation.kernelCode)
            return
        }
        let ghost = context.normalizationGroup > 0
        groupSamples = ghost ? min(context.normalizationGroup, max(batch, 1)) : max(batch, 1)
        groups = (batch + groupSamples - 1) / groupSamples
        precondition(groups <= maxGroups, "batchnorm: reserved for inference only; reserve(maxBatch:) to train")
        let groupRows = groupSamples * shape.height * shape.width
        let fills = context.addsIntoReader && activation == .linear ? addsInto : nil
        // Σ over groups of their mean and variance, per channel (for the moving statistics).
        let meanSum = scale, varianceSum = shift
        for ch in 0..<c { meanSum[ch] = 0; varianceSum[ch] = 0 }
        for g in 0..<groups {
            let first = g * groupRows, count = min(groupRows, rows - first)
            let mean = groupMean(g), inverse = groupInverseStd(g)
            catdog_channel_moments(x + first * c, count, c, sum, sumSquares)  // the mean and the variance
            for ch in 0..<c {
                let variance = sumSquares[ch]
                inverse[ch] = Float(1 / (variance + Double(epsilon)).squareRoot())
                mean[ch] = Float(sum[ch])
                if ghost {
                    meanSum[ch] += Float(sum[ch] * context.groupWeight)
                    varianceSum[ch] += Float(variance * context.groupWeight)
                } else if let w = context.statisticsWeight {
                    movingMean[ch] = movingMean[ch] * (1 - w) + Float(sum[ch]) * w
                    movingVariance[ch] = movingVariance[ch] * (1 - w) + Float(variance) * w
                } else {
                    movingMean[ch] = movingMean[ch] * momentum + Float(sum[ch]) * (1 - momentum)
                    movingVariance[ch] = movingVariance[ch] * momentum + Float(variance) * (1 - momentum)
                }
            }
            if let fills {
                catdog_batchnorm_add(x + first * c, mean, inverse, gamma, beta, fills.addend + first * c, fills.output + first * c,
                                     count, c, fills.add.activation.kernelCode)
            } else {
                catdog_batchnorm_forward(x + first * c, mean, inverse, gamma, beta, output + first * c, count, c,
                                         activation.kernelCode)
            }
        }
        fills?.add.filledByProducer = true
        if ghost {
            // m ← μ·m + (1 − μ)·(ranks / groups)·Σ this rank's groups' statistics, decayed once an update.
            let keep: Float = context.firstPassOfUpdate ? momentum : 1
            for ch in 0..<c {
                movingMean[ch] = movingMean[ch] * keep + meanSum[ch] * (1 - momentum)
                movingVariance[ch] = movingVariance[ch] * keep + varianceSum[ch] * (1 - momentum)
            }
        }
    }

    /// The moving statistics as a float mean and 1/σ (`mean`, `inverseStd`), for a forward pass
    /// that normalizes with them and for its backward, which recomputes them (they do not change
    /// in between) rather than keep them.
    private func movingStatistics() {
        for ch in 0..<shape.channels {
            mean[ch] = movingMean[ch]
            inverseStd[ch] = 1 / (movingVariance[ch] + epsilon).squareRoot()
        }
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        let c = shape.channels
        let rows = batch * shape.height * shape.width
        let x = inputs[0]
        if !usedBatchStatistics { movingStatistics() }
        // With batch statistics, each group by its own; with moving ones, all rows as one.
        let groupRows = usedBatchStatistics ? groupSamples * shape.height * shape.width : rows
        for g in 0..<(usedBatchStatistics ? groups : 1) {
            let first = g * groupRows, count = min(groupRows, rows - first)
            let (mean, inverse) = usedBatchStatistics ? (groupMean(g), groupInverseStd(g)) : (self.mean, inverseStd)
            // Through the activation first (dy = 0 where it did not pass its input, in place);
            // then sum = Σ dy, sumSquares = Σ dy·x̂, per channel, in the same pass.
            catdog_batchnorm_gradient_sums(gamma, beta, dOutput + first * c, x + first * c, mean, inverse, count, c,
                                           context.outputGradientMasked ? 0 : activation.kernelCode, sum, sumSquares)
            for ch in 0..<c {
                dBeta[ch] += Float(sum[ch])
                dGamma[ch] += Float(sumSquares[ch])
            }
            guard let dx = dInputs[0] else { continue }
            // dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy·x̂)) with batch statistics; γ/σ · dy with
            // moving ones (they do not depend on the batch).
            let m = Double(count)
            for ch in 0..<c {
                factor[ch] = gamma[ch] * inverse[ch]
                scale[ch] = usedBatchStatistics ? Float(sum[ch] / m) : 0
                shift[ch] = usedBatchStatistics ? Float(sumSquares[ch] / m) : 0
            }
            catdog_batchnorm_dx(dOutput + first * c, x + first * c, mean, inverse, factor, scale, shift, dx + first * c, count, c,
                                context.isFresh(0) ? 1 : 0)
        }
    }

    public var writesFreshInputGradients: Bool { true }
    public var maskableActivation: Activation? { activation == .linear ? nil : activation }
}

/// BatchNorm's per-channel sums and factors in one allocation of raw memory. Swift arrays held
/// by a class pay a uniqueness and bounds check on every access in the per-element loops,
/// which made BatchNorm 5x slower once the release build kept Swift's checks on.
private final class PerChannel {
    let inverseStd, scale, shift, factor, mean: UnsafeMutablePointer<Float>
    let sum, sumSquares: UnsafeMutablePointer<Double>
    private let floats: UnsafeMutablePointer<Float>
    private let doubles: UnsafeMutablePointer<Double>

    init(count: Int) {
        floats = .allocate(capacity: 5 * count)
        floats.initialize(repeating: 0, count: 5 * count)
        doubles = .allocate(capacity: 2 * count)
        doubles.initialize(repeating: 0, count: 2 * count)
        inverseStd = floats
        scale = floats + count
        shift = floats + 2 * count
        factor = floats + 3 * count
        mean = floats + 4 * count
        sum = doubles
        sumSquares = doubles + count
    }

    deinit {
        floats.deallocate()
        doubles.deallocate()
    }
}
