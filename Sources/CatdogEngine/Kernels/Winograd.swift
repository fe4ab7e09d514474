import CKernels
import CatdogSupport

/// Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, 2016) for stride-1 "same" 3×3
/// convolutions over NHWC batches: each 2×2 block of outputs comes from a 4×4 input tile with
/// 16 multiplications per (input channel, filter) pair instead of 36, as 16 gemms
/// (tiles, C) · (C, F) between transforms along the contiguous channel axis (C kernels,
/// `catdog_wino2_*`, compiled for each instruction set).
///
///   U = G g Gᵀ (filters), V = Bᵀ d B (input tiles), Y = Aᵀ [U ⊙ V] A (outputs)
///
/// It computes the kernel gradient the same way: dU[ξ] = Σ_tiles V[ξ]ᵀ · dM[ξ] with
/// dM = A dY Aᵀ per tile, and dg = Gᵀ dU G. Beside F(4×4) it multiplies 16/9 as much and keeps
/// 16/36 as many transformed weights: where a pass has few tiles (the deepest layers at a few
/// images a rank) the weights' side of F(4×4) costs more than the products it saves.
public final class Winograd2x2: WinogradConvolution {
    public let channels: Int
    public let filters: Int
    /// Who takes the 16 products (`Winograd4x4.route`); the transforms compute in fp32.
    public let route: GemmRoute
    /// Transformed filters (16, C, F), transformed tiles (16, tiles, C) and their products
    /// (16, tiles, F), in buffers shared by all layers of one network (its `Scratch`).
    private let buffers: WinogradBuffers
    /// Tiles per chunk: the chunk's V and M within `chunkFloats`.
    private let chunkTiles: Int
    /// The zero vector that padding pixels point to.
    private let zeros: FloatBuffer
    /// Whether `packedU` holds the kernel of the last `setKernel`, packed for the bf16 gemm.
    private var uPacked = false

    public init(channels: Int, filters: Int, buffers: WinogradBuffers, chunkFloats: Int = 1 << 20, route: GemmRoute = .own) {
        self.channels = channels
        self.filters = filters
        self.buffers = buffers
        self.route = route
        chunkTiles = max(8, chunkFloats / (16 * (channels + filters)))
        buffers.reserve(u: 16 * channels * filters, v: 16 * Winograd4x4.blockStride(chunkTiles * channels),
                        m: 16 * Winograd4x4.blockStride(chunkTiles * filters))
        zeros = FloatBuffer(count: max(channels, filters))
        zeros.zero()
    }

    /// The distance between two of packed U's 16 blocks, in words.
    private var uBlockStride: Int { Winograd4x4.blockStride((channels + 1) / 2 * filters) }

    /// The fewest 2×2 tiles a pass takes F(2×2) with under `auto` (below them, im2col): 16 (64
    /// output pixels). At 16 pixels (one image's 4×4 map, 256 channels in and out) the 16
    /// transformed kernels cost more than the 9 of im2col save; at 64 pixels F(2×2) took 0.13 ms
    /// of resnet-pool's 16×16 layers where im2col took 0.22 (AMD EPYC Zen 5, bf16, one core).
    public static let minimumTiles = 16

    /// The tiles of n images h × w: a 2×2 block of outputs each.
    static func tiles(images n: Int, height h: Int, width w: Int) -> Int { n * ((h + 1) / 2) * ((w + 1) / 2) }

    /// Transforms a Keras kernel (3, 3, C, F); call whenever the weights change. In bf16 the 16
    /// kernels are also rounded and packed once here rather than in every chunk's products.
    public func setKernel(_ w: UnsafePointer<Float>) {
        let c = channels, f = filters
        uPacked = false
        if route == .bf16 {
            buffers.reservePackedU(16 * uBlockStride)
            for tap in 0..<9 { tapPointers[tap] = w + tap * c * f }
            uPacked = ConvolutionPhases.measure(.winogradTransforms) {
                catdog_wino2_filter_bf16(tapPointers, f, c, f, buffers.packedU.pointer, uBlockStride) != 0
            }
            if uPacked { return }
        }
        ConvolutionPhases.measure(.winogradTransforms) { catdog_wino2_filter(w, buffers.u.pointer, c, f) }
    }

