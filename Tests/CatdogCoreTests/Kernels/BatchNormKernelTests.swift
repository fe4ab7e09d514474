import CKernels
import CatdogEngine
import CatdogSupport
import XCTest

/// BatchNorm's one-pass kernels on every instruction set this CPU runs, against double-precision
/// references: the per-channel mean and variance (`catdog_channel_moments`, sums of the values
/// less the first row's), and the gradient sums after the activation's mask
/// (`catdog_batchnorm_gradient_sums`).
final class BatchNormKernelTests: XCTestCase {
    /// Channel counts with vector tails; one row; rows all equal (variance exactly 0); and a
    /// channel whose mean is 10⁶ times its spread, where Σx² − n·mean² in double would keep only
    /// a few digits. Tolerance: 1e-9 relative to the reference (+1e-12 absolute), far inside float.
    func testChannelMomentsMatchATwoPassReference() throws {
        var random = Random(seed: 31)
        let ran = forEachKernelInstructionSet { kernels in
            for (rows, c) in [(1, 3), (7, 17), (64, 32), (300, 40), (9, 75)] {
                // Channel k: values around a centre of 10^(k % 7 - 1), spread 10^-(k % 3).
                var x = [Float](repeating: 0, count: rows * c)
                for r in 0..<rows { for k in 0..<c {
                    let centre = Float(pow(10, Double(k % 7) - 1)), spread = Float(pow(10, -Double(k % 3)))
                    x[r * c + k] = k == c - 1 && rows > 1 ? 0.75 : centre + spread * random.uniform(-1, 1)
                } }
                if c > 4 { for r in 0..<rows { x[r * c + 4] = 1e5 + 0.1 * random.uniform(-1, 1) } }
                var mean = [Double](repeating: .nan, count: c), variance = [Double](repeating: .nan, count: c)
                catdog_channel_moments(x, rows, c, &mean, &variance)
                for k in 0..<c {
                    let values = (0..<rows).map { Double(x[$0 * c + k]) }
                    let m = values.reduce(0, +) / Double(rows)
                    let v = values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(rows)
                    XCTAssertEqual(mean[k], m, accuracy: 1e-12 + 1e-9 * abs(m), "\(kernels): mean of channel \(k), \(rows) x \(c)")
                    XCTAssertEqual(variance[k], v, accuracy: 1e-12 + 1e-9 * abs(v), "\(kernels): variance of channel \(k), \(rows) x \(c)")
                    if k == c - 1, rows > 1 { XCTAssertEqual(variance[k], 0, "\(kernels): equal values have no variance") }
                }
            }
        }
        XCTAssertGreaterThanOrEqual(ran.count, 2, "fewer than two instruction sets ran")
    }

    /// The mask (linear, ReLU, ReLU6, judged by the activation's input v = γ·x̂ + β recomputed
    /// from x) written into dy, and the sums Σ dy and Σ dy·x̂ of the masked dy, x̂ = (x − mean)·(1/σ)
    /// recomputed from x as forward rounds it: the mask exactly where v is not within a rounding
    /// of 0 or 6 (v with and without a fused multiply-add agree there; the instruction sets
    /// differ in which they take), the sums to 1e-9 relative of a double reference. A forward
    /// over the same values (`catdog_batchnorm_forward`) gives outputs that pass exactly where v
    /// did: the mask from v is the mask from the output, bit for bit, on every instruction set.
    func testGradientSumsApplyTheActivationsMask() throws {
        var random = Random(seed: 32)
        let ran = forEachKernelInstructionSet { kernels in
            // 19 channels: the kernels' narrow blocks only; 75: their widest blocks (32 channels
            // on AVX-512, 16 on AVX2, 8 on the baseline), then blocks of 8 and single channels.
            for (activation, code) in [(Activation.linear, Int32(0)), (.relu, 1), (.relu6, 2)] { for (rows, c) in [(37, 19), (21, 75)] {
                let dy0 = (0..<(rows * c)).map { _ in random.uniform(-1, 1) }, x = (0..<(rows * c)).map { _ in random.uniform(-3, 5) }
                let mean = (0..<c).map { _ in random.uniform(-1, 2) }, inverse = (0..<c).map { _ in random.uniform(0.2, 3) }
                let gamma = (0..<c).map { _ in random.uniform(0.5, 2) }, beta = (0..<c).map { _ in random.uniform(-1, 3) }
                let xhat = (0..<(rows * c)).map { (x[$0] - mean[$0 % c]) * inverse[$0 % c] }
                let passes: (Float) -> Bool = { v in code == 0 || (v > 0 && (code == 1 || v < 6)) }
                // Elements whose mask does not depend on how v is rounded.
                let v = (0..<(rows * c)).map { beta[$0 % c].addingProduct(gamma[$0 % c], xhat[$0]) }
                let unfused = (0..<(rows * c)).map { gamma[$0 % c] * xhat[$0] + beta[$0 % c] }
                let clear = (0..<(rows * c)).filter { passes(v[$0]) == passes(unfused[$0]) }
                XCTAssertGreaterThan(clear.count, rows * c - 3, "\(kernels), \(activation): too many values at the mask's edge")
                var dy = dy0
                var sum = [Double](repeating: .nan, count: c), dot = [Double](repeating: .nan, count: c)
                catdog_batchnorm_gradient_sums(gamma, beta, &dy, x, mean, inverse, rows, c, code, &sum, &dot)
                for i in clear { XCTAssertEqual(dy[i], passes(v[i]) ? dy0[i] : 0, "\(kernels), \(activation): the masked gradient at \(i)") }
                // The mask from v against the mask from forward's output, every element.
                var y = [Float](repeating: .nan, count: rows * c)
                catdog_batchnorm_forward(x, mean, inverse, gamma, beta, &y, rows, c, code)
                for i in 0..<(rows * c) {
                    XCTAssertEqual(dy[i], passes(y[i]) ? dy0[i] : 0, "\(kernels), \(activation): the mask differs from the output's at \(i)")
                }
                for k in 0..<c {
                    let s = (0..<rows).reduce(0.0) { $0 + Double(dy[$1 * c + k]) }
                    let d = (0..<rows).reduce(0.0) { $0 + Double(dy[$1 * c + k] * xhat[$1 * c + k]) }
                    XCTAssertEqual(sum[k], s, accuracy: 1e-9 * max(1, abs(s)), "\(kernels), \(activation): Σ dy of channel \(k)")
                    XCTAssertEqual(dot[k], d, accuracy: 1e-9 * max(1, abs(d)), "\(kernels), \(activation): Σ dy·x̂ of channel \(k), \(rows) x \(c)")
                }
            } }
        }
        XCTAssertGreaterThanOrEqual(ran.count, 2, "fewer than two instruction sets ran")
    }
}
