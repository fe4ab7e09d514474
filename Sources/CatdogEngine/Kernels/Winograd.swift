import CatdogSupport

/// Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, 2016) for stride-1 "same" 3×3
/// convolutions over NHWC batches: each 2×2 block of outputs comes from a 4×4 input tile with
/// 16 multiplications per (input channel, filter) pair instead of 36, as 16 gemms
/// (tiles, C) · (C, F) between transforms that run along the contiguous channel axis.
///
///   U = G g Gᵀ (filters), V = Bᵀ d B (input tiles), Y = Aᵀ [U ⊙ V] A (outputs)
public final class Winograd3x3 {
    public let channels: Int
    public let filters: Int
    /// Transformed filters (16, C, F), transformed tiles (16, tiles, C) and their products
    /// (16, tiles, F), in buffers shared by all layers of one network (its `Scratch`):
    /// `setKernel` runs right before each `run`, and a network runs one layer at a time, so
    /// memory is the largest layer's, not the sum (≈ 100 MB less per rank for `resnet`).
    private let buffers: WinogradBuffers
    private var u: FloatBuffer { buffers.u }
    private var v: FloatBuffer { buffers.v }
    private var m: FloatBuffer { buffers.m }
    /// Tiles per chunk: the chunk's V and M stay within a few MB of cache.
    private let chunkTiles: Int

    public init(channels: Int, filters: Int, buffers: WinogradBuffers, chunkFloats: Int = 1 << 20) {
        self.channels = channels
        self.filters = filters
        self.buffers = buffers
        chunkTiles = max(8, chunkFloats / (16 * (channels + filters)))
        buffers.reserve(u: 16 * channels * filters, v: 16 * chunkTiles * channels, m: 16 * chunkTiles * filters)
        zeros = FloatBuffer(count: channels)
        temp = FloatBuffer(count: 16 * max(channels, filters, 1))
    }

    /// Transforms a Keras kernel (3, 3, C, F); call whenever the weights change.
    public func setKernel(_ w: UnsafePointer<Float>) {
        let c = channels, f = filters, stride = c * f
        let u = self.u.pointer
        for ch in 0..<c {
            for k in 0..<f {
                // g[r][s] = w[(r*3+s)*C*F + ch*F + k]; (G g) is 4×3, then (G g) Gᵀ is 4×4.
                let src = w + ch * f + k
                let gg = temp.pointer
                for s in 0..<3 {
                    let g0 = src[s * stride], g1 = src[(3 + s) * stride], g2 = src[(6 + s) * stride]
                    gg[s] = g0
                    gg[3 + s] = 0.5 * (g0 + g1 + g2)
                    gg[6 + s] = 0.5 * (g0 - g1 + g2)
                    gg[9 + s] = g2
                }
                let dst = u + ch * f + k
                for r in 0..<4 {
                    let a = gg[r * 3], b = gg[r * 3 + 1], d = gg[r * 3 + 2]
                    dst[(r * 4) * stride] = a
                    dst[(r * 4 + 1) * stride] = 0.5 * (a + b + d)
                    dst[(r * 4 + 2) * stride] = 0.5 * (a - b + d)
                    dst[(r * 4 + 3) * stride] = d
                }
            }
        }
    }

    /// y (n, H, W, F) = x (n, H, W, C) ⊛ kernel, or y += it when `accumulate`.
    public func run(input x: UnsafePointer<Float>, images n: Int, height h: Int, width w: Int,
                    output y: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let c = channels, f = filters
        let tilesHigh = (h + 1) / 2, tilesWide = (w + 1) / 2
        let perImage = tilesHigh * tilesWide
        let total = n * perImage
        let vp = v.pointer, mp = m.pointer
        var start = 0
        while start < total {
            let count = min(chunkTiles, total - start)
            // Input transform: V[ξ][t][c]
            for t in 0..<count {
                let tile = start + t
                let image = tile / perImage, within = tile - image * perImage
                let ty = within / tilesWide, tx = within - ty * tilesWide
                let base = x + image * h * w * c
                transformInput(base, h: h, w: w, row: 2 * ty - 1, col: 2 * tx - 1, into: vp + t * c, tileStride: count * c)
            }
            for xi in 0..<16 {
                gemm(m: count, n: f, k: c, a: vp + xi * count * c, lda: c, b: u.pointer + xi * c * f, ldb: f,
                     beta: 0, c: mp + xi * count * f, ldc: f)
            }
            // Output transform
            for t in 0..<count {
                let tile = start + t
                let image = tile / perImage, within = tile - image * perImage
                let ty = within / tilesWide, tx = within - ty * tilesWide
                transformOutput(mp + t * f, tileStride: count * f, into: y + image * h * w * f, h: h, w: w,
                                row: 2 * ty, col: 2 * tx, accumulate: accumulate)
            }
            start += count
        }
    }

