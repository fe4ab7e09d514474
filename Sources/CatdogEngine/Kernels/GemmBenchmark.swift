import CatdogSupport
import Foundation

/// How close the products come to one core's peak (`bench --gemm`): the peak from register-only
/// loops (fp32 FMAs, bf16 `vdpbf16ps`), then OpenBLAS's sgemm, our fp32 gemm and our bf16 gemm
/// on the shapes Winograd's 36 products take in `resnet` at 64 px (a local batch of 32: tiles ×
/// input channels × output channels, one per stage), rounds alternating between the three.
public enum GemmBenchmark {
    public struct Shape: Sendable, Codable {
        public let m: Int, k: Int, n: Int
        public var flops: Double { 2 * Double(m) * Double(k) * Double(n) }
    }

    /// resnet's four stages at 64 px, 32 images: 2,048, 512, 128 and 32 tiles of 4×4.
    public static let resnetShapes = [Shape(m: 2048, k: 32, n: 32), Shape(m: 512, k: 64, n: 64),
                                      Shape(m: 128, k: 128, n: 128), Shape(m: 32, k: 256, n: 256)]

    public struct Row: Sendable, Codable {
        public let shape: Shape
        /// GFLOP/s per round, in round order. `bf16` multiplies operands packed beforehand;
        /// `bf16_packing` packs them from fp32 in each product, as training does.
        public let openblas: [Double], own: [Double], bf16: [Double], bf16_packing: [Double]
    }

    public struct Result: Sendable, Codable {
        public let peak_fp32: [Double]
        public let peak_bf16: [Double]
        public let rows: [Row]
    }

    /// GFLOP/s of `body` (one product of `flops`) repeated for at least `seconds`.
    static func rate(flops: Double, seconds: Double, _ body: () -> Void) -> Double {
        body()  // warm the caches and the code
        var repeats = 0
        let start = Date()
        var elapsed = 0.0
        repeat {
            body()
            repeats += 1
            elapsed = Date().timeIntervalSince(start)
        } while elapsed < seconds
        return flops * Double(repeats) / elapsed * 1e-9
    }

    public static func run(shapes: [Shape] = resnetShapes, rounds: Int = 3, seconds: Double = 0.2) -> Result {
        var peak32: [Double] = [], peak16: [Double] = []
        var results = shapes.map { _ in (openblas: [Double](), own: [Double](), bf16: [Double](), bf16Packing: [Double]()) }
        var random = Random(seed: 1)
        let operands = shapes.map { s in
            (a: FloatBuffer((0..<(s.m * s.k)).map { _ in random.uniform(-1, 1) }),
             b: FloatBuffer((0..<(s.k * s.n)).map { _ in random.uniform(-1, 1) }), c: FloatBuffer(count: s.m * s.n))
        }
        let packed = zip(shapes, operands).map { s, o in
            (a: BF16Gemm.packA(o.a.pointer, m: s.m, k: s.k, lda: s.k), b: BF16Gemm.packB(o.b.pointer, k: s.k, n: s.n, ldb: s.n))
        }
        for _ in 0..<rounds {
            let peak = BF16Gemm.peak(seconds: seconds)
            peak32.append(peak.fp32)
            peak16.append(peak.bf16)
            for (i, s) in shapes.enumerated() {
                let o = operands[i]
                results[i].openblas.append(rate(flops: s.flops, seconds: seconds) {
                    gemm(m: s.m, n: s.n, k: s.k, a: o.a.pointer, lda: s.k, b: o.b.pointer, ldb: s.n, beta: 0, c: o.c.pointer, ldc: s.n)
                })
                results[i].own.append(ownGemmTakes(width: s.n) ? rate(flops: s.flops, seconds: seconds) {
                    _ = ownGemm(m: s.m, n: s.n, k: s.k, a: o.a.pointer, rowStrideA: s.k, columnStrideA: 1, b: o.b.pointer, ldb: s.n,
                                c: o.c.pointer, ldc: s.n, accumulate: false)
                } : 0)
                results[i].bf16.append(BF16Gemm.available ? rate(flops: s.flops, seconds: seconds) {
                    BF16Gemm.multiply(m: s.m, n: s.n, k: s.k, a: packed[i].a, b: packed[i].b, c: o.c.pointer, ldc: s.n, accumulate: false)
                } : 0)
                results[i].bf16Packing.append(BF16Gemm.available ? rate(flops: s.flops, seconds: seconds) {
                    multiply(route: .bf16, m: s.m, n: s.n, k: s.k, a: o.a.pointer, rowStrideA: s.k, columnStrideA: 1, b: o.b.pointer,
                             ldb: s.n, c: o.c.pointer, ldc: s.n, accumulate: false)
                } : 0)
            }
        }
        return Result(peak_fp32: peak32, peak_bf16: peak16,
                      rows: zip(shapes, results).map { Row(shape: $0, openblas: $1.openblas, own: $1.own, bf16: $1.bf16, bf16_packing: $1.bf16Packing) })
    }
}
