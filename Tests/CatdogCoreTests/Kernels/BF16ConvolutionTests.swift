@testable import CatdogEngine
import CatdogSupport
import Foundation
import XCTest

/// Convolutions and a training step with `--precision bf16` (`ConvolutionOptions.precision`)
/// against the double-precision reference and against fp32.
final class BF16ConvolutionTests: XCTestCase {
    override func setUpWithError() throws {
        if let reason = Precision.bf16.unavailableReason { throw XCTSkip("bf16 products cannot run here: \(reason)") }
    }

    /// ‖got − reference‖ / ‖reference‖.
    private func relativeError(_ got: [Float], _ reference: [Float]) -> Double {
        var difference = 0.0, norm = 0.0
        for (x, y) in zip(got, reference) {
            difference += (Double(x) - Double(y)) * (Double(x) - Double(y))
            norm += Double(y) * Double(y)
        }
        return (difference / max(norm, 1e-30)).squareRoot()
    }

    /// Forward, dX and dW of im2col layers (3×3, 5×5 stride 2, 1×1) and of Winograd F(4×4) and F(2×2)
    /// layers, bf16 against the double reference. Rounding both operands to 8 significant bits
    /// gives each product a relative error of at most 2⁻⁷ and, on random data where the errors
    /// are independent, a relative RMS error of about 2⁻⁸·√(2/3) ≈ 0.3% on the sums: im2col must
    /// stay under 1%. Winograd rounds the transformed operands (V = Bᵀ d B and U = G g Gᵀ),
    /// and the output transform (coefficients up to 8) adds those errors up with larger weights:
    /// measured 2.4–2.5% here (48 channels), bounded at 3%. F(2×2)'s transforms have
    /// coefficients of 1 and ½: it stays under im2col's 1%. Each error must also exceed 10⁻⁴,
    /// 30× what fp32 gives, so that a silent fall-back to fp32 fails the test.
    func testConvolutionsStayWithinBF16Error() throws {
        var random = Random(seed: 31)
        let cases: [(String, Conv2D, FeatureShape, ConvolutionOptions.Algorithm, Double)] = [
            ("im2col 3x3", Conv2D(32, 3), .init(height: 9, width: 7, channels: 16), .im2col, 0.01),
            ("im2col 5x5 /2", Conv2D(16, 5, stride: 2), .init(height: 11, width: 12, channels: 8), .im2col, 0.01),
            ("pointwise", Conv2D(48, 1), .init(height: 5, width: 6, channels: 32), .auto, 0.01),
            ("winograd F(4x4)", Conv2D(32, 3), .init(height: 12, width: 10, channels: 48), .auto, 0.03),
            ("winograd F(2x2)", Conv2D(32, 3), .init(height: 9, width: 10, channels: 48), .winograd2, 0.01),
        ]
        for (name, conv, shape, algorithm, bound) in cases {
            let batch = 3
            let h = try LayerHarness(conv, inputs: [shape], batch: batch, seed: 9,
                                     convolution: ConvolutionOptions(algorithm: algorithm, winogradMinimumTiles: 0, precision: .bf16))
            XCTAssertEqual(conv.takesWinograd(batch: batch), name.hasPrefix("winograd"), name)
            let g = conv.geometry!
            let kernelCount = g.patchSize * conv.filters
            let kernel = Array(h.parameters.array[0..<kernelCount]), bias = Array(h.parameters.array[kernelCount...])
            h.forward()
            let expected = ReferenceConv.forward(g, images: batch, filters: conv.filters, input: h.inputs[0].array, kernel: kernel, bias: bias)
            let dy = (0..<h.output.count).map { _ in random.uniform(-1, 1) }
            h.backward(dy)
            let ref = ReferenceConv.backward(g, images: batch, filters: conv.filters, input: h.inputs[0].array, kernel: kernel, dOutput: dy)
            let errors = [("forward", relativeError(h.output.array, expected)),
                          ("dX", relativeError(h.dInputs[0].array, ref.dInput)),
                          ("dW", relativeError(Array(h.gradients.array[0..<kernelCount]), ref.dKernel))]
            print("bf16 \(name): relative RMS error " + errors.map { "\($0.0) \(String(format: "%.2e", $0.1))" }.joined(separator: ", "))
            for (part, error) in errors {
                XCTAssertLessThan(error, bound, "\(name) \(part): bf16's error beyond its bound")
                XCTAssertGreaterThan(error, 1e-4, "\(name) \(part): no bf16 rounding seen; did the product run in fp32?")
            }
            // The bias gradient is a sum of dY, in fp32 in either precision.
            assertClose(Array(h.gradients.array[kernelCount...]), ref.dBias, absolute: 1e-4, relative: 1e-4, "\(name) dBias")
        }
    }

