import CKernels
import CatdogSupport

/// Winograd F(4×4, 3×3) for stride-1 "same" 3×3 convolutions over NHWC batches: each 4×4
/// block of outputs comes from a 6×6 input tile with 36 multiplications per (input channel,
/// filter) pair instead of 144 (F(2×2, 3×3) needs 64 for the same 16 outputs), as 36 gemms
/// (tiles, C) · (C, F) between transforms along the contiguous channel axis (C kernels compiled
/// for AVX-512, AVX2 and baseline x86-64, `CKernels`).
///
/// It also computes the kernel gradient the same way (Winograd's dW): the gradient of
/// U = G g Gᵀ is dU[ξ] = Σ_tiles V[ξ]ᵀ · dM[ξ] with dM = A dY Aᵀ per tile, and dg = Gᵀ dU G:
/// 36 gemms (C, tiles) · (tiles, F) with long inner dimensions instead of one im2col gemm
/// with 9 × C rows. Exact in exact arithmetic; in float it stays within 1e-3 of the naive
/// double-precision reference on values of order 1–10 (tested).
public final class Winograd4x4: WinogradConvolution {
    public let channels: Int
    public let filters: Int
    private let buffers: WinogradBuffers
    private let chunkTiles: Int
    /// The zero vector that padding pixels point to, and the transforms' work area.
    private let zeros: FloatBuffer
    private let work: FloatBuffer

    /// Who takes the 36 products (our fp32 or bf16 gemm where the CPU and the shape allow, or
    /// BLAS); the transforms compute in fp32 in every case.
    public let route: GemmRoute
    /// In bf16, whether each tile's transform output is rounded and packed for the products as
    /// it is made (in cache), so that the products read bf16 pairs, half the bytes, with no
    /// packing pass of their own. The same bits either way; false packs inside the products.
    var packsAsItTransforms = true
    /// Whether that packing happens inside the transforms (`catdog_wino4_input_bf16`,
    /// `catdog_wino4_kernel_gradient_pair_bf16`; channels in 16s) rather than in a pass over
    /// their fp32 output: the same bits either way.
    var fusedPacking = true
    /// One or two tiles' transform outputs (V, and dW's dM), fp32, before they are packed.
    private let tileWork: FloatBuffer
    /// The kernel's 9 taps, for `catdog_wino4_filter_bf16`.
    private let tapPointers = UnsafeMutablePointer<UnsafePointer<Float>?>.allocate(capacity: 9)
    /// A tile's outputs before they are pooled (`runPooling`).
    private let poolTile: FloatBuffer

    public init(channels: Int, filters: Int, buffers: WinogradBuffers, chunkFloats: Int = 1 << 20, route: GemmRoute = .own) {
        self.route = route
        self.channels = channels
        self.filters = filters
        self.buffers = buffers
        // Tiles per chunk: V and M within chunkFloats, but no fewer than make reading the
        // transformed kernels (36·C·F floats, once per chunk) cheap beside the products: for
        // 256 → 256 layers three chunks of 56 tiles read U three times over (9 MB each).
        chunkTiles = max(8, max(chunkFloats, 2 * 36 * channels * filters) / (36 * (channels + filters)))
        buffers.reserve(u: 36 * channels * filters, v: 36 * Self.blockStride(chunkTiles * channels + channels),
                        m: 36 * Self.blockStride(chunkTiles * filters + filters))
        zeros = FloatBuffer(count: max(channels, filters))
        work = FloatBuffer(count: 36 * max(channels, filters, 1))
        tileWork = FloatBuffer(count: route == .bf16 ? 72 * (channels + filters) : 0)
        poolTile = FloatBuffer(count: 16 * filters)
    }

    deinit {
        tapPointers.deallocate()
    }

    /// Whether `packedU` holds the kernel of the last `setKernel`, packed for the bf16 gemm.
    private var uPacked = false

    public func setKernel(_ w: UnsafePointer<Float>) {
        // In bf16, the 36 kernels are rounded and packed once here rather than in every chunk's products.
        uPacked = false
        let uBlock = uBlockStride
        if route == .bf16 && packsAsItTransforms && catdog_bf16_products_available() != 0 {
            buffers.reservePackedU(36 * uBlock)
            ConvolutionPhases.measure(.winogradTransforms) { transformAndPackKernel(w) }
            uPacked = true
            return
        }
        ConvolutionPhases.measure(.winogradTransforms) { catdog_wino4_filter(w, buffers.u.pointer, channels, filters) }
        guard route == .bf16 else { return }
        buffers.reservePackedU(36 * uBlock)
        uPacked = ConvolutionPhases.measure(.products) {
            (0..<36).allSatisfy { xi in
                catdog_bf16_pack_pair_rows(buffers.u.pointer + xi * channels * filters, channels, filters, filters,
                                           buffers.packedU.pointer + xi * uBlock) != 0
            }
        }
    }

