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
    private let inPointers = UnsafeMutablePointer<UnsafePointer<Float>?>.allocate(capacity: 36)
    private let outPointers = UnsafeMutablePointer<UnsafeMutablePointer<Float>?>.allocate(capacity: 16)

    /// Who takes the 36 products (our fp32 or bf16 gemm where the CPU and the shape allow, or
    /// BLAS); the transforms stay fp32 in every case.
    public let route: GemmRoute

    public init(channels: Int, filters: Int, buffers: WinogradBuffers, chunkFloats: Int = 1 << 20, route: GemmRoute = .own) {
        self.route = route
        self.channels = channels
        self.filters = filters
        self.buffers = buffers
        // Tiles per chunk: V and M within chunkFloats, but no fewer than make reading the
        // transformed kernels (36·C·F floats, once per chunk) cheap beside the products: for
        // 256 → 256 layers three chunks of 56 tiles read U three times over (9 MB each).
        chunkTiles = max(8, max(chunkFloats, 2 * 36 * channels * filters) / (36 * (channels + filters)))
        buffers.reserve(u: 36 * channels * filters, v: 36 * chunkTiles * channels, m: 36 * chunkTiles * filters)
        zeros = FloatBuffer(count: max(channels, filters))
        work = FloatBuffer(count: 36 * max(channels, filters, 1))
    }

    deinit {
        inPointers.deallocate()
        outPointers.deallocate()
    }

    /// Whether `packedU` holds the kernel of the last `setKernel`, packed for the bf16 gemm.
    private var uPacked = false

    public func setKernel(_ w: UnsafePointer<Float>) {
        ConvolutionPhases.measure(.winogradTransforms) { catdog_wino4_filter(w, buffers.u.pointer, channels, filters) }
        // In bf16, the 36 kernels are rounded and packed once here rather than in every chunk's products.
        uPacked = false
        guard route == .bf16 else { return }
        let pairs = (channels + 1) / 2 * filters
        buffers.reservePackedU(36 * pairs)
        uPacked = ConvolutionPhases.measure(.products) {
            (0..<36).allSatisfy { xi in
                catdog_bf16_pack_pair_rows(buffers.u.pointer + xi * channels * filters, channels, filters, filters,
                                           buffers.packedU.pointer + xi * pairs) != 0
            }
        }
    }

    private struct Tiling {
        let tilesHigh: Int, tilesWide: Int
        var perImage: Int { tilesHigh * tilesWide }
        init(h: Int, w: Int) { tilesHigh = (h + 3) / 4; tilesWide = (w + 3) / 4 }
        func locate(_ tile: Int) -> (image: Int, row: Int, col: Int) {
            let image = tile / perImage, within = tile - image * perImage
            let ty = within / tilesWide
            return (image, 4 * ty, 4 * (within - ty * tilesWide))
        }
    }

    /// The 6×6 input pixels of the tile whose outputs start at (row, col) (inputs from row − 1,
    /// col − 1), zero outside; `depth` floats per pixel.
    private func gatherInput(_ x: UnsafePointer<Float>, h: Int, w: Int, depth: Int, row: Int, col: Int) {
        let zero = UnsafePointer(zeros.pointer)
        for r in 0..<6 {
            let ih = row - 1 + r
            for s in 0..<6 {
                let iw = col - 1 + s
                inPointers[r * 6 + s] = ih >= 0 && ih < h && iw >= 0 && iw < w ? x + (ih * w + iw) * depth : zero
            }
        }
    }

    /// V of one tile of x (channels floats per pixel) into v, tileStride apart per ξ; returns
    /// where the tile is.
    @discardableResult
    private func transformInput(_ x: UnsafePointer<Float>, tile: Int, of tiling: Tiling, h: Int, w: Int,
                                into v: UnsafeMutablePointer<Float>, stride: Int) -> (image: Int, row: Int, col: Int) {
        let (image, row, col) = tiling.locate(tile)
        gatherInput(x + image * h * w * channels, h: h, w: w, depth: channels, row: row, col: col)
        catdog_wino4_input(inPointers, v, stride, channels, work.pointer)
        return (image, row, col)
    }

    public func run(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
                    output y: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let c = channels, f = filters
        let tiling = Tiling(h: h, w: w)
        let total = n * tiling.perImage
        let vp = buffers.v.pointer, mp = buffers.m.pointer, up = buffers.u.pointer
        var start = 0
        while start < total {
            let count = min(chunkTiles, total - start)
            ConvolutionPhases.measure(.winogradTransforms) {
                for t in 0..<count { transformInput(x, tile: start + t, of: tiling, h: h, w: w, into: vp + t * c, stride: count * c) }
            }
            ConvolutionPhases.measure(.products) {
                let pairs = (c + 1) / 2 * f
                for xi in 0..<36 {
                    if uPacked, catdog_sbgemm_f32_packed_b(count, f, c, vp + xi * count * c, c, 1, buffers.packedU.pointer + xi * pairs,
                                                           mp + xi * count * f, f, 0) != 0 { continue }
                    multiply(route: route, m: count, n: f, k: c, a: vp + xi * count * c, rowStrideA: c, columnStrideA: 1,
                             b: up + xi * c * f, ldb: f, c: mp + xi * count * f, ldc: f, accumulate: false)
                }
            }
            ConvolutionPhases.measure(.winogradTransforms) { transformOutput(tiles: start..<(start + count), of: tiling, h: h, w: w, into: y, accumulate: accumulate) }
            start += count
        }
    }

    /// Y (the 4×4 outputs of each tile, clipped at the image's edge) from M, where the tiles'
    /// products lie `tiles.count · F` floats apart per ξ.
    private func transformOutput(tiles: Range<Int>, of tiling: Tiling, h: Int, w: Int, into y: UnsafeMutablePointer<Float>,
                                 accumulate: Bool) {
        let f = filters, count = tiles.count, mp = buffers.m.pointer
        for t in 0..<count {
            let (image, row, col) = tiling.locate(tiles.lowerBound + t)
            let base = y + image * h * w * f
            for r in 0..<4 {
                for s in 0..<4 {
                    let oh = row + r, ow = col + s
                    outPointers[r * 4 + s] = oh < h && ow < w ? base + (oh * w + ow) * f : nil
                }
            }
            catdog_wino4_output(mp + t * f, count * f, outPointers, f, accumulate ? 1 : 0, work.pointer)
        }
    }

    /// dW (3, 3, C, F) += the kernel gradient of y = x ⊛ W for the output gradient dY.
    public func accumulateKernelGradient(input x: UnsafePointer<Float>, dOutput dy: UnsafePointer<Float>,
                                         images n: Int, height h: Int, width w: Int,
                                         into dW: UnsafeMutablePointer<Float>) {
        let c = channels, f = filters
        let tiling = Tiling(h: h, w: w)
        let total = n * tiling.perImage
        buffers.reserveKernelGradient(36 * c * f)
        let vp = buffers.v.pointer, mp = buffers.m.pointer, dup = buffers.du.pointer
        let zero = UnsafePointer(zeros.pointer)
        var start = 0
        while start < total {
            let count = min(chunkTiles, total - start)
            ConvolutionPhases.measure(.winogradTransforms) {
                for t in 0..<count {
                    let (image, row, col) = transformInput(x, tile: start + t, of: tiling, h: h, w: w, into: vp + t * c, stride: count * c)
                    let base = dy + image * h * w * f
                    for r in 0..<4 {
                        for s in 0..<4 {
                            let oh = row + r, ow = col + s
                            inPointers[r * 4 + s] = oh < h && ow < w ? base + (oh * w + ow) * f : zero
                        }
                    }
                    catdog_wino4_output_gradient(inPointers, mp + t * f, count * f, f, work.pointer)
                }
            }
            ConvolutionPhases.measure(.products) {
                for xi in 0..<36 {
                    multiply(route: route, m: c, n: f, k: count, a: vp + xi * count * c, rowStrideA: 1, columnStrideA: c,
                             b: mp + xi * count * f, ldb: f, c: dup + xi * c * f, ldc: f, accumulate: start > 0)
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
        public var description: String { "this CPU cannot run the \(name) kernels; choose auto (the best it has) or a narrower set" }
    }

    /// Makes the kernels run with this set from now on (before any network runs); throws
    /// when the CPU lacks it. `avx2` and `baseline` also leave Winograd's products to BLAS.
    public func select() throws {
        guard catdog_kernels_select(rawValue) != 0 else { throw Unsupported(name: rawValue) }
    }

    /// The set the kernels run with now (never `auto`).
    public static var active: KernelInstructionSet { KernelInstructionSet(rawValue: String(cString: catdog_kernels_isa())) ?? .baseline }
}
