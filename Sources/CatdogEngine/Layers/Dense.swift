/// Fully connected layer over the flattened sample: y (n, U) = x (n, K) · W (K, U) + b.
public final class Dense: Layer {
    public let units: Int
    public let activation: Activation
    private var inputCount = 0
    private var kernel: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>!
    private var dKernel: UnsafeMutablePointer<Float>!
    private var dBias: UnsafeMutablePointer<Float>!

    public init(_ units: Int, activation: Activation = .linear) {
        self.units = units
        self.activation = activation
    }

    public var kind: String { "dense" }
    public var summary: String { "dense \(units)" + (activation == .linear ? "" : " \(activation.rawValue)") }

    public func configure(inputs: [FeatureShape]) throws -> FeatureShape {
        guard inputs.count == 1 else { throw ShapeError("dense takes one input") }
        inputCount = inputs[0].count
        return .vector(units)
    }

    public var parameterSpecs: [ParameterSpec] {
        [ParameterSpec("kernel", [inputCount, units], .glorotUniform(fanIn: inputCount, fanOut: units), decays: true),
         ParameterSpec("bias", [units], .zeros)]
    }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, state: UnsafeMutablePointer<Float>) {
        kernel = parameters
        bias = parameters + inputCount * units
        dKernel = gradients
        dBias = gradients + inputCount * units
    }

    public var forwardFLOPs: Int { 2 * inputCount * units }

    /// Who takes the forward and kernel-gradient products: our fp32 gemm where the CPU and the
    /// width allow (unless the options ask for BLAS), else OpenBLAS; fp32 under `--precision
    /// bf16` too. dX (dY · Wᵀ) stays on OpenBLAS, which reads Wᵀ in place.
    private var route = GemmRoute.own

    public func reserve(maxBatch: Int, scratch: Scratch, training: Bool) {
        route = scratch.convolution.multiply == .blas ? .blas : .own
    }

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        multiply(route: route, m: batch, n: units, k: inputCount, a: inputs[0], rowStrideA: inputCount, columnStrideA: 1,
                 b: kernel, ldb: units, c: output, ldc: units, accumulate: false)
        var row = output
        for _ in 0..<batch {
            for u in 0..<units { row[u] += bias[u] }
            row += units
        }
        activation.apply(output, count: batch * units)
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        activation.maskGradient(output: output, dOutput: dOutput, count: batch * units)
        var row = UnsafePointer(dOutput)
        for _ in 0..<batch {
            for u in 0..<units { dBias[u] += row[u] }
            row += units
        }
        multiply(route: route, m: inputCount, n: units, k: batch, a: inputs[0], rowStrideA: 1, columnStrideA: inputCount,
                 b: dOutput, ldb: units, c: dKernel, ldc: units, accumulate: true)
        if let dx = dInputs[0] {
            gemm(transB: true, m: batch, n: inputCount, k: units, a: dOutput, lda: units,
                 b: kernel, ldb: units, beta: 1, c: dx, ldc: inputCount)
        }
    }
}
