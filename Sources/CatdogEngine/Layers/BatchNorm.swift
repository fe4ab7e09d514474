import CKernels
import CatdogSupport

/// Batch normalization over the channel axis of NHWC batches (Ioffe & Szegedy, 2015), with
/// Keras's defaults: momentum 0.99, epsilon 1e-3, moving variance from the biased batch variance.
///
/// Training: y = γ·x̂ + β with x̂ = (x − μ_B)/√(σ²_B + ε), statistics over the (n·H·W) rows of
/// this rank's batch, moving statistics updated. Inference: the moving statistics instead.
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
    private var normalized = FloatBuffer(count: 0)
    /// Per-channel work memory (see `PerChannel`); the loops below read it through these.
    private var work = PerChannel(count: 1)
    private var inverseStd: UnsafeMutablePointer<Float> { work.inverseStd }
    private var sum: UnsafeMutablePointer<Double> { work.sum }
    private var sumSquares: UnsafeMutablePointer<Double> { work.sumSquares }
    private var scale: UnsafeMutablePointer<Float> { work.scale }
    /// False after an inference forward, which skips x̂; a backward pass then recomputes it.
    private var normalizedIsCurrent = false
    private var shift: UnsafeMutablePointer<Float> { work.shift }
    private var factor: UnsafeMutablePointer<Float> { work.factor }
    private var usedBatchStatistics = false

    public init(momentum: Float = 0.99, epsilon: Float = 1e-3) {
        self.momentum = momentum
        self.epsilon = epsilon
    }

    public var kind: String { "batchnorm" }

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
         ParameterSpec("moving_variance", [shape.channels], .ones)]
    }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, state: UnsafeMutablePointer<Float>) {
        gamma = parameters
        beta = parameters + shape.channels
        dGamma = gradients
        dBeta = gradients + shape.channels
        movingMean = state
        movingVariance = state + shape.channels
    }

    public func reserve(maxBatch: Int, scratch: Scratch) { normalized = FloatBuffer(count: maxBatch * shape.count) }

    public var forwardFLOPs: Int { 4 * shape.count }

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        let c = shape.channels
        let rows = batch * shape.height * shape.width
        let x = inputs[0]
        let xhat = normalized.pointer
        usedBatchStatistics = context.training && !frozen
        if usedBatchStatistics {
            catdog_channel_sums(x, rows, c, sum)
            for ch in 0..<c { sum[ch] /= Double(rows) }  // now the mean
            catdog_channel_centered_squares(x, sum, rows, c, sumSquares)
            for ch in 0..<c {
                let variance = sumSquares[ch] / Double(rows)
                inverseStd[ch] = Float(1 / (variance + Double(epsilon)).squareRoot())
                movingMean[ch] = movingMean[ch] * momentum + Float(sum[ch]) * (1 - momentum)
                movingVariance[ch] = movingVariance[ch] * momentum + Float(variance) * (1 - momentum)
                sumSquares[ch] = sum[ch]  // keep the mean for the normalization below
            }
        } else {
            for ch in 0..<c {
                sumSquares[ch] = Double(movingMean[ch])
                inverseStd[ch] = 1 / (movingVariance[ch] + epsilon).squareRoot()
            }
            if !context.training {
                // Inference needs no x̂ for a backward pass: y = x·s + t, one read and one write.
                for ch in 0..<c {
                    scale[ch] = gamma[ch] * inverseStd[ch]
                    shift[ch] = beta[ch] - movingMean[ch] * scale[ch]
                }
                catdog_scale_shift(x, scale, shift, output, rows, c)
                normalizedIsCurrent = false
                return
            }
        }
        normalizedIsCurrent = true
        for ch in 0..<c { scale[ch] = Float(sumSquares[ch]) }  // the mean, as a float
        catdog_batchnorm_forward(x, scale, inverseStd, gamma, beta, xhat, output, rows, c)
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        let c = shape.channels
        let rows = batch * shape.height * shape.width
        let xhat = normalized.pointer
        if !normalizedIsCurrent {
            // After an inference forward (moving statistics: mean in sumSquares, 1/σ in inverseStd).
            let x = inputs[0]
            var i = 0
            for _ in 0..<rows {
                for ch in 0..<c {
                    xhat[i] = (x[i] - Float(sumSquares[ch])) * inverseStd[ch]
                    i += 1
                }
            }
            normalizedIsCurrent = true
        }
        // sum = Σ dy, sumSquares = Σ dy·x̂, per channel.
        catdog_batchnorm_gradient_sums(dOutput, xhat, rows, c, sum, sumSquares)
        for ch in 0..<c {
            dBeta[ch] += Float(sum[ch])
            dGamma[ch] += Float(sumSquares[ch])
        }
        guard let dx = dInputs[0] else { return }
        // dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy·x̂)) with batch statistics; γ/σ · dy with
        // moving ones (they do not depend on the batch).
        let m = Double(rows)
        for ch in 0..<c {
            factor[ch] = gamma[ch] * inverseStd[ch]
            scale[ch] = usedBatchStatistics ? Float(sum[ch] / m) : 0
            shift[ch] = usedBatchStatistics ? Float(sumSquares[ch] / m) : 0
        }
        catdog_batchnorm_dx(dOutput, xhat, factor, scale, shift, dx, rows, c)
    }
}

/// BatchNorm's per-channel sums and factors in one allocation of raw memory. Swift arrays held
/// by a class pay a uniqueness and bounds check on every access in the per-element loops,
/// which made BatchNorm 5x slower once the release build kept Swift's checks on.
private final class PerChannel {
    let inverseStd, scale, shift, factor: UnsafeMutablePointer<Float>
    let sum, sumSquares: UnsafeMutablePointer<Double>
    private let floats: UnsafeMutablePointer<Float>
    private let doubles: UnsafeMutablePointer<Double>

    init(count: Int) {
        floats = .allocate(capacity: 4 * count)
        floats.initialize(repeating: 0, count: 4 * count)
        doubles = .allocate(capacity: 2 * count)
        doubles.initialize(repeating: 0, count: 2 * count)
        inverseStd = floats
        scale = floats + count
        shift = floats + 2 * count
        factor = floats + 3 * count
        sum = doubles
        sumSquares = doubles + count
    }

    deinit {
        floats.deallocate()
        doubles.deallocate()
    }
}