    /// The distance between two of packed U's 36 blocks, in words: `blockStride` of a block's
    /// (C + 1)/2 · F pairs. At a multiple of 4 KiB (64 · 128 words at 128 → 128 channels) the
    /// transform's 36 rows of stores all fell in one set of the L1 cache: dX's kernel transform
    /// took twice as long alone on a Zen 5 core (0.45 against 0.23 ms for resnet-pool's layers).
    private var uBlockStride: Int { Self.blockStride((channels + 1) / 2 * filters) }

    /// U in bf16 pairs along the input channels, straight into `packedU` (`catdog_wino4_filter_bf16`:
    /// each pair of channels' 9 taps read in place, transformed and packed in registers, the
    /// same bits as `catdog_wino4_filter` then packing); the fp32 U is never written out.
    private func transformAndPackKernel(_ w: UnsafePointer<Float>) {
        let c = channels, f = filters
        for tap in 0..<9 { tapPointers[tap] = w + tap * c * f }
        _ = catdog_wino4_filter_bf16(tapPointers, f, c, f, buffers.packedU.pointer, uBlockStride)
    }

    /// The distance between two of the 36 blocks of V or M (floats, or bf16 pairs), at least
    /// `count`: a whole number of 64-byte lines, and an odd one. A tile's 36 rows, one in each
    /// block, then fall in 36 different sets of the L1 cache; at a multiple of 4 KiB (resnet's
    /// 128- and 256-channel layers at batch 32: 512 tiles × 128 pairs, 128 × 256) they all fall in
    /// one set of 12 ways, and each tile's transform evicted the rows it had just written.
    static func blockStride(_ count: Int) -> Int {
        let lines = (count + 15) / 16
        return 16 * (lines | 1)
    }

    /// The tiles of n images h × w: a 4×4 block of outputs each, ⌈h/4⌉ · ⌈w/4⌉ an image. The C
    /// functions (`catdog_wino4_input_tiles` and the others) locate them and gather their
    /// pointers, a chunk of tiles a call.
    static func tiles(images n: Int, height h: Int, width w: Int) -> Int { n * ((h + 3) / 4) * ((w + 3) / 4) }

    public func run(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
                    output y: UnsafeMutablePointer<Float>, accumulate: Bool) {
        run(input: x, images: n, height: h, width: w, output: y, accumulate: accumulate, epilogue: nil)
    }

    /// The bias and activation in the output transform, while each tile's outputs are in L1:
    /// vgg's layers at batch 32 wrote 63 MB of outputs a step, then read and wrote them again
    /// for the bias and the ReLU (2.4 ms of a 66 ms step on a Zen 5 core).
    public func runAddingBias(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
                              output y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, activation: Int32) -> Bool {
        run(input: x, images: n, height: h, width: w, output: y, accumulate: false, epilogue: (bias, activation))
        return true
    }

    /// The bias and activation, then 2×2 max pooling of stride 2 ("valid") as each tile's
    /// outputs leave the transform, without writing them: `pooled` (n, h/2, w/2, F) and
    /// `argmax` (each winner's index into the outputs y would hold) as `MaxPool2D` makes them.
    /// vgg's first pool at batch 32 read 16.8 MB of outputs that the transform had just written.
    public func runPooling(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
                           output y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, activation: Int32,
                           pooled: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) -> Bool {
        run(input: x, images: n, height: h, width: w, output: y, accumulate: false, epilogue: (bias, activation),
            pool: (pooled, argmax))
        return true
    }