    /// V = Bᵀ d B for the 4×4 tile whose top-left input pixel is (row, col), zero outside.
    @inline(__always)
    private func transformInput(_ image: UnsafePointer<Float>, h: Int, w: Int, row: Int, col: Int,
                                into v: UnsafeMutablePointer<Float>, tileStride: Int) {
        let c = channels
        // d[r][s] pointers (nil = zero padding)
        let zero = UnsafePointer(zeros.pointer)
        let d = tilePointers
        for i in 0..<16 { d[i] = zero }
        for r in 0..<4 {
            let ih = row + r
            guard ih >= 0, ih < h else { continue }
            for s in 0..<4 {
                let iw = col + s
                guard iw >= 0, iw < w else { continue }
                d[r * 4 + s] = image + (ih * w + iw) * c
            }
        }
        // tmp = Bᵀ d (rows), then V = tmp B (columns), channel by channel.
        let t = temp.pointer
        for s in 0..<4 {
            let d0 = d[s], d1 = d[4 + s], d2 = d[8 + s], d3 = d[12 + s]
            let t0 = t + s * c, t1 = t + (4 + s) * c, t2 = t + (8 + s) * c, t3 = t + (12 + s) * c
            for k in 0..<c {
                t0[k] = d0[k] - d2[k]
                t1[k] = d1[k] + d2[k]
                t2[k] = d2[k] - d1[k]
                t3[k] = d1[k] - d3[k]
            }
        }
        for r in 0..<4 {
            let a0 = t + (r * 4) * c, a1 = a0 + c, a2 = a1 + c, a3 = a2 + c
            let v0 = v + (r * 4) * tileStride, v1 = v0 + tileStride, v2 = v1 + tileStride, v3 = v2 + tileStride
            for k in 0..<c {
                v0[k] = a0[k] - a2[k]
                v1[k] = a1[k] + a2[k]
                v2[k] = a2[k] - a1[k]
                v3[k] = a1[k] - a3[k]
            }
        }
    }

    /// Y = Aᵀ M A: the 2×2 outputs at (row, col), clipped to the image.
    @inline(__always)
    private func transformOutput(_ m: UnsafePointer<Float>, tileStride: Int, into y: UnsafeMutablePointer<Float>,
                                 h: Int, w: Int, row: Int, col: Int, accumulate: Bool) {
        let f = filters
        let t = temp.pointer
        // tmp (2×4) = Aᵀ M: rows 0 = m0 + m1 + m2, 1 = m1 − m2 − m3
        for s in 0..<4 {
            let m0 = m + s * tileStride, m1 = m + (4 + s) * tileStride, m2 = m + (8 + s) * tileStride,
                m3 = m + (12 + s) * tileStride
            let t0 = t + s * f, t1 = t + (4 + s) * f
            for k in 0..<f {
                t0[k] = m0[k] + m1[k] + m2[k]
                t1[k] = m1[k] - m2[k] - m3[k]
            }
        }
        for r in 0..<2 {
            let oh = row + r
            guard oh < h else { continue }
            let a0 = t + (r * 4) * f, a1 = a0 + f, a2 = a1 + f, a3 = a2 + f
            let out0 = y + (oh * w + col) * f
            if accumulate {
                for k in 0..<f { out0[k] += a0[k] + a1[k] + a2[k] }
            } else {
                for k in 0..<f { out0[k] = a0[k] + a1[k] + a2[k] }
            }
            guard col + 1 < w else { continue }
            let out1 = out0 + f
            if accumulate {
                for k in 0..<f { out1[k] += a1[k] - a2[k] - a3[k] }
            } else {
                for k in 0..<f { out1[k] = a1[k] - a2[k] - a3[k] }
            }
        }
    }

    /// A channel vector of zeros (the padding), a 16-vector work area, the tile's 16 pixel pointers.
    private let zeros: FloatBuffer
    private let temp: FloatBuffer
    private let tilePointers = UnsafeMutablePointer<UnsafePointer<Float>>.allocate(capacity: 16)

    deinit { tilePointers.deallocate() }

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

extension Winograd3x3: WinogradConvolution {}
