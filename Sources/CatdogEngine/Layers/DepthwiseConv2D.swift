import CKernels

/// Depthwise 2-D convolution (depth multiplier 1): each channel convolved with its own
/// KH×KW filter. Memory-bound rather than a gemm, so it runs as direct loops (the C kernels
/// `catdog_depthwise_forward`/`_backward`) along the contiguous channel axis of NHWC. Kernel
/// shape (KH, KW, C), as Keras's DepthwiseConv2D without its trailing multiplier axis.
public final class DepthwiseConv2D: Layer {
    public let kernelSize: Int
    public let stride: Int
    public let padding: ConvGeometry.Padding
    public let activation: Activation
    public let useBias: Bool
    public private(set) var geometry: ConvGeometry!
    private var kernel: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>!
    private var dKernel: UnsafeMutablePointer<Float>!
    private var dBias: UnsafeMutablePointer<Float>!

    public init(_ kernelSize: Int, stride: Int = 1, padding: ConvGeometry.Padding = .same,
                activation: Activation = .linear, useBias: Bool = false) {
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.activation = activation
        self.useBias = useBias
    }

    public var kind: String { "depthwise_conv2d" }
    public var summary: String { "depthwise \(kernelSize)x\(kernelSize) /\(stride) \(padding.rawValue)" }

    public func configure(inputs: [FeatureShape]) throws -> FeatureShape {
        guard inputs.count == 1 else { throw ShapeError("depthwise_conv2d takes one input") }
        let x = inputs[0]
        geometry = ConvGeometry(inHeight: x.height, inWidth: x.width, channels: x.channels, kernelHeight: kernelSize,
                                kernelWidth: kernelSize, strideHeight: stride, strideWidth: stride, padding: padding)
        guard geometry.outHeight > 0, geometry.outWidth > 0 else {
            throw ShapeError("depthwise \(kernelSize)x\(kernelSize) does not fit a \(x) input: the image is too small for this model")
        }
        return FeatureShape(height: geometry.outHeight, width: geometry.outWidth, channels: x.channels)
    }

    public var parameterSpecs: [ParameterSpec] {
        let c = geometry.channels, k = kernelSize
        // Keras's fans for a depthwise kernel (KH, KW, C, 1): in = KH·KW·1... per channel.
        var specs = [ParameterSpec("kernel", [k, k, c], .glorotUniform(fanIn: k * k, fanOut: k * k), decays: true)]
        if useBias { specs.append(ParameterSpec("bias", [c], .zeros)) }
        return specs
    }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, state: UnsafeMutablePointer<Float>) {
        kernel = parameters
        dKernel = gradients
        let count = kernelSize * kernelSize * geometry.channels
        bias = parameters + count
        dBias = gradients + count
    }

    public var forwardFLOPs: Int { 2 * geometry.outHeight * geometry.outWidth * geometry.channels * kernelSize * kernelSize }

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        let g = geometry!
        catdog_depthwise_forward(inputs[0], kernel, useBias ? bias : nil, output, batch, g.inHeight, g.inWidth, g.channels,
                                 kernelSize, stride, g.padTop, g.padLeft, g.outHeight, g.outWidth)
        activation.apply(output, count: batch * g.outHeight * g.outWidth * g.channels)
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        let g = geometry!
        activation.maskGradient(output: output, dOutput: dOutput, count: batch * g.outHeight * g.outWidth * g.channels)
        catdog_depthwise_backward(inputs[0], kernel, dOutput, dKernel, useBias ? dBias : nil, dInputs[0], batch, g.inHeight,
                                  g.inWidth, g.channels, kernelSize, stride, g.padTop, g.padLeft, g.outHeight, g.outWidth)
    }
}
