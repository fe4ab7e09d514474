import CatdogEngine
import CatdogSupport
import Foundation
import XCTest

/// The bf16 gemm (`BF16Gemm`) against references in double.
final class BF16GemmTests: XCTestCase {
    /// Rounding to bf16 is to nearest, ties to even, on the top 16 bits of the fp32 pattern:
    /// 8 significant bits, so an error of at most 2⁻⁸ of the value.
    func testRoundingIsToNearestEven() {
        XCTAssertEqual(BF16Gemm.round(1), 1)
        XCTAssertEqual(BF16Gemm.round(1 + 1.0 / 256), 1)                       // a tie: down to even
        XCTAssertEqual(BF16Gemm.round(1 + 3.0 / 256), 1 + 4.0 / 256)           // a tie: up to even
        XCTAssertEqual(BF16Gemm.round(1 + 1.0 / 256 + 1.0 / 65536), 1 + 2.0 / 256)
        XCTAssertEqual(BF16Gemm.round(-2.5), -2.5)
        XCTAssertTrue(BF16Gemm.round(.nan).isNaN)
        XCTAssertEqual(BF16Gemm.round(.infinity), .infinity)
        var random = Random(seed: 5)
        for _ in 0..<10_000 {
            let x = random.uniform(-100, 100)
            XCTAssertLessThanOrEqual(abs(BF16Gemm.round(x) - x), abs(x) / 256, "\(x)")
        }
    }

    /// Every shape that matters (odd k, widths that are not multiples of 16 or 32, rows that
    /// are not multiples of 8, accumulating or not): C equals the double-precision product of
    /// the bf16-rounded operands within fp32 summation error (k · 2⁻²³ · Σ|ab|), and the exact
    /// product of the fp32 operands within bf16's bound 2⁻⁷ · Σ|ab|. A packing mistake or a
    /// product left out would break the first by far.
    func testProductsMatchDoubleReferences() throws {
        guard BF16Gemm.available else { throw XCTSkip("this CPU has no AVX512_BF16") }
        var random = Random(seed: 6)
        for (m, n, k) in Self.shapes {
            for accumulate in [false, true] {
                let a = (0..<(m * k)).map { _ in random.uniform(-1, 1) }
                let b = (0..<(k * n)).map { _ in random.uniform(-1, 1) }
                let start = (0..<(m * n)).map { _ in random.uniform(-1, 1) }
                var c = start
                let packedA = a.withUnsafeBufferPointer { BF16Gemm.packA($0.baseAddress!, m: m, k: k, lda: k) }
                let packedB = b.withUnsafeBufferPointer { BF16Gemm.packB($0.baseAddress!, k: k, n: n, ldb: n) }
                XCTAssertTrue(c.withUnsafeMutableBufferPointer {
                    BF16Gemm.multiply(m: m, n: n, k: k, a: packedA, b: packedB, c: $0.baseAddress!, ldc: n, accumulate: accumulate)
                })
                assertMatchesReferences(c, ldc: n, start: accumulate ? start : nil, m: m, n: n, k: k,
                                        a: { a[$0 * k + $1] }, b: { b[$0 * n + $1] }, "packed (\(m), \(n), \(k))")
            }
        }
    }

