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

    /// P made orthonormal (`catdog_powersgd_orthonormalize`, Gram–Schmidt in double): on every
    /// instruction set the same bits; the vectors come out of unit length and orthogonal to
    /// 1e-6, the first along the first input (cosine 1 to 1e-5), and a vector that is the sum of
    /// the first two plus 1e-4 of noise still comes out orthogonal to them (1e-4).
    func testOrthonormalizationIsTheSameOnEveryInstructionSet() throws {
        for (length, vectors) in [(5, 3), (16, 1), (37, 4), (288, 8), (2304, 16)] {
            var random = Random(seed: UInt64(length * 100 + vectors))
            var input = (0..<(length * vectors)).map { _ in random.uniform(-1, 1) }
            if vectors >= 3 {  // the last vector nearly the sum of the first two
                for i in 0..<length { input[(vectors - 1) * length + i] = input[i] + input[length + i] + 1e-4 * random.uniform(-1, 1) }
            }
            var first: (set: KernelInstructionSet, bits: [UInt32])?
            let ran = forEachKernelInstructionSet { kernels in
                let what = "\(kernels), \(vectors) vectors of \(length)"
                let v = FloatBuffer(input), work = UnsafeMutablePointer<Double>.allocate(capacity: length * vectors)
                defer { work.deallocate() }
                catdog_powersgd_orthonormalize(v.pointer, length, vectors, work)
                let out = v.array
                func dot(_ a: Int, _ b: Int) -> Double { (0..<length).reduce(0.0) { $0 + Double(out[a * length + $1]) * Double(out[b * length + $1]) } }
                for a in 0..<vectors {
                    XCTAssertEqual(dot(a, a), 1, accuracy: 1e-6, "\(what): vector \(a)'s length")
                    for b in 0..<a { XCTAssertEqual(dot(a, b), 0, accuracy: a == vectors - 1 && vectors >= 3 ? 1e-4 : 1e-6, "\(what): \(a) · \(b)") }
                }
                // Vector 0 is input 0 scaled: their cosine is 1.
                let norm0 = (0..<length).reduce(0.0) { $0 + Double(input[$1]) * Double(input[$1]) }.squareRoot()
                let cosine = (0..<length).reduce(0.0) { $0 + Double(input[$1]) * Double(out[$1]) } / norm0
                XCTAssertEqual(cosine, 1, accuracy: 1e-5, "\(what): vector 0 follows input 0")
                let bits = out.map(\.bitPattern)
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
