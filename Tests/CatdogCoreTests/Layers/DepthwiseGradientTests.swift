import CatdogEngine
import CatdogSupport
import XCTest

final class DepthwiseGradientTests: XCTestCase {
    func testDepthwiseSameStride1WithBias() throws {
        try LayerHarness(DepthwiseConv2D(3, useBias: true), inputs: [.init(height: 5, width: 6, channels: 4)], batch: 2).checkGradients()
    }

    func testDepthwiseSameStride2Kernel5AsymmetricPadding() throws {
        try LayerHarness(DepthwiseConv2D(5, stride: 2), inputs: [.init(height: 8, width: 7, channels: 3)], batch: 2).checkGradients()
    }

    /// Against the dense convolution reference: a depthwise kernel is a dense kernel that is
    /// zero off the channel diagonal. Tolerance 1e-5.
    func testDepthwiseMatchesDenseReferenceWithDiagonalKernel() throws {
        let h = try LayerHarness(DepthwiseConv2D(3, stride: 2), inputs: [.init(height: 9, width: 8, channels: 3)], batch: 2)
        h.forward()
        let g = (h.layer as! DepthwiseConv2D).geometry!
        var dense = [Float](repeating: 0, count: 3 * 3 * 3 * 3)
        for kh in 0..<3 { for kw in 0..<3 { for c in 0..<3 { dense[((kh * 3 + kw) * 3 + c) * 3 + c] = h.parameters[(kh * 3 + kw) * 3 + c] } } }
        let expected = ReferenceConv.forward(g, images: 2, filters: 3, input: h.inputs[0].array, kernel: dense, bias: [0, 0, 0])
        assertClose(h.output.array, expected, absolute: 1e-5, "depthwise forward")
    }

    /// The C kernels on every instruction set this CPU runs against a direct loop in double
    /// precision, forward and backward (dx, the kernel's and the bias's gradients), on shapes
    /// that take both of their paths: 16-channel blocks of four interior pixels, and single
    /// pixels at the borders, at channel counts that are not a multiple of 16, or in rows too
    /// narrow for a block. Relative tolerance 1e-5 of the largest magnitude.
    func testKernelsMatchADoublePrecisionLoopOnEveryInstructionSet() throws {
        let shapes: [(h: Int, w: Int, c: Int, k: Int, stride: Int, bias: Bool)] = [
            (9, 13, 32, 3, 1, true), (10, 11, 16, 5, 2, false), (7, 20, 48, 5, 1, false), (8, 9, 19, 3, 2, true),
            (3, 5, 16, 3, 1, false), (12, 12, 16, 3, 2, true)]
        let ran = try forEachKernelInstructionSet { kernels in
            for shape in shapes {
                let label = "\(kernels) \(shape)"
                let h = try LayerHarness(DepthwiseConv2D(shape.k, stride: shape.stride, useBias: shape.bias),
                                         inputs: [.init(height: shape.h, width: shape.w, channels: shape.c)], batch: 2)
                let g = (h.layer as! DepthwiseConv2D).geometry!
                var random = Random(seed: 5)
                let upstream = (0..<h.output.count).map { _ in random.uniform(-1, 1) }
                h.forward()
                h.backward(upstream)
                let reference = DepthwiseReference(g, batch: 2, kernel: shape.k, stride: shape.stride, x: h.inputs[0].array,
                                                   parameters: h.parameters.array, bias: shape.bias, dy: upstream)
                // 1e-5 of the largest magnitude expected.
                func tolerance(_ v: [Double]) -> Float { Float(1e-5 * (v.map(abs).max() ?? 0)) }
                assertClose(h.output.array, reference.y.map(Float.init), absolute: tolerance(reference.y), "\(label): y")
                assertClose(h.dInputs[0].array, reference.dx.map(Float.init), absolute: tolerance(reference.dx), "\(label): dx")
                assertClose(h.gradients.array, reference.dParameters.map(Float.init), absolute: tolerance(reference.dParameters),
                            "\(label): dkernel, dbias")
            }
        }
        XCTAssertTrue(ran.contains(.baseline))
    }

    func testBlockedShapesHaveGradientsThatMatchFiniteDifferences() throws {
        try LayerHarness(DepthwiseConv2D(3, useBias: true), inputs: [.init(height: 6, width: 11, channels: 16)], batch: 2).checkGradients()
        try LayerHarness(DepthwiseConv2D(5, stride: 2), inputs: [.init(height: 9, width: 14, channels: 32)], batch: 1).checkGradients()
    }
}

/// Depthwise convolution as a direct loop in double precision: the definition the kernels
/// are checked against.
struct DepthwiseReference {
    var y: [Double], dx: [Double], dParameters: [Double]

    init(_ g: ConvGeometry, batch: Int, kernel k: Int, stride: Int, x: [Float], parameters: [Float], bias: Bool, dy: [Float]) {
        let c = g.channels
        y = [Double](repeating: 0, count: batch * g.outHeight * g.outWidth * c)
        dx = [Double](repeating: 0, count: x.count)
        dParameters = [Double](repeating: 0, count: parameters.count)
        for n in 0..<batch {
            for oh in 0..<g.outHeight {
                for ow in 0..<g.outWidth {
                    let out = ((n * g.outHeight + oh) * g.outWidth + ow) * c
                    for ch in 0..<c {
                        var sum = bias ? Double(parameters[k * k * c + ch]) : 0
                        if bias { dParameters[k * k * c + ch] += Double(dy[out + ch]) }
                        for kh in 0..<k {
                            let ih = oh * stride - g.padTop + kh
                            guard ih >= 0, ih < g.inHeight else { continue }
                            for kw in 0..<k {
                                let iw = ow * stride - g.padLeft + kw
                                guard iw >= 0, iw < g.inWidth else { continue }
                                let at = ((n * g.inHeight + ih) * g.inWidth + iw) * c + ch, tap = (kh * k + kw) * c + ch
                                sum += Double(x[at]) * Double(parameters[tap])
                                dParameters[tap] += Double(x[at]) * Double(dy[out + ch])
                                dx[at] += Double(parameters[tap]) * Double(dy[out + ch])
                            }
                        }
                        y[out + ch] = sum
                    }
                }
            }
        }
    }
}
