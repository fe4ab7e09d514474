import CatdogEngine
import CatdogSupport
import XCTest

/// The layers that write a fresh input gradient (`PassContext.freshInputGradients`) instead of
/// adding into a zeroed one: their gradients into buffers full of NaN, told to write, equal
/// exactly (==) those of the accumulating backward into zeros, input and parameter gradients alike.
/// `Network` relies on it to skip zeroing those buffers.
final class FreshGradientTests: XCTestCase {
    func testConvolutionsWriteFreshInputGradients() throws {
        let precisions: [Precision] = BF16Gemm.available && Precision.bf16.unavailableReason == nil ? [.fp32, .bf16] : [.fp32]
        let algorithms: [(ConvolutionOptions.Algorithm, ConvolutionOptions.Multiply)] = [(.auto, .own), (.winograd2, .own), (.im2col, .blas)]
        let optionSets = precisions.flatMap { precision in
            algorithms.filter { precision == .fp32 || $0.1 == .own }
                .map { ConvolutionOptions(algorithm: $0.0, multiply: $0.1, precision: precision) }
        }
        for options in optionSets {
            // Winograd F(4x4) (16 channels in and out, 4 images of 4 tiles: 16 tiles; F(2x2) with
            // winograd2, im2col with im2col), im2col and col2im (stride 2), a 1x1 convolution,
            // and a layer on 3 channels (direct); our gemm, and BLAS for every product.
            let cases: [(String, Conv2D, FeatureShape, Int)] = [
                ("winograd", Conv2D(16, 3, activation: .relu), .init(height: 8, width: 8, channels: 16), 4),
                ("stride 2", Conv2D(16, 3, stride: 2), .init(height: 9, width: 8, channels: 16), 3),
                ("pointwise", Conv2D(16, 1, useBias: false), .init(height: 4, width: 4, channels: 16), 2),
                ("3 channels", Conv2D(16, 3), .init(height: 6, width: 6, channels: 3), 2),
            ]
            for (name, conv, shape, batch) in cases {
                let h = try LayerHarness(conv, inputs: [shape], batch: batch, convolution: options)
                try assertFreshEqualsAccumulated(h, "\(name), \(options.algorithm), multiply \(options.multiply), \(options.precision)")
            }
        }
    }

    func testBatchNormWritesFreshInputGradients() throws {
        let shape = FeatureShape(height: 3, width: 4, channels: 5)
        for activation in [Activation.linear, .relu, .relu6] {
            for (training, group) in [(true, 0), (true, 2), (false, 0)] {
                let h = try LayerHarness(BatchNorm(momentum: 0.9, activation: activation), inputs: [shape], batch: 4)
                h.context.training = training
                h.context.normalizationGroup = group
                try assertFreshEqualsAccumulated(h, "batchnorm \(activation), training \(training), groups of \(group)")
            }
        }
    }

    func testAddWritesEitherOrBothFreshInputGradients() throws {
        let shape = FeatureShape(height: 3, width: 4, channels: 5)
        for activation in [Activation.linear, .relu, .relu6] {
            let h = try LayerHarness(Add(activation: activation), inputs: [shape, shape], batch: 2)
            for k in 0..<2 { for i in 0..<h.inputs[k].count { h.inputs[k][i] *= 8 } }  // sums above 6 and below 0
            for fresh: UInt64 in [1, 2, 3] {
                try assertFreshEqualsAccumulated(h, "add \(activation), fresh inputs \(fresh)", fresh: fresh)
            }
        }
    }

    /// Max pooling writes its dX in one pass where windows do not overlap (2x2 /2 on 5 x 7: a
    /// row and a column no window covers; 2x2 /3: gaps between windows), and adds into zeros
    /// where they do (3x3 /2); ties in a window (every value repeated) go to the first.
    func testMaxPoolingWritesFreshInputGradients() throws {
        for (pool, stride) in [(2, 2), (2, 3), (3, 2)] {
            let h = try LayerHarness(MaxPool2D(pool, stride: stride), inputs: [.init(height: 5, width: 7, channels: 19)], batch: 2)
            var random = Random(seed: 13)
            for i in 0..<h.inputs[0].count { h.inputs[0][i] = Float(random.below(4)) - 1.5 }
            try assertFreshEqualsAccumulated(h, "maxpool \(pool)x\(pool) /\(stride)")
        }
    }

    /// Backward twice on the same forward: into zeros, adding; then into NaN where `fresh` says
    /// (else zeros), writing there. The gradients must be equal.
    private func assertFreshEqualsAccumulated(_ h: LayerHarness, _ what: String, fresh: UInt64? = nil) throws {
        XCTAssertTrue(h.layer.writesFreshInputGradients, "\(what): the layer does not say it writes fresh gradients")
        let mask = fresh ?? (1 << UInt64(h.dInputs.count)) - 1
        var random = Random(seed: 12)
        let upstream = (0..<h.output.count).map { _ in random.uniform(-1, 1) }
        h.forward()
        let added = backward(h, upstream, fresh: 0)
        let written = backward(h, upstream, fresh: mask)
        for k in h.dInputs.indices {
            XCTAssertFalse(written.dInputs[k].contains { $0.isNaN }, "\(what): dx \(k) was left unwritten somewhere")
            XCTAssertEqual(written.dInputs[k], added.dInputs[k], "\(what): dx \(k) written differs from dx added into zeros")
        }
        XCTAssertEqual(written.parameters, added.parameters, "\(what): the parameters' gradients differ")
    }

    private func backward(_ h: LayerHarness, _ upstream: [Float], fresh: UInt64) -> (dInputs: [[Float]], parameters: [Float]) {
        for (i, v) in upstream.enumerated() { h.dOutput[i] = v }
        h.gradients.zero()
        for (k, d) in h.dInputs.enumerated() {
            for i in 0..<d.count { d[i] = fresh & (1 << UInt64(k)) != 0 ? .nan : 0 }
        }
        var context = h.context
        context.freshInputGradients = fresh
        h.layer.backward(inputs: h.inputs.map(\.pointer), output: h.output.pointer, dOutput: h.dOutput.pointer,
                         dInputs: h.dInputs.map { Optional($0.pointer) }, batch: h.batch, context: context)
        return (h.dInputs.map(\.array), h.gradients.array)
    }
}
