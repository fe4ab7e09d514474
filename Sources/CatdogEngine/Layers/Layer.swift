import CKernels
import CatdogSupport

/// How a parameter tensor starts, as Keras initialises it.
public enum Initializer: Sendable, Equatable {
    /// Keras's default for kernels: U(-l, l), l = sqrt(6 / (fanIn + fanOut)).
    case glorotUniform(fanIn: Int, fanOut: Int)
    case zeros
    case ones
}

/// One tensor a layer owns inside the network's flat parameter (or state) buffer.
public struct ParameterSpec: Sendable {
    public var name: String
    public var shape: [Int]
    public var initializer: Initializer
    /// Whether L2 weight decay applies (kernels yes; biases and BatchNorm no, as is usual).
    public var decays: Bool
    /// Whether no value may be negative (a variance): a file that holds one is refused.
    public var nonNegative: Bool

    public init(_ name: String, _ shape: [Int], _ initializer: Initializer, decays: Bool = false, nonNegative: Bool = false) {
        self.name = name
        self.shape = shape
        self.initializer = initializer
        self.decays = decays
        self.nonNegative = nonNegative
    }

    public var count: Int { shape.reduce(1, *) }
}

/// What a forward or backward pass needs besides tensors.
public struct PassContext: Sendable {
    public var training: Bool
    /// Keys dropout masks: (seed, step, layer, global sample index).
    public var seed: UInt64
    public var step: Int
    /// Global index of the local batch's first sample, so a sample's dropout mask does
    /// not depend on which rank holds it.
    public var firstSample: Int
    /// Ghost batch normalization (Hoffer et al., 2017): BatchNorm normalizes each group of
    /// this many consecutive samples by the group's own statistics, so that its result does
    /// not depend on how many samples a rank holds. 0: the whole pass is one group.
    public var normalizationGroup = 0
    /// With groups: whether this pass is the first of its update (the moving statistics decay
    /// once an update, however many passes and groups it has)...
    public var firstPassOfUpdate = true
    /// ...and the factor on the sum of this pass's group statistics as it enters them: ranks /
    /// groups in the global batch. The ranks' moving statistics then average to those of all
    /// the groups, whichever rank held which.
    public var groupWeight = 1.0
    /// Re-estimating the moving statistics (precise BatchNorm, `Network.recalibrateBatchNorm`):
    /// they move toward this pass's by this weight instead of by 1 − momentum.
    public var statisticsWeight: Float? = nil
    /// In `backward`, bit k set: `dInputs[k]` holds nothing yet (this layer is the first to
    /// write it), so the layer writes its gradient there instead of adding it. Only set for
    /// layers whose `writesFreshInputGradients` is true; `Network` zeroes the buffer for the rest.
    public var freshInputGradients: UInt64 = 0
    /// In `backward`, for a layer whose `masksInputGradient` is true: the activation (its C
    /// code, `Activation.kernelCode`) of the layer that made input 0, applied to the gradient
    /// written there; 0: none. `Network` sets it where that layer leaves its mask to this one.
    public var inputGradientMask: Int32 = 0
    /// In `backward`: dOutput has been masked by this layer's activation already (by the one
    /// layer that reads this output, under `inputGradientMask`), so the layer takes it as it is.
    public var outputGradientMasked = false
    /// In a training `forward`: this layer's output is read only by a 2×2 max pool that it may
    /// fill itself (`Conv2D.poolsInto`), leaving its own output unwritten; set by `Network`
    /// where the layer also leaves its activation's mask to that pool.
    public var poolsIntoReader = false
    /// In a training `forward`: this layer (a BatchNorm without activation) is read only by an
    /// addition whose other input is ready, and may write the sum itself (`BatchNorm.addsInto`),
    /// leaving its own output unwritten; set by `Network`.
    public var addsIntoReader = false

    /// Whether `dInputs[k]` is to be written rather than added into (`freshInputGradients`).
    public func isFresh(_ k: Int) -> Bool { k < 64 && freshInputGradients & (1 << UInt64(k)) != 0 }

