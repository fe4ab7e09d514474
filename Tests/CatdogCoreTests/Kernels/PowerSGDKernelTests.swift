import CKernels
import CatdogEngine
import CatdogSupport
import XCTest

/// PowerSGD's passes over a gradient matrix (`catdog_powersgd_project`, `_back_project`,
/// `_finish`) on every instruction set this CPU runs. Shapes with whole 16-column blocks and
/// with a tail, ranks that take the 4-, 2- and 1-factor paths (1, 2, 3, 4, 7). The products
/// P = (M + E) Q and Q = Mᵀ P must come within fp32 summation error of a double reference
/// (|error| ≤ n · 2⁻²³ · Σ|a·b|, n the length of the sum); every instruction set must give the
/// same bits (a lab of mixed machines compresses alike); and the finish must give exactly the
/// bits of its formula evaluated in Swift, k ascending from 0: a = Σ p·q, e = M − a·share, M = a.
final class PowerSGDKernelTests: XCTestCase {
    /// The sum of `n` terms in double, and the bound n · 2⁻²³ · Σ|term| on an fp32 sum's error.
    static func reference(_ n: Int, _ term: (Int) -> Double) -> (exact: Double, bound: Double) {
        var exact = 0.0, magnitude = 0.0
        for t in 0..<n {
            let x = term(t)
            exact += x
            magnitude += abs(x)
        }
        return (exact, Double(n) * 0x1p-23 * magnitude)
    }

    func testThePassesMatchTheirReferencesAndEveryInstructionSetAgrees() throws {
        let cases = [(rows: 72, cols: 16, rank: 2), (rows: 288, cols: 32, rank: 4), (rows: 45, cols: 37, rank: 3),
                     (rows: 9, cols: 70, rank: 7), (rows: 130, cols: 5, rank: 1), (rows: 2304, cols: 256, rank: 4)]
        for c in cases {
            var random = Random(seed: UInt64(c.rows * 1000 + c.cols * 10 + c.rank))
            func values(_ n: Int) -> [Float] { (0..<n).map { _ in random.uniform(-1, 1) } }
            let gradient = values(c.rows * c.cols), error = values(c.rows * c.cols)
            let qIn = values(c.rank * c.cols), pIn = values(c.rank * c.rows)
            let share: Float = 1 / 3
            var first: (set: KernelInstructionSet, bits: [UInt32])?
            let ran = forEachKernelInstructionSet { kernels in
                let what = "\(kernels), \(c.rows) x \(c.cols), rank \(c.rank)"
                // P = (M + E) Q.
                let g = FloatBuffer(gradient), e = FloatBuffer(error), q = FloatBuffer(qIn)
                let p = FloatBuffer([Float](repeating: .nan, count: c.rank * c.rows))
                catdog_powersgd_project(g.pointer, e.pointer, q.pointer, p.pointer, c.rows, c.cols, c.rank)
                let sum = g.array
                XCTAssertEqual(sum, zip(gradient, error).map { $0 + $1 }, "\(what): M + E")
                for k in 0..<c.rank {
                    for i in 0..<c.rows {
                        let r = Self.reference(c.cols) { j in Double(sum[i * c.cols + j]) * Double(qIn[k * c.cols + j]) }
                        XCTAssertLessThanOrEqual(abs(Double(p[k * c.rows + i]) - r.exact), r.bound, "\(what): p[\(k)][\(i)]")
                    }
                }
                // Q = Mᵀ P, from a P of our own (the all-reduced one, in training).
                let pGiven = FloatBuffer(pIn), qOut = FloatBuffer([Float](repeating: .nan, count: c.rank * c.cols))
                catdog_powersgd_back_project(g.pointer, pGiven.pointer, qOut.pointer, c.rows, c.cols, c.rank)
                for k in 0..<c.rank {
                    for j in 0..<c.cols {
                        let r = Self.reference(c.rows) { i in Double(pIn[k * c.rows + i]) * Double(sum[i * c.cols + j]) }
                        XCTAssertLessThanOrEqual(abs(Double(qOut[k * c.cols + j]) - r.exact), r.bound, "\(what): q[\(k)][\(j)]")
                    }
                }
                // M ← P Qᵀ, E ← M − P Qᵀ · share.
                catdog_powersgd_finish(g.pointer, e.pointer, pGiven.pointer, q.pointer, c.rows, c.cols, c.rank, share)
                var wrong = 0
                for i in 0..<c.rows {
                    for j in 0..<c.cols {
                        var a: Float = 0
                        for k in 0..<c.rank { a = a + pIn[k * c.rows + i] * qIn[k * c.cols + j] }
                        let m = sum[i * c.cols + j]
                        let expectedError = m - a * share
                        if g[i * c.cols + j].bitPattern != a.bitPattern || e[i * c.cols + j].bitPattern != expectedError.bitPattern {
                            wrong += 1
                        }
                    }
                }
                XCTAssertEqual(wrong, 0, "\(what): \(wrong) of \(c.rows * c.cols) elements of the finish differ from the formula's bits")
                let bits = (sum + p.array + qOut.array + g.array + e.array).map(\.bitPattern)
                if let first {
                    XCTAssert(bits == first.bits, "\(what): other bits than \(first.set)")
                } else {
                    first = (kernels, bits)
                }
            }
            XCTAssertGreaterThanOrEqual(ran.count, 2, "fewer than two instruction sets ran")
        }
    }
}
