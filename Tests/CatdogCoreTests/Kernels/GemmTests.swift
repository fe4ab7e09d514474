import CatdogEngine
import CatdogSupport
import XCTest

/// Our gemm (Winograd's products) against a double-precision triple loop, with each of its
/// kernels this CPU runs (AVX-512's 8 × 32 blocks, AVX2's 6 × 16): A plain and transposed, row
/// counts with and without a remainder of either's blocks (1–5 rows, and 7 or 8 that AVX2 splits
/// into two), widths of one and several 16- and 32-column panels, k from 1 to a few hundred (more
/// than one slice of k), stored and accumulated (a C of 1 MB or more too, which the kernels fetch
/// ahead when they add into it). Float sums of up to 300 products of values in [-1, 1]: 1e-4
/// absolute + 1e-5 relative.
final class GemmTests: XCTestCase {
    func testOwnGemmMatchesReferenceOnWinogradShapes() throws {
        defer { try? KernelInstructionSet.auto.select() }
        let probe = FloatBuffer(count: 16)
        var tested: [String] = []
        for kernels in [KernelInstructionSet.avx512f, .avx2] {
            guard (try? kernels.select()) != nil else { continue }
            XCTAssertTrue(ownGemm(m: 1, n: 16, k: 1, a: probe.pointer, rowStrideA: 1, columnStrideA: 1, b: probe.pointer, ldb: 16,
                                  c: probe.pointer, ldc: 16, accumulate: false), "our gemm declined a product with \(kernels) kernels")
            try assertOwnGemmMatchesReference(kernels.rawValue)
            tested.append(kernels.rawValue)
        }
        // Baseline kernels leave every product to BLAS.
        if (try? KernelInstructionSet.baseline.select()) != nil {
            XCTAssertFalse(ownGemm(m: 1, n: 16, k: 1, a: probe.pointer, rowStrideA: 1, columnStrideA: 1, b: probe.pointer, ldb: 16,
                                   c: probe.pointer, ldc: 16, accumulate: false), "our gemm took a product with baseline kernels")
        }
        if tested.isEmpty { throw XCTSkip("this CPU has neither AVX-512 nor AVX2 with FMA: the products use BLAS") }
    }

    private func assertOwnGemmMatchesReference(_ kernels: String) throws {
        let probe = FloatBuffer(count: 16)
        var random = Random(seed: 5)
        for (m, n, k) in [(1, 16, 1), (2, 32, 5), (3, 16, 9), (6, 48, 40), (7, 16, 3), (8, 32, 32), (13, 48, 17), (64, 64, 64), (455, 32, 32), (29, 256, 300), (256, 128, 57), (1030, 256, 20)] {
            for transposed in [false, true] {
                let a = (0..<(m * k)).map { _ in random.uniform(-1, 1) }, b = (0..<(k * n)).map { _ in random.uniform(-1, 1) }
                let start = (0..<(m * n)).map { _ in random.uniform(-1, 1) }
                // A(i, p): row-major (m, k), or stored as Aᵀ (k, m).
                let stored = transposed ? (0..<(k * m)).map { j in a[(j % m) * k + j / m] } : a
                let (rs, cs) = transposed ? (1, m) : (k, 1)
                var expected = [Double](repeating: 0, count: m * n)
                for i in 0..<m { for j in 0..<n { for p in 0..<k { expected[i * n + j] += Double(a[i * k + p]) * Double(b[p * n + j]) } } }
                for accumulate in [false, true] {
                    // A row of C past the m rows, which no kernel may write.
                    var c = start + [Float](repeating: 7, count: n)
                    let ran = stored.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                        ownGemm(m: m, n: n, k: k, a: ap.baseAddress!, rowStrideA: rs, columnStrideA: cs, b: bp.baseAddress!, ldb: n,
                                c: cp.baseAddress!, ldc: n, accumulate: accumulate)
                    } } }
                    XCTAssertTrue(ran)
                    let want = zip(expected, start).map { Float($0 + (accumulate ? Double($1) : 0)) }
                    XCTAssertEqual(Array(c[(m * n)...]), [Float](repeating: 7, count: n), "\(kernels) kernels wrote past C's \(m) rows")
                    assertClose(Array(c[0..<(m * n)]), want, absolute: 1e-4, relative: 1e-5, "\(kernels) kernels: \(m)x\(n)x\(k) transposed \(transposed) accumulate \(accumulate)")
                }
            }
        }
        // A width that is not a multiple of 16 is declined, and C left as it was.
        let c = FloatBuffer(count: 24)
        c[3] = 7
        XCTAssertFalse(ownGemm(m: 1, n: 24, k: 1, a: probe.pointer, rowStrideA: 1, columnStrideA: 1, b: c.pointer, ldb: 24,
                               c: c.pointer, ldc: 24, accumulate: false))
        XCTAssertEqual(c[3], 7)
    }
}