    public init(training: Bool, seed: UInt64 = 0, step: Int = 0, firstSample: Int = 0) {
        self.training = training
        self.seed = seed
        self.step = step
        self.firstSample = firstSample
    }
}

/// How convolutions are computed. Part of a network's workspace, so a benchmark or a test
/// can compare algorithms on two networks side by side.
public struct ConvolutionOptions: Sendable, Equatable {
    public enum Algorithm: String, Sendable, CaseIterable, Codable {
        /// Winograd for stride-1 "same" 3×3 layers with ≥ 16 channels in and out (forward, dX
        /// and dW): F(4×4, 3×3) in passes of `winogradMinimumTiles` 4×4 tiles or more (more on
        /// maps that do not divide into them), F(2×2, 3×3) in smaller ones of
        /// `Winograd2x2.minimumTiles` 2×2 tiles or more; im2col + sgemm for the rest.
        case auto
        /// Winograd F(2×2, 3×3) in every pass of those layers, im2col + sgemm for the rest (for
        /// comparisons).
        case winograd2
        /// im2col + sgemm everywhere (for comparisons).
        case im2col
    }
    public var algorithm = Algorithm.auto
    /// Upper bound of one im2col chunk, in floats (256 K floats = 1 MB stays in cache).
    public var columnFloats = 256 << 10

    /// Who multiplies the convolutions' matrices.
    public enum Multiply: String, Sendable, CaseIterable, Codable {
        /// Our gemm where the CPU has AVX-512, or AVX2 and FMA, and the product's width is a
        /// multiple of 16 (Winograd's products, im2col's, and with AVX-512 1×1 convolutions'),
        /// BLAS for the rest.
        case own
        /// BLAS (OpenBLAS) for every product (for comparisons).
        case blas
    }
    public var multiply = Multiply.own
    /// With `auto`, a pass takes Winograd F(4×4) only when it has at least this many 4×4 output
    /// tiles (images × tiles an image) on maps that divide into whole tiles, and correspondingly
    /// more where F(4×4) computes past the map's edge (`Conv2D.favoursF4x4`); smaller passes
    /// take F(2×2) (or im2col, below `Winograd2x2.minimumTiles`). F(4×4) multiplies 9/16 as much
    /// as F(2×2) but transforms 36/16 as many kernel values, whose cost does not depend on the
    /// batch; both grow with channels in × out, so the break-even is a tile count: 32 on
    /// resnet-pool at 64 px (`bench --batch-size 8`, 16, 32, 64 with `--winograd-min-tiles` 16,
    /// 32, 64, 128; AMD EPYC Zen 5, bf16 and fp32). Ranks with a few images (8 a core in a lab,
    /// a small share of a balanced batch) gain most: resnet-pool's step at 8 images 10–18%
    /// shorter than with im2col in those passes.
    public var winogradMinimumTiles = 32

    /// The precision of the convolutions' products (`Precision`).
    public var precision = Precision.fp32

    public init(algorithm: Algorithm = .auto, columnFloats: Int = 256 << 10, multiply: Multiply = .own,
                winogradMinimumTiles: Int = 32, precision: Precision = .fp32) {
        self.algorithm = algorithm
        self.columnFloats = max(1, columnFloats)
        self.multiply = multiply
        self.winogradMinimumTiles = max(0, winogradMinimumTiles)
        self.precision = precision
    }

    /// Where the convolutions' products go under these options.
    public var route: GemmRoute {
        precision == .bf16 ? .bf16 : multiply == .own ? .own : .blas
    }
}