    /// The kernel's 9 taps, for `catdog_wino2_filter_bf16`.
    private let tapPointers = UnsafeMutablePointer<UnsafePointer<Float>?>.allocate(capacity: 9)

    deinit { tapPointers.deallocate() }

    /// y (n, H, W, F) = x (n, H, W, C) ⊛ kernel, or y += it when `accumulate`.
    public func run(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
                    output y: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let c = channels, f = filters
        let total = Self.tiles(images: n, height: h, width: w)
        let vp = buffers.v.pointer, mp = buffers.m.pointer, uBlock = uBlockStride
        var start = 0
        while start < total {
            let count = min(chunkTiles, total - start)
            let vBlock = Winograd4x4.blockStride(count * c), mBlock = Winograd4x4.blockStride(count * f)
            ConvolutionPhases.measure(.winogradTransforms) {
                catdog_wino2_input_tiles(x, h, w, c, start, count, zeros.pointer, vp, vBlock)
            }
            ConvolutionPhases.measure(.products) {
                buffers.multiplyBlocks(16, tiles: count, channels: c, filters: f, vBlock: vBlock, mBlock: mBlock,
                                       packedUBlock: uPacked ? uBlock : nil, route: route)
            }
            ConvolutionPhases.measure(.winogradTransforms) {
                catdog_wino2_output_tiles(mp, mBlock, y, h, w, f, start, count, accumulate ? 1 : 0)
            }
            start += count
        }
    }

    /// dW (3, 3, C, F) += the kernel gradient of y = x ⊛ W for the output gradient dY.
    public func accumulateKernelGradient(input x: UnsafePointer<Float>, dOutput dy: UnsafePointer<Float>,
                                         images n: Int, height h: Int, width w: Int,
                                         into dW: UnsafeMutablePointer<Float>) {
        let c = channels, f = filters
        let total = Self.tiles(images: n, height: h, width: w)
        buffers.reserveKernelGradient(16 * c * f)
        let vp = buffers.v.pointer, mp = buffers.m.pointer, dup = buffers.du.pointer
        var start = 0
        while start < total {
            let count = min(chunkTiles, total - start)
            let vBlock = Winograd4x4.blockStride(count * c), mBlock = Winograd4x4.blockStride(count * f)
            ConvolutionPhases.measure(.winogradTransforms) {
                catdog_wino2_kernel_gradient_tiles(x, dy, h, w, c, f, start, count, zeros.pointer, vp, vBlock, mp, mBlock)
            }
            ConvolutionPhases.measure(.products) {
                buffers.multiplyGradientBlocks(16, tiles: count, channels: c, filters: f, vBlock: vBlock, mBlock: mBlock,
                                               accumulate: start > 0, route: route)
            }
            start += count
        }
        ConvolutionPhases.measure(.winogradTransforms) { catdog_wino2_filter_gradient(dup, dW, c, f) }
    }
}

/// Winograd's three work buffers, grown to the largest layer that uses them.
public final class WinogradBuffers {
    var u = FloatBuffer(count: 0), v = FloatBuffer(count: 0), m = FloatBuffer(count: 0)
    /// U rounded to bf16 and packed for the bf16 gemm (32-bit pairs in float-sized slots), when
    /// a layer computes in bf16.
    var packedU = FloatBuffer(count: 0)
    /// F(4×4, 3×3)'s kernel gradient in the transformed domain, when a layer computes dW that way.
    var du = FloatBuffer(count: 0)
    public init() {}
    func reserveKernelGradient(_ count: Int) {
        if du.count < count { du = FloatBuffer(count: count) }
    }
    func reservePackedU(_ count: Int) {
        if packedU.count < count { packedU = FloatBuffer(count: count) }
    }
    func reserve(u: Int, v: Int, m: Int) {
        if self.u.count < u { self.u = FloatBuffer(count: u) }
        if self.v.count < v { self.v = FloatBuffer(count: v) }
        if self.m.count < m { self.m = FloatBuffer(count: m) }
    }