    private func run(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
                     output y: UnsafeMutablePointer<Float>, accumulate: Bool,
                     epilogue: (bias: UnsafePointer<Float>?, activation: Int32)?,
                     pool: (pooled: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>)? = nil) {
        let c = channels, f = filters
        let total = Self.tiles(images: n, height: h, width: w)
        let vp = buffers.v.pointer, mp = buffers.m.pointer
        let uBlock = uBlockStride, k2 = (c + 1) / 2
        var start = 0
        while start < total {
            let count = min(chunkTiles, total - start)
            let mBlock = Self.blockStride(count * f)
            if uPacked && packsAsItTransforms {
                // V in bf16 pairs along the channels, in v's memory: 36 blocks of count × k2 words.
                let words = UnsafeMutableRawPointer(vp), tile = tileWork.pointer, vBlock = Self.blockStride(count * k2)
                // In one pass where the channels come in 16s (the C function declines other
                // counts, decided here once rather than at every tile).
                let fused = fusedPacking && c % 16 == 0
                ConvolutionPhases.measure(.winogradTransforms) {
                    if fused, catdog_wino4_input_tiles_bf16(x, h, w, c, start, count, zeros.pointer, words, vBlock) != 0 { return }
                    for t in 0..<count {
                        catdog_wino4_input_tiles(x, h, w, c, start + t, 1, zeros.pointer, tile, c, work.pointer)
                        catdog_bf16_pack_tile_rows(tile, 36, c, words + 4 * t * k2, vBlock)
                    }
                }
                ConvolutionPhases.measure(.products) {
                    for xi in 0..<36 {
                        catdog_sbgemm_packed(count, f, c, words + 4 * xi * vBlock, k2, 1, buffers.packedU.pointer + xi * uBlock,
                                             mp + xi * mBlock, f, 0)
                    }
                }
            } else {
                let vBlock = Self.blockStride(count * c)
                ConvolutionPhases.measure(.winogradTransforms) {
                    catdog_wino4_input_tiles(x, h, w, c, start, count, zeros.pointer, vp, vBlock, work.pointer)
                }
                ConvolutionPhases.measure(.products) {
                    buffers.multiplyBlocks(36, tiles: count, channels: c, filters: f, vBlock: vBlock, mBlock: mBlock,
                                           packedUBlock: uPacked ? uBlock : nil, route: route)
                }
            }
            ConvolutionPhases.measure(.winogradTransforms) {
                transformOutput(tiles: start..<(start + count), h: h, w: w, into: y, blockStride: mBlock,
                                accumulate: accumulate, epilogue: epilogue, pool: pool)
            }
            start += count
        }
    }

    /// Y (the 4×4 outputs of each tile, clipped at the image's edge) from M, where the tiles'
    /// products lie `blockStride` floats apart per ξ.
    private func transformOutput(tiles: Range<Int>, h: Int, w: Int, into y: UnsafeMutablePointer<Float>,
                                 blockStride: Int, accumulate: Bool, epilogue: (bias: UnsafePointer<Float>?, activation: Int32)? = nil,
                                 pool: (pooled: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>)? = nil) {
        let mp = buffers.m.pointer, f = filters
        if let pool, let epilogue, !accumulate {
            catdog_wino4_output_pool_tiles(mp, blockStride, y, h, w, f, tiles.lowerBound, tiles.count, epilogue.bias,
                                           epilogue.activation, pool.pooled, pool.argmax, poolTile.pointer, work.pointer)
        } else {
            catdog_wino4_output_tiles(mp, blockStride, y, h, w, f, tiles.lowerBound, tiles.count, accumulate ? 1 : 0,
                                      epilogue != nil && !accumulate ? 1 : 0, epilogue?.bias, epilogue?.activation ?? 0, work.pointer)
        }
    }