    /// The first layer of resnet (32 filters, 3×3, stride 2, on an image's 3 channels) keeps its
    /// fp32 direct convolutions under bf16: forward and dW equal fp32's bit for bit (and the
    /// double reference to fp32 rounding, 1e-5), while dX, through the gemm, shows bf16's
    /// rounding (more than 1e-4 from the reference), so the layer did run with bf16 products.
    func testTheImageLayerKeepsItsFP32DirectConvolutions() throws {
        var random = Random(seed: 5)
        let shape = FeatureShape(height: 16, width: 14, channels: 3), batch = 3
        var results: [Precision: (output: [Float], dX: [Float], dW: [Float])] = [:]
        var dy: [Float] = []
        for precision in [Precision.fp32, .bf16] {
            let conv = Conv2D(32, 3, stride: 2)
            let h = try LayerHarness(conv, inputs: [shape], batch: batch, seed: 9, convolution: ConvolutionOptions(precision: precision))
            let kernelCount = conv.geometry!.patchSize * conv.filters
            h.forward()
            if dy.isEmpty { dy = (0..<h.output.count).map { _ in random.uniform(-1, 1) } }
            h.backward(dy)
            results[precision] = (h.output.array, h.dInputs[0].array, Array(h.gradients.array[0..<kernelCount]))
            if precision == .bf16 {
                let g = conv.geometry!
                let kernel = Array(h.parameters.array[0..<kernelCount]), bias = Array(h.parameters.array[kernelCount...])
                let expected = ReferenceConv.forward(g, images: batch, filters: conv.filters, input: h.inputs[0].array, kernel: kernel, bias: bias)
                let ref = ReferenceConv.backward(g, images: batch, filters: conv.filters, input: h.inputs[0].array, kernel: kernel, dOutput: dy)
                XCTAssertLessThan(relativeError(h.output.array, expected), 1e-5, "forward: not fp32's accuracy")
                XCTAssertLessThan(relativeError(results[.bf16]!.dW, ref.dKernel), 1e-5, "dW: not fp32's accuracy")
                XCTAssertGreaterThan(relativeError(h.dInputs[0].array, ref.dInput), 1e-4, "dX: no bf16 rounding seen; did the layer run in fp32?")
            }
        }
        let fp32 = results[.fp32]!, bf16 = results[.bf16]!
        func largestDifference(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? .infinity }
        XCTAssertEqual(largestDifference(bf16.output, fp32.output), 0, "forward under bf16 is not fp32's direct convolution")
        XCTAssertEqual(largestDifference(bf16.dW, fp32.dW), 0, "dW under bf16 is not fp32's direct convolution")
        XCTAssertGreaterThan(largestDifference(bf16.dX, fp32.dX), 0, "dX under bf16 equals fp32's")
    }

