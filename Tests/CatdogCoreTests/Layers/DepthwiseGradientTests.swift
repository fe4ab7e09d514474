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
}
