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

    public func reserve(maxBatch: Int, scratch: Scratch) {
        argmax?.deallocate()
        capacity = maxBatch * g.outHeight * g.outWidth * g.channels
        argmax = .allocate(capacity: max(capacity, 1))
    }

    public var forwardFLOPs: Int { g.outHeight * g.outWidth * g.channels * poolSize * poolSize }

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        let x = inputs[0]
        let c = g.channels
        let argmax = argmax!
        var o = 0
        for n in 0..<batch {
            let image = n * g.inHeight * g.inWidth * c
            for oh in 0..<g.outHeight {
                for ow in 0..<g.outWidth {
                    let first = image + (oh * stride * g.inWidth + ow * stride) * c
                    for ch in 0..<c {
                        output[o + ch] = x[first + ch]
                        argmax[o + ch] = Int32(first + ch)
                    }
                    for kh in 0..<poolSize {
                        for kw in 0..<poolSize where kh != 0 || kw != 0 {
                            let base = image + ((oh * stride + kh) * g.inWidth + ow * stride + kw) * c
                            for ch in 0..<c where x[base + ch] > output[o + ch] {
                                output[o + ch] = x[base + ch]
                                argmax[o + ch] = Int32(base + ch)
                            }
                        }
                    }
                    o += c
                }
            }
        }
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        guard let dx = dInputs[0] else { return }
        let argmax = argmax!
        for i in 0..<(batch * g.outHeight * g.outWidth * g.channels) {
            dx[Int(argmax[i])] += dOutput[i]
        }
    }
}
