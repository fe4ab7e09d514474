import CKernels
import CatdogSupport

/// A stand-alone activation (after BatchNorm, where it cannot be fused into a conv).
public final class ActivationLayer: Layer {
    public let activation: Activation
    private var count = 0

    public init(_ activation: Activation) { self.activation = activation }

    public var kind: String { activation.rawValue }

    public func configure(inputs: [FeatureShape]) throws -> FeatureShape {
        guard inputs.count == 1 else { throw ShapeError("\(kind) takes one input") }
        count = inputs[0].count
        return inputs[0]
    }

    public var forwardFLOPs: Int { count }

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        output.update(from: inputs[0], count: batch * count)
        activation.apply(output, count: batch * count)
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        guard let dx = dInputs[0] else { return }
        activation.addMaskedGradient(output: output, dOutput: dOutput, into: dx, count: batch * count)
    }
}

/// Inverted dropout (Keras): in training each value is zeroed with probability `rate` and the
/// survivors scaled by 1 / (1 - rate); in inference it is the identity. The mask of a sample
/// is drawn from (seed, step, layer, global sample index), so it is the same on any rank count
/// and after a resume.
public final class Dropout: Layer {
    public let rate: Float
    /// Set by the network: this layer's position, one of the mask's keys.
    public var streamID: UInt64 = 0
    private var count = 0
    private var mask = FloatBuffer(count: 0)

    public init(_ rate: Float) { self.rate = rate }

    public var kind: String { "dropout" }
    public var summary: String { "dropout \(rate)" }

    public func configure(inputs: [FeatureShape]) throws -> FeatureShape {
        guard inputs.count == 1 else { throw ShapeError("dropout takes one input") }
        guard rate >= 0, rate < 1 else { throw ShapeError("dropout rate must be in [0, 1), got \(rate)") }
        count = inputs[0].count
        return inputs[0]
    }

    public func reserve(maxBatch: Int, scratch: Scratch, training: Bool) { mask = FloatBuffer(count: training ? maxBatch * count : 0) }
    public func workspaceBytesPerSample(training: Bool) -> Int { training ? count * 4 : 0 }

    public var forwardFLOPs: Int { count }

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        let x = inputs[0]
        guard context.training, rate > 0 else {
            output.update(from: x, count: batch * count)
            return
        }
        let keep = 1 / (1 - rate)
        let m = mask.pointer
        for n in 0..<batch {
            var random = Random(
                seed: context.seed, UInt64(context.step), streamID, UInt64(context.firstSample + n))
            let base = n * count
            for i in base..<(base + count) {
                m[i] = random.uniform() >= rate ? keep : 0
                output[i] = x[i] * m[i]
            }
        }
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        guard let dx = dInputs[0] else { return }
        if context.training, rate > 0 {
            let m = mask.pointer
            for i in 0..<(batch * count) { dx[i] += dOutput[i] * m[i] }
        } else {
            for i in 0..<(batch * count) { dx[i] += dOutput[i] }
        }
    }
}

/// (H, W, C) → (1, 1, H*W*C), in NHWC order, which is also Keras's Flatten order.
public final class Flatten: Layer {
    private var count = 0
    public init() {}
    public var kind: String { "flatten" }

    public func configure(inputs: [FeatureShape]) throws -> FeatureShape {
        guard inputs.count == 1 else { throw ShapeError("flatten takes one input") }
        count = inputs[0].count
        return .vector(count)
    }

    public var forwardFLOPs: Int { 0 }

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        output.update(from: inputs[0], count: batch * count)
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        guard let dx = dInputs[0] else { return }
        for i in 0..<(batch * count) { dx[i] += dOutput[i] }
    }
}

/// Mean over height and width: (H, W, C) → (1, 1, C).
public final class GlobalAveragePool: Layer {
    private var shape = FeatureShape(height: 1, width: 1, channels: 1)
    public init() {}
    public var kind: String { "global_average_pool" }

    public func configure(inputs: [FeatureShape]) throws -> FeatureShape {
        guard inputs.count == 1 else { throw ShapeError("global_average_pool takes one input") }
        shape = inputs[0]
        return .vector(shape.channels)
    }

    public var forwardFLOPs: Int { shape.count }

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        let c = shape.channels
        let pixels = shape.height * shape.width
        let scale = 1 / Float(pixels)
        for n in 0..<batch {
            let y = output + n * c
            y.update(repeating: 0, count: c)
            var x = UnsafePointer(inputs[0] + n * pixels * c)
            for _ in 0..<pixels {
                for ch in 0..<c { y[ch] += x[ch] }
                x += c
            }
            for ch in 0..<c { y[ch] *= scale }
        }
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        guard let dInput = dInputs[0] else { return }
        let c = shape.channels
        let pixels = shape.height * shape.width
        let scale = 1 / Float(pixels)
        for n in 0..<batch {
            let dy = dOutput + n * c
            var dx = dInput + n * pixels * c
            for _ in 0..<pixels {
                for ch in 0..<c { dx[ch] += dy[ch] * scale }
                dx += c
            }
        }
    }
}

/// Sum of two same-shaped inputs: the identity skip of a residual block.
public final class Add: Layer {
    private var count = 0
    /// Applied to the sum in the same pass (resnet's ReLU after the skip connection).
    public let activation: Activation
    public init(activation: Activation = .linear) { self.activation = activation }
    public var kind: String { "add" }
    public var summary: String { activation == .linear ? kind : "\(kind) \(activation.rawValue)" }

    public func configure(inputs: [FeatureShape]) throws -> FeatureShape {
        guard inputs.count == 2, inputs[0] == inputs[1] else {
            throw ShapeError("add needs two inputs of one shape, got \(inputs)")
        }
        count = inputs[0].count
        return inputs[0]
    }

    public var forwardFLOPs: Int { count }

    /// Set by the BatchNorm before this addition when it wrote the sum into this layer's output
    /// itself (`BatchNorm.addsInto`); the next forward then has nothing to do.
    public var filledByProducer = false

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        if filledByProducer {
            filledByProducer = false
            return
        }
        catdog_add_activation(inputs[0], inputs[1], output, batch * count, activation.kernelCode)
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        let n = batch * count
        // Both inputs' gradients in one pass over y and dy where they are separate buffers.
        if let first = dInputs[0], let second = dInputs[1], first + n <= second || second + n <= first {
            activation.addMaskedGradient(output: output, dOutput: dOutput, into: first, fresh: context.isFresh(0),
                                         also: second, alsoFresh: context.isFresh(1), count: n)
            return
        }
        for (k, dx) in dInputs.enumerated() {
            guard let dx else { continue }
            activation.addMaskedGradient(output: output, dOutput: dOutput, into: dx, fresh: context.isFresh(k), count: n)
        }
    }

    public var writesFreshInputGradients: Bool { true }
}