/// The precision of the convolutions' matrix products. Everything else stays fp32 in either:
/// weights, gradients and their sums across ranks, optimizer state, loss, BatchNorm, the
/// Winograd transforms, the dense layers.
public enum Precision: String, Sendable, CaseIterable, Codable {
    /// fp32 operands and sums.
    case fp32
    /// bf16 operands (8 significant bits, rounded to nearest even), products summed in fp32
    /// (`vdpbf16ps`), on CPUs with AVX512_BF16: forward, dX and dW of every convolution,
    /// Winograd's 36 products, im2col's and the 1×1 convolutions'. A layer on an image's few
    /// channels keeps its fp32 direct convolutions for forward and dW (`Conv2D.takesDirect`):
    /// faster there than im2col's products in bf16.
    case bf16

    /// Why this process cannot compute in this precision, or nil when it can.
    public var unavailableReason: String? {
        guard self == .bf16 else { return nil }
        if !BF16Gemm.available {
            if let cap = KernelInstructionSet.cap {
                return "CATDOG_KERNELS=\(cap.rawValue) in the environment stands in for a CPU without AVX512_BF16"
            }
            return "this CPU has no AVX512_BF16 instructions"
        }
        if KernelInstructionSet.active != .avx512f { return "the \(KernelInstructionSet.active.rawValue) kernels have no bf16 products" }
        return nil
    }
}

/// Scratch memory shared by all layers of one network (the im2col gradient buffer, Winograd's
/// transform buffers), sized once to the largest request, and the network's convolution
/// options. Layers of one network run one at a time, so they can share it; two networks
/// (or two threads) each have their own.
public final class Scratch {
    public let convolution: ConvolutionOptions
    public private(set) var buffer = FloatBuffer(count: 0)
    /// Winograd's transformed filters, tiles and products, shared by the network's layers.
    public let winograd = WinogradBuffers()
    /// Under bf16, a pass's B operand rounded and packed once for all its chunks' products.
    public private(set) var packedOperand = FloatBuffer(count: 0)
    public init(convolution: ConvolutionOptions = .init()) { self.convolution = convolution }
    public func reserve(_ count: Int) {
        if count > buffer.count { buffer = FloatBuffer(count: count) }
    }
    public func reservePackedOperand(_ count: Int) {
        if count > packedOperand.count { packedOperand = FloatBuffer(count: count) }
    }
    public var pointer: UnsafeMutablePointer<Float> { buffer.pointer }
}

/// A layer: a forward function and its backward, over NHWC batches.
///
/// Backward *adds* into `dInputs` and into the parameter gradients (llm.c's convention), so
/// a tensor read by two layers sums both contributions and gradients can accumulate.
public protocol Layer: AnyObject {
    /// Short kind name, e.g. "conv2d".
    var kind: String { get }
    /// Fixes input shapes, returns the output shape; throws if the inputs do not fit.
    func configure(inputs: [FeatureShape]) throws -> FeatureShape
    /// Trainable tensors, in the order they are laid out in the flat buffer.
    var parameterSpecs: [ParameterSpec] { get }
    /// Non-trainable tensors (BatchNorm's moving statistics).
    var stateSpecs: [ParameterSpec] { get }
    /// Points the layer at its slices of the flat parameter, gradient and state buffers.
    func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, state: UnsafeMutablePointer<Float>)
    /// Allocates per-layer workspaces for batches up to `maxBatch`; for inference only
    /// (`training` false: forward passes with `PassContext(training: false)`, no backward), none
    /// of what only a training pass or a backward pass uses.
    func reserve(maxBatch: Int, scratch: Scratch, training: Bool)
    /// Bytes per sample of the batch that `reserve` sets aside (beyond the network's activations
    /// and gradients), so that memory plans count them.
    func workspaceBytesPerSample(training: Bool) -> Int
    func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext)
    /// `dOutput` may be overwritten. A nil entry in `dInputs` means that gradient is not needed.
    /// Adds into `dInputs`, except those `context.isFresh(k)` names, which it writes.
    func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext)
    /// Floating-point operations per sample in forward (a multiply-add counts 2).
    var forwardFLOPs: Int { get }
    /// One line for `models` and logs, e.g. "conv2d 3x3x32 same relu".
    var summary: String { get }
    /// Whether `backward` honours `PassContext.freshInputGradients` (writes a fresh input
    /// gradient instead of adding into it), so that `Network` need not zero that buffer first:
    /// a pass of writes and one of reads less over an activation-sized buffer.
    var writesFreshInputGradients: Bool { get }
    /// Whether `backward` applies `PassContext.inputGradientMask` to dInputs[0], judging what
    /// passed from what it read (max pooling: the winner of each window).
    var masksInputGradient: Bool { get }
    /// The activation on this layer's output whose mask `backward` leaves to the layer that
    /// reads the output when told (`PassContext.outputGradientMasked`); nil: none. A ReLU
    /// before a max pool: its mask over the pool's input gradient cost a pass that read the
    /// output and read and wrote the gradient (vgg's first pair at batch 32: 50 MB).
    var maskableActivation: Activation? { get }
}