    /// The products of a chunk of tiles, M[ξ] (tiles × f, `mBlock` floats apart) = V[ξ] (tiles ×
    /// c, `vBlock` apart) · U[ξ], for ξ < `blocks`: from U packed in bf16 (`packedUBlock` words
    /// apart) where given and the bf16 gemm takes it, else from U in fp32 (c × f a block) by
    /// `route`.
    func multiplyBlocks(_ blocks: Int, tiles count: Int, channels c: Int, filters f: Int, vBlock: Int, mBlock: Int,
                        packedUBlock: Int?, route: GemmRoute) {
        let vp = v.pointer, mp = m.pointer, up = u.pointer
        for xi in 0..<blocks {
            if let uBlock = packedUBlock, catdog_sbgemm_f32_packed_b(count, f, c, vp + xi * vBlock, c, 1, packedU.pointer + xi * uBlock,
                                                                      mp + xi * mBlock, f, 0) != 0 { continue }
            multiply(route: route, m: count, n: f, k: c, a: vp + xi * vBlock, rowStrideA: c, columnStrideA: 1,
                     b: up + xi * c * f, ldb: f, c: mp + xi * mBlock, ldc: f, accumulate: false)
        }
    }

    /// The kernel gradient's products of a chunk: dU[ξ] (c × f) = V[ξ]ᵀ · dM[ξ] (V and dM as
    /// `multiplyBlocks` has them), added to dU when `accumulate`.
    func multiplyGradientBlocks(_ blocks: Int, tiles count: Int, channels c: Int, filters f: Int, vBlock: Int, mBlock: Int,
                                accumulate: Bool, route: GemmRoute) {
        let vp = v.pointer, mp = m.pointer, dup = du.pointer
        for xi in 0..<blocks {
            multiply(route: route, m: c, n: f, k: count, a: vp + xi * vBlock, rowStrideA: 1, columnStrideA: c,
                     b: mp + xi * mBlock, ldb: f, c: dup + xi * c * f, ldc: f, accumulate: accumulate)
        }
    }
}

/// What Conv2D needs of a Winograd convolution: transform a kernel, then convolve with it.
public protocol WinogradConvolution: AnyObject {
    /// Transforms a Keras kernel (3, 3, C, F); call whenever the weights change.
    func setKernel(_ w: UnsafePointer<Float>)
    /// y (n, H, W, F) = x (n, H, W, C) ⊛ kernel, or y += it when `accumulate`.
    func run(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
             output y: UnsafeMutablePointer<Float>, accumulate: Bool)
    /// y = activation(x ⊛ kernel + bias) written, the bias (nil: none) and activation (the
    /// kernels' code, `Activation.kernelCode`) applied as each tile is written; false where
    /// this transform does not (then y is untouched and the caller runs `run` and applies them).
    func runAddingBias(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
                       output y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, activation: Int32) -> Bool
    /// The same, then 2×2 max pooling of stride 2 into `pooled` and `argmax` (indices into y,
    /// as `MaxPool2D` keeps them), y itself left unwritten; false where this transform does not.
    func runPooling(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
                    output y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, activation: Int32,
                    pooled: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) -> Bool
}

/// A Winograd convolution that also computes the kernel gradient in the transformed domain.
public protocol WinogradKernelGradient: AnyObject {
    /// dW (3, 3, C, F) += the kernel gradient of y = x ⊛ W for the output gradient dY.
    func accumulateKernelGradient(input x: UnsafePointer<Float>, dOutput dy: UnsafePointer<Float>,
                                  images n: Int, height h: Int, width w: Int, into dW: UnsafeMutablePointer<Float>)
}

extension Winograd2x2: WinogradKernelGradient {}
extension Winograd4x4: WinogradKernelGradient {}

extension WinogradConvolution {
    public func runAddingBias(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
                              output y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, activation: Int32) -> Bool {
        false
    }

    public func runPooling(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
                           output y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, activation: Int32,
                           pooled: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) -> Bool {
        false
    }
}