    /// A training step of resnet at 32 px on 8 images, from the same weights, in bf16 and fp32.
    /// This small BatchNorm network's backward pass amplifies relative perturbations about
    /// 100×: fp32 Winograd and fp32 im2col (rounding differences of 1e-7) give gradients 6e-6
    /// apart, and bf16's per-layer 0.2% (im2col) to 2.5% (Winograd) becomes 25–50% on the whole
    /// gradient. So the test checks what a step needs, not equality: the losses within 2%
    /// (measured 1.3%, from Winograd's 2.5% a layer); a
    /// step along bf16's gradient lowers the fp32 loss, to first order, by at least 70% of what
    /// fp32's own gradient does (g₁₆·g₃₂ ≥ 0.7 |g₃₂|²; measured 0.90); then 8 SGD steps on
    /// the same batch: both losses fall below a tenth of the first, and bf16's stays within
    /// 25% (or 0.002) of fp32's at every step. Parameters, gradients and loss are fp32 in both.
    func testATrainingStepFollowsFP32() throws {
        func build(_ precision: Precision) throws -> Network {
            let network = try ModelZoo.build("resnet", imageSize: 32, convolution: ConvolutionOptions(precision: precision))
            network.initialize(seed: 4)
            network.reserve(maxBatch: 8)
            return network
        }
        let single = try build(.fp32), half = try build(.bf16)
        let labels: [Float] = [1, 0, 0, 1, 1, 0, 1, 0]
        // Images whose label shows (a brighter top half for 1, every third value raised for 0),
        // so that the gradient is more than the rounding of a sum that cancels out.
        var random = Random(seed: 8)
        let size = single.inputShape.count
        for i in 0..<(8 * size) {
            let dog = labels[i / size] == 1
            single.input[i] = 0.5 * random.uniform(0, 1) + (dog && i % size < size / 2 ? 0.5 : 0) + (!dog && i % 3 == 0 ? 0.3 : 0)
            half.input[i] = single.input[i]
        }
        let context = PassContext(training: true, seed: 3, step: 1)
        let steps = [single, half].map { MeanBCE(network: $0, labels: labels, context: context) }
        var losses: [[Double]] = [[], []]
        for step in 0..<9 {
            for (n, bce) in steps.enumerated() {
                losses[n].append(bce.loss())
                bce.backpropagate()
            }
            if step == 0 {
                var along = 0.0, own = 0.0
                for i in 0..<single.parameterCount {
                    along += Double(half.gradients[i]) * Double(single.gradients[i])
                    own += Double(single.gradients[i]) * Double(single.gradients[i])
                }
                print(String(format: "bf16 training step: loss %.5f vs fp32 %.5f; g16·g32 / |g32|² = %.3f", losses[1][0], losses[0][0], along / own))
                XCTAssertEqual(losses[1][0], losses[0][0], accuracy: 0.02 * losses[0][0], "the first loss")
                XCTAssertGreaterThan(along / own, 0.7, "a step along bf16's gradient lowers the loss much less than fp32's")
                XCTAssertLessThan(abs(along / own - 1), 0.9, "implausible agreement")
            }
            for network in [single, half] {
                for i in 0..<network.parameterCount { network.parameters[i] -= 0.05 * network.gradients[i] }
            }
        }
        print("losses fp32 " + losses[0].map { String(format: "%.4f", $0) }.joined(separator: " "))
        print("losses bf16 " + losses[1].map { String(format: "%.4f", $0) }.joined(separator: " "))
        for n in 0..<2 { XCTAssertLessThan(losses[n].last!, losses[n][0] / 10, n == 0 ? "fp32 did not learn the batch" : "bf16 did not learn the batch") }
        for (step, (a, b)) in zip(losses[0], losses[1]).enumerated() {
            XCTAssertEqual(b, a, accuracy: max(0.25 * a, 0.002), "step \(step): bf16's loss left fp32's")
        }
        // bf16 really ran: its losses are not fp32's.
        XCTAssertNotEqual(losses[0][1], losses[1][1])
    }