    /// dW (3, 3, C, F) += the kernel gradient of y = x ⊛ W for the output gradient dY.
    public func accumulateKernelGradient(input x: UnsafePointer<Float>, dOutput dy: UnsafePointer<Float>,
                                         images n: Int, height h: Int, width w: Int,
                                         into dW: UnsafeMutablePointer<Float>) {
        let c = channels, f = filters
        let total = Self.tiles(images: n, height: h, width: w)
        buffers.reserveKernelGradient(36 * c * f)
        let vp = buffers.v.pointer, mp = buffers.m.pointer, dup = buffers.du.pointer
        let fused = route == .bf16 && packsAsItTransforms && catdog_bf16_products_available() != 0
        var start = 0
        while start < total {
            let count = min(chunkTiles, total - start)
            if fused {
                // V and dM in bf16 pairs along the tiles (tiles 2p and 2p + 1 in word p), in v's
                // and m's memory: 36 blocks of ⌈count/2⌉ × C and ⌈count/2⌉ × F words.
                let pairRows = (count + 1) / 2
                let vBlock = Self.blockStride(pairRows * c), mBlock = Self.blockStride(pairRows * f)
                let vWords = UnsafeMutableRawPointer(vp), mWords = UnsafeMutableRawPointer(mp)
                let tileV = tileWork.pointer, tileM = tileV + 72 * c
                // Both tiles' transforms packed as they are made where the channels come in 16s
                // (the C function declines other counts).
                let pairsFused = fusedPacking && c % 16 == 0 && f % 16 == 0
                ConvolutionPhases.measure(.winogradTransforms) {
                    if pairsFused, catdog_wino4_kernel_gradient_tiles_bf16(x, dy, h, w, c, f, start, count, zeros.pointer, vWords, vBlock,
                                                                           mWords, mBlock) != 0 { return }
                    for p in 0..<pairRows {
                        let both = 2 * p + 1 < count
                        for half in 0..<(both ? 2 : 1) {
                            catdog_wino4_kernel_gradient_tiles(x, dy, h, w, c, f, start + 2 * p + half, 1, zeros.pointer,
                                                               tileV + half * 36 * c, c, tileM + half * 36 * f, f, work.pointer)
                        }
                        catdog_bf16_pack_tile_pair(tileV, both ? tileV + 36 * c : nil, 36, c, c, vWords + 4 * p * c, vBlock)
                        catdog_bf16_pack_tile_pair(tileM, both ? tileM + 36 * f : nil, 36, f, f, mWords + 4 * p * f, mBlock)
                    }
                }
                ConvolutionPhases.measure(.products) {
                    for xi in 0..<36 {
                        catdog_sbgemm_packed(c, f, count, vWords + 4 * xi * vBlock, 1, c, mWords + 4 * xi * mBlock,
                                             dup + xi * c * f, f, start > 0 ? 1 : 0)
                    }
                }
            } else {
                let vBlock = Self.blockStride(count * c), mBlock = Self.blockStride(count * f)
                ConvolutionPhases.measure(.winogradTransforms) {
                    catdog_wino4_kernel_gradient_tiles(x, dy, h, w, c, f, start, count, zeros.pointer, vp, vBlock, mp, mBlock, work.pointer)
                }
                ConvolutionPhases.measure(.products) {
                    buffers.multiplyGradientBlocks(36, tiles: count, channels: c, filters: f, vBlock: vBlock, mBlock: mBlock,
                                                   accumulate: start > 0, route: route)
                }
            }
            start += count
        }
        ConvolutionPhases.measure(.winogradTransforms) { catdog_wino4_filter_gradient(dup, dW, c, f) }
    }
}

/// The instruction set our C kernels (`CKernels`) run with: "avx512f", "avx2" or "baseline".
public var kernelInstructionSet: String { String(cString: catdog_kernels_isa()) }

/// The instruction sets our C kernels are compiled for; `auto` picks the best the CPU has.
public enum KernelInstructionSet: String, Sendable, CaseIterable {
    case auto, avx512f, avx2, baseline

    public struct Unsupported: Error, CustomStringConvertible {
        public let name: String
        public var description: String {
            if let cap = KernelInstructionSet.cap {
                return "CATDOG_KERNELS=\(cap.rawValue) in the environment leaves this process no \(name) kernels; choose auto or a narrower set, or unset CATDOG_KERNELS"
            }
            return "this CPU cannot run the \(name) kernels; choose auto (the best it has) or a narrower set"
        }
    }

    /// The narrower set (avx2 or baseline) this process is capped to, as on a CPU without the
    /// wider sets (AVX512_BF16 included), or nil: CATDOG_KERNELS, which the C dispatcher reads
    /// once for the whole process (`catdog_kernels_cap`), so that tests and benchmarks can stand
    /// in for an older machine.
    public static var cap: KernelInstructionSet? {
        KernelInstructionSet(rawValue: String(cString: catdog_kernels_cap()))
    }

    /// Makes the kernels run with this set from now on (before any network runs); throws
    /// when the CPU (or the cap) lacks it. `avx2` multiplies on our AVX2 gemm (AVX-512's
    /// direct convolutions and bf16 products are gone with it); `baseline` leaves every product
    /// to BLAS.
    public func select() throws {
        guard catdog_kernels_select(rawValue) != 0 else { throw Unsupported(name: rawValue) }
    }

    /// The set the kernels run with now (never `auto`).
    public static var active: KernelInstructionSet { KernelInstructionSet(rawValue: String(cString: catdog_kernels_isa())) ?? .baseline }
}
