import CatdogEngine
import CatdogSupport
import XCTest

/// The dense layer's products against a double-precision reference.
final class DenseTests: XCTestCase {
    /// 32 units: a width our fp32 gemm takes on an AVX-512 CPU (forward and dW there; dX and
    /// other CPUs on OpenBLAS), under every product option: our gemm, BLAS, and `--precision
    /// bf16`, where the dense layers stay fp32. Forward, dX, dW and the bias gradient must equal
    /// the double reference to fp32 rounding: 1e-5 of the largest reference value (bf16 operands
    /// would be ~1e-3 off).
    func testProductsMatchTheDoubleReferenceUnderEveryOption() throws {
        var options: [(String, ConvolutionOptions)] = [("own gemm", .init()), ("BLAS", .init(multiply: .blas))]
        if Precision.bf16.unavailableReason == nil { options.append(("bf16", .init(precision: .bf16))) }
        let shape = FeatureShape(height: 3, width: 4, channels: 5), batch = 6, units = 32, k = shape.count
        var random = Random(seed: 12)
        let dy = (0..<batch * units).map { _ in random.uniform(-1, 1) }
        for (name, convolution) in options {
            let h = try LayerHarness(Dense(units), inputs: [shape], batch: batch, seed: 4, convolution: convolution)
            let x = h.inputs[0].array, w = Array(h.parameters.array[0..<k * units]), b = Array(h.parameters.array[(k * units)...])
            h.forward()
            h.backward(dy)
            var y = [Double](repeating: 0, count: batch * units), dx = [Double](repeating: 0, count: batch * k)
            var dw = [Double](repeating: 0, count: k * units), db = [Double](repeating: 0, count: units)
            for n in 0..<batch {
                for u in 0..<units {
                    y[n * units + u] = Double(b[u])
                    db[u] += Double(dy[n * units + u])
                    for i in 0..<k {
                        y[n * units + u] += Double(x[n * k + i]) * Double(w[i * units + u])
                        dx[n * k + i] += Double(dy[n * units + u]) * Double(w[i * units + u])
                        dw[i * units + u] += Double(x[n * k + i]) * Double(dy[n * units + u])
                    }
                }
            }
            for (part, got, want) in [("forward", h.output.array, y), ("dX", h.dInputs[0].array, dx),
                                      ("dW", Array(h.gradients.array[0..<k * units]), dw),
                                      ("dBias", Array(h.gradients.array[(k * units)...]), db)] {
                let scale = want.map(abs).max() ?? 1
                let worst = zip(got, want).map { abs(Double($0) - $1) }.max() ?? .infinity
                XCTAssertLessThan(worst, 1e-5 * scale, "\(name) \(part): \(worst) from the double reference (largest value \(scale))")
            }
        }
    }
}