    /// In bf16, Winograd F(4×4) rounds and packs each transform's output as it is made (V and
    /// the kernel's U; for dW V and dM, in pairs along the tiles) instead of packing fp32 operands
    /// after them. The products then read the same bf16 pairs in the same order, so forward and dW
    /// must be the same bits either way; and not fp32's (more than 1e-4 from it), or bf16 did not
    /// run. Shapes: an odd channel count (17: its last pair padded with zero), counts that are
    /// not multiples of 16, an odd tile count in two chunks (19 and 8 tiles: a tile pair padded
    /// in the first) and in one (27); and channels in 16s (16, 32, 48, 64), whose transforms pack
    /// as they transform (`catdog_wino4_input_bf16`, `catdog_wino4_kernel_gradient_pair_bf16`),
    /// in one chunk and in several, and with an odd tile count (9), whose last dW pair is one
    /// tile and zeros.
    func testPackingAsItTransformsGivesTheSameBits() {
        var random = Random(seed: 77)
        let cases: [(c: Int, f: Int, images: Int, h: Int, w: Int, chunkFloats: Int)] = [
            (17, 24, 3, 9, 9, 4096), (17, 24, 3, 9, 9, 1 << 20), (32, 48, 2, 12, 10, 1 << 20), (64, 32, 3, 11, 7, 8192),
            (16, 48, 1, 9, 9, 1 << 20), (48, 16, 1, 9, 9, 1 << 20),
        ]
        for (c, f, images, h, w, chunkFloats) in cases {
            let name = "C \(c), F \(f), \(images) images of \(h)×\(w), chunks of \(chunkFloats) floats"
            let x = (0..<images * h * w * c).map { _ in random.uniform(-1, 1) }
            let kernel = (0..<9 * c * f).map { _ in random.uniform(-0.5, 0.5) }
            let dy = (0..<images * h * w * f).map { _ in random.uniform(-1, 1) }
            func run(_ route: GemmRoute, packsAsItTransforms: Bool) -> (y: [Float], dW: [Float]) {
                let winograd = Winograd4x4(channels: c, filters: f, buffers: WinogradBuffers(), chunkFloats: chunkFloats, route: route)
                winograd.packsAsItTransforms = packsAsItTransforms
                var y = [Float](repeating: 0, count: images * h * w * f), dW = [Float](repeating: 0, count: 9 * c * f)
                kernel.withUnsafeBufferPointer { winograd.setKernel($0.baseAddress!) }
                x.withUnsafeBufferPointer { x in
                    y.withUnsafeMutableBufferPointer {
                        winograd.run(input: x.baseAddress!, images: images, height: h, width: w, output: $0.baseAddress!, accumulate: false)
                    }
                    dy.withUnsafeBufferPointer { dy in
                        dW.withUnsafeMutableBufferPointer {
                            winograd.accumulateKernelGradient(input: x.baseAddress!, dOutput: dy.baseAddress!, images: images, height: h,
                                                              width: w, into: $0.baseAddress!)
                        }
                    }
                }
                return (y, dW)
            }
            let packedAsMade = run(.bf16, packsAsItTransforms: true), packedInProducts = run(.bf16, packsAsItTransforms: false)
            let fp32 = run(.own, packsAsItTransforms: true)
            func differences(_ a: [Float], _ b: [Float]) -> String? {
                let apart = zip(a, b).filter { $0.bitPattern != $1.bitPattern }
                guard let largest = apart.map({ abs($0 - $1) }).max() else { return nil }
                return "\(apart.count) of \(a.count) values differ, by up to \(largest)"
            }
            XCTAssertNil(differences(packedAsMade.y, packedInProducts.y), "\(name): forward")
            XCTAssertNil(differences(packedAsMade.dW, packedInProducts.dW), "\(name): dW")
            XCTAssertGreaterThan(relativeError(packedAsMade.y, fp32.y), 1e-4, "\(name): forward shows no bf16 rounding")
            XCTAssertGreaterThan(relativeError(packedAsMade.dW, fp32.dW), 1e-4, "\(name): dW shows no bf16 rounding")
        }
    }

    /// Forward, dX and dW of an im2col layer on 3 images (harness seed 9), for dY drawn from
    /// `random` the first time and reused after.
    private func im2colPasses(_ conv: Conv2D, _ shape: FeatureShape, precision: Precision, dy: inout [Float],
                              random: inout Random) throws -> (y: [Float], dX: [Float], dW: [Float]) {
        let options = ConvolutionOptions(algorithm: .im2col, precision: precision)
        let h = try LayerHarness(conv, inputs: [shape], batch: 3, seed: 9, convolution: options)
        h.forward()
        if dy.isEmpty { dy = (0..<h.output.count).map { _ in random.uniform(-1, 1) } }
        h.backward(dy)
        let kernelCount = conv.geometry!.patchSize * conv.filters
        return (h.output.array, h.dInputs[0].array, Array(h.gradients.array[0..<kernelCount]))
    }