    /// The path training takes (`multiply(route: .bf16)`): fp32 operands rounded and packed in
    /// each product, A stored as is or transposed, row strides wider than the matrices. The
    /// same references and bounds as for operands packed beforehand.
    func testProductsFromFloatOperandsMatchDoubleReferences() throws {
        guard Precision.bf16.unavailableReason == nil else { throw XCTSkip("bf16 products cannot run here") }
        var random = Random(seed: 7)
        for (m, n, k) in Self.shapes {
            for transposed in [false, true] {
                let accumulate = transposed == (m % 2 == 0)
                // A(i, p) at a[i * rs + p * cs]: rows of k + 3 floats, or columns of m + 2.
                let (rs, cs) = transposed ? (1, m + 2) : (k + 3, 1)
                let a = (0..<(transposed ? k * cs : m * rs)).map { _ in random.uniform(-1, 1) }
                let ldb = n + 5, ldc = n + 1
                let b = (0..<(k * ldb)).map { _ in random.uniform(-1, 1) }
                let start = (0..<(m * ldc)).map { _ in random.uniform(-1, 1) }
                var c = start
                a.withUnsafeBufferPointer { a in
                    b.withUnsafeBufferPointer { b in
                        c.withUnsafeMutableBufferPointer { c in
                            multiply(route: .bf16, m: m, n: n, k: k, a: a.baseAddress!, rowStrideA: rs, columnStrideA: cs,
                                     b: b.baseAddress!, ldb: ldb, c: c.baseAddress!, ldc: ldc, accumulate: accumulate)
                        }
                    }
                }
                let label = "from fp32 (\(m), \(n), \(k)), A \(transposed ? "transposed" : "as is")"
                assertMatchesReferences(c, ldc: ldc, start: accumulate ? start : nil, m: m, n: n, k: k,
                                        a: { a[$0 * rs + $1 * cs] }, b: { b[$0 * ldb + $1] }, label)
                // The padding between rows of C stays as it was.
                for i in 0..<m { XCTAssertEqual(c[i * ldc + n], start[i * ldc + n], "\(label): C's padding at row \(i)") }
            }
        }
    }

    static let shapes = [(1, 1, 1), (8, 32, 2), (9, 33, 7), (16, 16, 64), (5, 48, 129), (36, 100, 256), (3, 7, 300)]

    /// C (m x n, row stride ldc) against Σ_p a(i, p) b(p, j) (plus `start` when accumulating):
    /// that of the bf16-rounded operands within fp32 summation error, that of the operands
    /// themselves within bf16's bound.
    private func assertMatchesReferences(_ c: [Float], ldc: Int, start: [Float]?, m: Int, n: Int, k: Int,
                                         a: (Int, Int) -> Float, b: (Int, Int) -> Float, _ label: String) {
        for i in 0..<m {
            for j in 0..<n {
                var rounded = start.map { Double($0[i * ldc + j]) } ?? 0, exact = rounded, magnitude = 0.0
                for p in 0..<k {
                    let x = a(i, p), y = b(p, j)
                    rounded += Double(BF16Gemm.round(x)) * Double(BF16Gemm.round(y))
                    exact += Double(x) * Double(y)
                    magnitude += abs(Double(x) * Double(y))
                }
                let got = Double(c[i * ldc + j])
                let summation = Double(k + 2) * pow(2, -23) * (magnitude + abs(rounded)) + 1e-7
                XCTAssertEqual(got, rounded, accuracy: summation, "\(label) at (\(i), \(j))")
                XCTAssertEqual(got, exact, accuracy: pow(2, -7) * magnitude * 1.01 + summation, "\(label) at (\(i), \(j))")
            }
        }
    }

    /// A row-major view with a row stride wider than k packs only the k values of each row.
    func testPackingHonoursTheRowStrides() {
        let m = 3, k = 5, lda = 8, n = 4, ldb = 6
        let a = (0..<(m * lda)).map { Float($0) }, b = (0..<(k * ldb)).map { Float($0) }
        let packedA = a.withUnsafeBufferPointer { BF16Gemm.packA($0.baseAddress!, m: m, k: k, lda: lda) }
        let packedB = b.withUnsafeBufferPointer { BF16Gemm.packB($0.baseAddress!, k: k, n: n, ldb: ldb) }
        let k2 = (k + 1) / 2
        for i in 0..<m {
            for p in 0..<k {
                XCTAssertEqual(BF16Gemm.round(a[i * lda + p]), Float(bf16: packedA[(i * k2 + p / 2) * 2 + p % 2]))
            }
            XCTAssertEqual(packedA[(i * k2 + k2 - 1) * 2 + 1], 0)  // the odd k's padding
        }
        for p in 0..<k {
            for j in 0..<n { XCTAssertEqual(BF16Gemm.round(b[p * ldb + j]), Float(bf16: packedB[((p / 2) * n + j) * 2 + p % 2])) }
        }
    }
}

private extension Float {
    init(bf16: UInt16) { self = Float(bitPattern: UInt32(bf16) << 16) }
}