extension Layer {
    public var parameterSpecs: [ParameterSpec] { [] }
    public var stateSpecs: [ParameterSpec] { [] }
    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, state: UnsafeMutablePointer<Float>) {}
    public func reserve(maxBatch: Int, scratch: Scratch, training: Bool) {}
    public func workspaceBytesPerSample(training: Bool) -> Int { 0 }
    public var summary: String { kind }
    public var writesFreshInputGradients: Bool { false }
    public var masksInputGradient: Bool { false }
    public var maskableActivation: Activation? { nil }
}

/// A layer configuration error: which layer, what is wrong.
public struct ShapeError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Element-wise nonlinearity that a layer can apply to its own output.
public enum Activation: String, Sendable, Codable {
    case linear, relu, relu6

    /// The code the C kernels take: 0 linear, 1 ReLU, 2 ReLU6.
    var kernelCode: Int32 {
        switch self {
        case .linear: 0
        case .relu: 1
        case .relu6: 2
        }
    }

    /// dy = 0 where the activation did not pass its input (read from its output y). The
    /// per-element passes run in C: these Swift loops did not vectorise (resnet's first ReLU
    /// backward took 4.1 ms, 0.3 in C).
    @inline(__always)
    func maskGradient(output y: UnsafePointer<Float>, dOutput dy: UnsafeMutablePointer<Float>, count: Int) {
        guard self != .linear else { return }
        catdog_mask_bias_gradient(y, dy, nil, 1, count, kernelCode)
    }

    /// dx += dy where the activation passed its input (dx = that, when `fresh`), in one pass,
    /// and the same into `also` (a second, separate buffer; `alsoFresh`) in that pass; dy is
    /// left as it is.
    @inline(__always)
    func addMaskedGradient(output y: UnsafePointer<Float>, dOutput dy: UnsafePointer<Float>,
                           into dx: UnsafeMutablePointer<Float>, fresh: Bool = false,
                           also dx2: UnsafeMutablePointer<Float>? = nil, alsoFresh: Bool = false, count: Int) {
        precondition(dx2 == nil || dx2! + count <= dx || dx + count <= dx2!, "addMaskedGradient: the two gradients overlap")
        let overwrite: Int32 = (fresh ? 1 : 0) | (dx2 != nil && alsoFresh ? 2 : 0)
        switch self {
        case .linear:
            if fresh { dx.update(from: dy, count: count) } else { for i in 0..<count { dx[i] += dy[i] } }
            if let dx2 {
                if alsoFresh { dx2.update(from: dy, count: count) } else { for i in 0..<count { dx2[i] += dy[i] } }
            }
        case .relu: catdog_masked_add(y, dy, dx, dx2, count, 0, .infinity, overwrite)
        case .relu6: catdog_masked_add(y, dy, dx, dx2, count, 0, 6, overwrite)
        }
    }

    /// y = activation(y) in place.
    @inline(__always)
    func apply(_ y: UnsafeMutablePointer<Float>, count: Int) {
        guard self != .linear else { return }
        catdog_bias_activation(y, nil, 1, count, kernelCode)
    }
}