    /// In bf16, an im2col layer packs its products' operands straight from the input's pixels
    /// (`Conv2D.packsPatchesFromInput`, `catdog_im2col_bf16`): A's rows for forward (an even
    /// channel count), Aᵀ in pairs of rows for dW. The products read the same bf16 pairs as
    /// when they pack an fp32 im2col matrix, so forward, dX and dW must be the same bits either
    /// way; and not fp32's (more than 1e-4 from it), or bf16 did not run. Shapes: stride 2 with
    /// padding, an odd row count (a pair padded with zero), chunks of 5 or 7 rows or one chunk,
    /// a 5×5 kernel, and an odd channel count (forward then packs the fp32 rows; dW still packs
    /// from the input). Packed from the input in pairs, dW's patches take half of col's bytes, so
    /// its chunks hold twice the rows: the fp32 matrix is given twice the columns' floats, for
    /// the same chunks of dW (forward's and dX's rows do not depend on the chunks).
    func testIm2colOperandsPackedFromTheInputGiveTheSameBits() throws {
        var random = Random(seed: 43)
        let cases: [(String, () -> Conv2D, FeatureShape, Int?)] = [
            ("3x3 /2, one chunk", { Conv2D(32, 3, stride: 2) }, .init(height: 9, width: 11, channels: 16), nil),
            ("3x3 /2, chunks of 5 rows", { Conv2D(32, 3, stride: 2) }, .init(height: 9, width: 11, channels: 16), 5),
            ("5x5 /2 on 8 channels", { Conv2D(16, 5, stride: 2) }, .init(height: 11, width: 12, channels: 8), 7),
            ("3x3 on 5 channels", { Conv2D(24, 3) }, .init(height: 7, width: 6, channels: 5), nil),
        ]
        for (name, make, shape, rowsPerChunk) in cases {
            var results: [(y: [Float], dX: [Float], dW: [Float])] = []
            var dy: [Float] = []
            for (fromInput, precision) in [(true, Precision.bf16), (false, .bf16), (true, .fp32)] {
                let conv = make()
                conv.packsPatchesFromInput = fromInput
                if let rowsPerChunk {
                    conv.maxColumnFloats = (fromInput ? 1 : 2) * rowsPerChunk * conv.kernelSize.0 * conv.kernelSize.1 * shape.channels
                }
                results.append(try im2colPasses(conv, shape, precision: precision, dy: &dy, random: &random))
            }
            let fromInput = results[0], fromMatrix = results[1], fp32 = results[2]
            func apart(_ a: [Float], _ b: [Float]) -> Int { zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count }
            XCTAssertEqual(apart(fromInput.y, fromMatrix.y), 0, "\(name): forward differs between the two packings")
            XCTAssertEqual(apart(fromInput.dX, fromMatrix.dX), 0, "\(name): dX differs between the two packings")
            XCTAssertEqual(apart(fromInput.dW, fromMatrix.dW), 0, "\(name): dW differs between the two packings")
            XCTAssertGreaterThan(relativeError(fromInput.y, fp32.y), 1e-4, "\(name): forward shows no bf16 rounding")
            XCTAssertGreaterThan(relativeError(fromInput.dW, fp32.dW), 1e-4, "\(name): dW shows no bf16 rounding")
        }
    }

    /// In bf16, an im2col layer whose pass runs in chunks packs its weights (forward) and their
    /// transpose (dX) once for all chunks (a 1×1 layer's pass is one chunk). Each output row's arithmetic does not depend on
    /// the chunk it falls in, so forward and dX must be the same bits as one chunk's (where
    /// nothing is packed ahead); dW sums the chunks in another order and is only compared to 1e-5.
    func testWeightsPackedOnceForAllChunksGiveTheSameBits() throws {
        var random = Random(seed: 41)
        let cases: [(String, () -> Conv2D, FeatureShape)] = [
            ("3x3 /2", { Conv2D(32, 3, stride: 2) }, .init(height: 9, width: 11, channels: 16)),
            ("3x3 on 5 channels (an odd patch of 45)", { Conv2D(24, 3) }, .init(height: 7, width: 6, channels: 5)),
        ]
        for (name, make, shape) in cases {
            var results: [(y: [Float], dX: [Float], dW: [Float])] = []
            var dy: [Float] = []
            for rowsPerChunk in [nil, 5] as [Int?] {
                let conv = make()
                if let rowsPerChunk { conv.maxColumnFloats = rowsPerChunk * 9 * shape.channels }
                results.append(try im2colPasses(conv, shape, precision: .bf16, dy: &dy, random: &random))
            }
            let whole = results[0], chunked = results[1]
            func apart(_ a: [Float], _ b: [Float]) -> Int { zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count }
            XCTAssertEqual(apart(whole.y, chunked.y), 0, "\(name): forward in chunks differs from one chunk")
            XCTAssertEqual(apart(whole.dX, chunked.dX), 0, "\(name): dX in chunks differs from one chunk")
            assertClose(chunked.dW, whole.dW, absolute: 1e-5, relative: 1e-5, "\(name) dW")
        }
    }

}
