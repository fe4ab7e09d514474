import CKernels

/// Max pooling over NHWC windows ("valid" padding, Keras's default); remembers each
/// output's winning input so backward routes dY there.
public final class MaxPool2D: Layer {
    public let poolSize: Int
    public let stride: Int
    private var g: ConvGeometry!
    private var argmax: UnsafeMutablePointer<Int32>?
    private var capacity = 0

    public init(_ poolSize: Int = 2, stride: Int? = nil) {
        self.poolSize = poolSize
        self.stride = stride ?? poolSize
    }

    deinit { argmax?.deallocate() }

    public var kind: String { "maxpool2d" }
    public var summary: String { "maxpool2d \(poolSize)x\(poolSize) /\(stride)" }

    public func configure(inputs: [FeatureShape]) throws -> FeatureShape {
        guard inputs.count == 1 else { throw ShapeError("maxpool2d takes one input") }
        let x = inputs[0]
        guard x.height >= poolSize, x.width >= poolSize else {
            throw ShapeError("maxpool2d \(poolSize)x\(poolSize) does not fit a \(x) input: the image is too small for this model")
        }
        g = ConvGeometry(
            inHeight: x.height, inWidth: x.width, channels: x.channels, kernelHeight: poolSize,
            kernelWidth: poolSize, strideHeight: stride, strideWidth: stride, padding: .valid)
        return FeatureShape(height: g.outHeight, width: g.outWidth, channels: x.channels)
    }

    /// The winners' indices for inference too (the kernel writes them as it compares).
    public func reserve(maxBatch: Int, scratch: Scratch, training: Bool) {
        argmax?.deallocate()
        capacity = maxBatch * g.outHeight * g.outWidth * g.channels
        argmax = .allocate(capacity: max(capacity, 1))
    }

    public func workspaceBytesPerSample(training: Bool) -> Int { g.outHeight * g.outWidth * g.channels * 4 }

    public var forwardFLOPs: Int { g.outHeight * g.outWidth * g.channels * poolSize * poolSize }

    /// Set by the convolution before this pool when it pooled into this layer's output and
    /// `argmaxPointer` itself (`Conv2D.poolsInto`); the next forward then has nothing to do.
    public var filledByProducer = false
    /// The winners' indices of the last forward (after `reserve`).
    public var argmaxPointer: UnsafeMutablePointer<Int32>? { argmax }
    /// Whether a convolution can pool into this layer: 2×2 windows of stride 2.
    public var poolsTwoByTwo: Bool { poolSize == 2 && stride == 2 }

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        if filledByProducer {
            filledByProducer = false
            return
        }
        // argmax holds int32 indices into the batch's input.
        precondition(batch * g.inHeight * g.inWidth * g.channels <= Int(Int32.max), "maxpool2d: batch too large for int32 indices")
        catdog_maxpool(inputs[0], output, argmax!, batch, g.inHeight, g.inWidth, g.channels, poolSize, stride,
                       g.outHeight, g.outWidth)
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        guard let dx = dInputs[0] else { return }
        // Fresh, with windows that do not overlap: dx written in one pass (vgg's first pool at
        // batch 32: a 16.8 MB dX zeroed, then scattered into by a Swift loop, before).
        catdog_maxpool_backward(output, dOutput, argmax!, dx, batch, g.inHeight, g.inWidth, g.channels, poolSize, stride,
                                g.outHeight, g.outWidth, context.isFresh(0) ? 1 : 0, context.inputGradientMask)
    }

    public var writesFreshInputGradients: Bool { true }
    public var masksInputGradient: Bool { true }
}
