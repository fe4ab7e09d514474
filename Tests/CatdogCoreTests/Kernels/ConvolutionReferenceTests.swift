import CKernels
@testable import CatdogEngine
import CatdogSupport
import XCTest

/// The im2col + sgemm convolution against the naive double-precision reference on random
/// shapes: kernels 1–5 (even ones too), strides 1–3, same/valid padding, odd image sizes.
/// Tolerance: 1e-4 absolute + 1e-4 relative (float32 sums of at most a few hundred terms).
/// (Winograd-eligible shapes among the wide trials, 3×3 stride 1 same, take Winograd.)
final class ConvolutionReferenceTests: XCTestCase {
    func testRandomShapesMatchReference() throws {
        var random = Random(seed: 2024)
        for trial in 0..<40 {
            let kh = 1 + random.below(5), kw = 1 + random.below(5)
            let sh = 1 + random.below(3), sw = 1 + random.below(3)
            let padding: ConvGeometry.Padding = random.below(2) == 0 ? .same : .valid
            let height = kh + random.below(8), width = kw + random.below(8)
            // The last ten trials: 16 channels in and 16 or 32 out, where the products (forward,
            // dW, and dX's dY·Wᵀ) take our gemm (AVX-512 or AVX2); the others take BLAS.
            let wide = trial >= 30
            let channels = wide ? 16 : 1 + random.below(4), filters = wide ? 16 * (1 + random.below(2)) : 1 + random.below(5)
            let batch = 1 + random.below(3)
            let conv = Conv2D(filters: filters, kernelSize: (kh, kw), strides: (sh, sw), padding: padding)
            // Exercise chunking too: one output pixel a chunk, or chunks of a few pixels (even
            // lengths, whole 8-row blocks where they fit).
            if trial % 3 == 0 { conv.maxColumnFloats = 1 }
            if trial % 3 == 1 { conv.maxColumnFloats = kh * kw * channels * (2 + trial % 11) }
            let h = try LayerHarness(conv, inputs: [.init(height: height, width: width, channels: channels)], batch: batch, seed: UInt64(trial))
            assertMatchesReference(conv, h, batch: batch, random: &random,
                                   "trial \(trial): \(kh)x\(kw) /\(sh),\(sw) \(padding) on \(height)x\(width)x\(channels) -> \(filters)")
        }
    }

    /// Forward, then `passes` backward passes with one random dY (the gradients adding up),
    /// against the double-precision reference: 1e-4 absolute + 1e-4 relative, per pass.
    private func assertMatchesReference(_ conv: Conv2D, _ h: LayerHarness, batch: Int, passes: Int = 1, random: inout Random,
                                        _ label: String) {
        let g = conv.geometry!, filters = conv.filters
        h.forward()
        let kernelCount = g.patchSize * filters
        let kernel = Array(h.parameters.array[0..<kernelCount]), bias = Array(h.parameters.array[kernelCount...])
        let expected = ReferenceConv.forward(g, images: batch, filters: filters, input: h.inputs[0].array, kernel: kernel, bias: bias)
        assertClose(h.output.array, expected, absolute: 1e-4, relative: 1e-4, "forward, \(label)")
        let dy = (0..<h.output.count).map { _ in random.uniform(-1, 1) }
        h.backward(dy)
        for _ in 1..<max(passes, 1) {
            h.layer.backward(inputs: h.inputs.map(\.pointer), output: h.output.pointer, dOutput: h.dOutput.pointer,
                             dInputs: h.dInputs.map { Optional($0.pointer) }, batch: batch, context: h.context)
        }
        let ref = ReferenceConv.backward(g, images: batch, filters: filters, input: h.inputs[0].array, kernel: kernel, dOutput: dy)
        let p = Float(passes), absolute = 1e-4 * p
        assertClose(h.dInputs[0].array, ref.dInput.map { p * $0 }, absolute: absolute, relative: 1e-4, "dInput, \(label)")
        assertClose(Array(h.gradients.array[0..<kernelCount]), ref.dKernel.map { p * $0 }, absolute: absolute, relative: 1e-4,
                    "dKernel, \(label)")
        assertClose(Array(h.gradients.array[kernelCount...]), ref.dBias.map { p * $0 }, absolute: absolute, relative: 1e-4,
                    "dBias, \(label)")
    }

    /// The Winograd paths (3×3, stride 1, same, ≥ 16 channels in and out) against the same
    /// reference: forward, dX (Winograd on dY with the flipped kernel) and dW (the
    /// transformed-domain gradient, F(4×4)'s and F(2×2)'s), on odd and even image sizes,
    /// including 1×1, 2×3 and 5×5 images (partial tiles everywhere). F(2×2, 3×3)'s transforms
    /// add a few float32 roundings, F(4×4, 3×3)'s more (coefficients up to 8 and 1/24):
    /// 1e-3 absolute + 1e-3 relative for both, on values of order 1–10.
    func testWinogradShapesMatchReference() throws {
        // Every instruction set of our kernels this CPU runs (AVX-512's and AVX2's gemms take
        // the products of widths that are multiples of 16, baseline leaves them to BLAS), then
        // back to the best.
        defer { try? KernelInstructionSet.auto.select() }
        let runs: [(ConvolutionOptions.Algorithm, ConvolutionOptions.Multiply, KernelInstructionSet)] =
            [(.auto, .own, .auto), (.auto, .blas, .auto), (.winograd2, .own, .auto), (.winograd2, .blas, .auto),
             (.auto, .own, .avx2), (.winograd2, .own, .avx2), (.auto, .own, .baseline), (.winograd2, .own, .baseline)]
        for (algorithm, multiply, kernels) in runs {
            guard (try? kernels.select()) != nil else { continue }
            var random = Random(seed: 77)
            let sizes = [(1, 1), (2, 3), (5, 5), (8, 8), (7, 12), (16, 9), (13, 6)]
            for (trial, (height, width)) in sizes.enumerated() {
                // Odd trials: multiples of 16, where F(4×4)'s products take our gemm (AVX-512 or
                // AVX2); even ones: any count, where they take BLAS.
                let channels = trial % 2 == 1 ? 16 * (1 + random.below(3)) : 16 + random.below(24)
                let filters = trial % 2 == 1 ? 16 * (1 + random.below(3)) : 16 + random.below(24)
                let batch = 1 + random.below(3)
                let conv = Conv2D(filters: filters, kernelSize: (3, 3), activation: .linear)
                let h = try LayerHarness(conv, inputs: [.init(height: height, width: width, channels: channels)], batch: batch,
                                         seed: UInt64(100 + trial), convolution: ConvolutionOptions(algorithm: algorithm, multiply: multiply,
                                                                                                  winogradMinimumTiles: 0))
                XCTAssertTrue(conv.usesWinograd)
                XCTAssertTrue(conv.takesWinograd(batch: batch))
                let g = conv.geometry!
                let label = "winograd (\(algorithm), \(multiply), kernels \(kernelInstructionSet)) \(height)x\(width)x\(channels) -> \(filters), batch \(batch)"
                h.forward()
                let kernelCount = 9 * channels * filters
                let kernel = Array(h.parameters.array[0..<kernelCount]), bias = Array(h.parameters.array[kernelCount...])
                let expected = ReferenceConv.forward(g, images: batch, filters: filters, input: h.inputs[0].array, kernel: kernel, bias: bias)
                assertClose(h.output.array, expected, absolute: 1e-3, relative: 1e-3, "forward, \(label)")
                let dy = (0..<h.output.count).map { _ in random.uniform(-1, 1) }
                // Twice, to check that backward adds into the kernel gradient instead of overwriting it.
                h.backward(dy)
                h.layer.backward(inputs: h.inputs.map(\.pointer), output: h.output.pointer, dOutput: h.dOutput.pointer,
                                 dInputs: h.dInputs.map { Optional($0.pointer) }, batch: batch, context: h.context)
                let ref = ReferenceConv.backward(g, images: batch, filters: filters, input: h.inputs[0].array, kernel: kernel, dOutput: dy)
                assertClose(h.dInputs[0].array, ref.dInput.map { 2 * $0 }, absolute: 2e-3, relative: 1e-3, "dInput, \(label)")
                assertClose(Array(h.gradients.array[0..<kernelCount]), ref.dKernel.map { 2 * $0 }, absolute: 2e-3, relative: 1e-3,
                            "dKernel, \(label)")
                assertClose(Array(h.gradients.array[kernelCount...]), ref.dBias.map { 2 * $0 }, absolute: 2e-3, relative: 1e-3,
                            "dBias, \(label)")
            }
        }
    }

    /// Layers on 1–4 channels (an image's) take direct convolutions on AVX-512 (forward and the
    /// kernel gradient for F of 16 or 32 and KW·C of 3, 6, 9 or 12; dX still through the
    /// products; other shapes as before): against the reference on random shapes (kernels 1–5, strides 1–3,
    /// same/valid, odd sizes, 1–3 images), backward run twice to check that the kernel gradient
    /// adds up. The kernels must take the shapes they claim here (on an AVX-512 CPU). Float sums
    /// of at most 100 products: 1e-4 absolute + 1e-4 relative.
    func testFewChannelLayersTakeDirectConvolution() throws {
        var random = Random(seed: 4242)
        var forwardTaken = 0, gradientTaken = 0
        for trial in 0..<40 {
            let kh = 1 + random.below(5), kw = trial % 4 == 0 ? 3 : 1 + random.below(5)
            let sh = 1 + random.below(3), sw = 1 + random.below(3)
            let padding: ConvGeometry.Padding = random.below(2) == 0 ? .same : .valid
            let height = kh + random.below(9), width = kw + random.below(9)
            let channels = trial % 4 == 0 ? 3 : 1 + random.below(4), filters = 16 * (1 + random.below(trial % 2 == 0 ? 2 : 4))
            let batch = 1 + random.below(3)
            let conv = Conv2D(filters: filters, kernelSize: (kh, kw), strides: (sh, sw), padding: padding)
            let h = try LayerHarness(conv, inputs: [.init(height: height, width: width, channels: channels)], batch: batch, seed: UInt64(trial))
            let g = conv.geometry!
            let label = "trial \(trial): \(kh)x\(kw) /\(sh),\(sw) \(padding) on \(height)x\(width)x\(channels) -> \(filters), \(batch) images"
            assertMatchesReference(conv, h, batch: batch, passes: 2, random: &random, label)
            let kernelCount = g.patchSize * filters
            // Whether the kernels take this shape (into scratch buffers: the layer has run).
            let out = FloatBuffer(count: h.output.count), dw = FloatBuffer(count: kernelCount)
            let geometry = (batch, g.inHeight, g.inWidth, channels, filters, kh, kw, sh, sw, g.padTop, g.padLeft, g.outHeight, g.outWidth)
            let tookForward = catdog_conv_direct_forward(h.inputs[0].pointer, h.parameters.pointer, out.pointer, geometry.0, geometry.1,
                                                         geometry.2, geometry.3, geometry.4, geometry.5, geometry.6, geometry.7,
                                                         geometry.8, geometry.9, geometry.10, geometry.11, geometry.12) != 0
            if tookForward {
                forwardTaken += 1
                // With a bias and ReLU or ReLU6 in the kernel: the bits of a pass after it (biases
                // of up to 8 put outputs on both sides of 0 and 6).
                var draw = Random(seed: UInt64(trial), 7)
                let activation = Int32(trial % 3), bias = FloatBuffer((0..<filters).map { _ in draw.uniform(-8, 8) })
                let fused = FloatBuffer(count: h.output.count)
                XCTAssertNotEqual(catdog_conv_direct_forward_bias(h.inputs[0].pointer, h.parameters.pointer, bias.pointer, activation,
                                                                  fused.pointer, geometry.0, geometry.1, geometry.2, geometry.3, geometry.4,
                                                                  geometry.5, geometry.6, geometry.7, geometry.8, geometry.9, geometry.10,
                                                                  geometry.11, geometry.12), 0, "forward with a bias taken, \(label)")
                catdog_bias_activation(out.pointer, bias.pointer, h.output.count / filters, filters, activation)
                XCTAssertEqual(fused.array.map(\.bitPattern), out.array.map(\.bitPattern), "bias and activation \(activation) in the kernel, \(label)")
            }
            let wantsGradient = filters <= 32 && [3, 6, 9, 12].contains(kw * channels)
            if catdog_kernels_avx512() != 0 { XCTAssertEqual(tookForward, wantsGradient, "forward taken, \(label)") }
            let tookGradient = catdog_conv_direct_kernel_gradient(h.inputs[0].pointer, h.dOutput.pointer, dw.pointer, geometry.0, geometry.1,
                                                                  geometry.2, geometry.3, geometry.4, geometry.5, geometry.6, geometry.7,
                                                                  geometry.8, geometry.9, geometry.10, geometry.11, geometry.12) != 0
            if tookGradient { gradientTaken += 1 }
            if catdog_kernels_avx512() != 0 { XCTAssertEqual(tookGradient, wantsGradient, "kernel gradient taken, \(label)") }
        }
        if catdog_kernels_avx512() != 0 {
            XCTAssertGreaterThanOrEqual(forwardTaken, 8, "too few trials exercised the direct forward")
            XCTAssertGreaterThanOrEqual(gradientTaken, 8, "too few trials exercised the direct kernel gradient")
        } else {
            XCTAssertEqual(forwardTaken + gradientTaken, 0, "no direct convolution without AVX-512")
        }
    }

    /// With `auto`, a pass takes F(4×4) from `winogradMinimumTiles` 4×4 output tiles, F(2×2)
    /// below that down to `Winograd2x2.minimumTiles` 2×2 tiles, and im2col below those. Each
    /// pass must give exactly what a layer fixed to that algorithm gives (the same bits), forward
    /// and backward: on 8×8 maps with the minimum at 16 tiles, 4 images (16 tiles) take F(4×4)
    /// and 2 images (8 tiles of 4×4, 32 of 2×2) F(2×2); on 4×4 maps, 2 images (8 tiles of 2×2)
    /// take im2col.
    func testPassesTakeF4x4F2x2OrIm2colBySize() throws {
        func run(_ algorithm: ConvolutionOptions.Algorithm, minimum: Int, shape: FeatureShape, batch: Int) throws
            -> (conv: Conv2D, output: [Float], dX: [Float], dW: [Float]) {
            let conv = Conv2D(filters: 16, kernelSize: (3, 3), activation: .linear)
            let h = try LayerHarness(conv, inputs: [shape], batch: batch, seed: 5,
                                     convolution: ConvolutionOptions(algorithm: algorithm, winogradMinimumTiles: minimum))
            h.forward()
            h.backward((0..<h.output.count).map { Float($0 % 7) - 3 })
            return (conv, h.output.array, h.dInputs[0].array, h.gradients.array)
        }
        let map8 = FeatureShape(height: 8, width: 8, channels: 16), map4 = FeatureShape(height: 4, width: 4, channels: 16)
        let cases: [(String, FeatureShape, Int, ConvolutionOptions.Algorithm, Int)] = [
            ("F(4x4)", map8, 4, .auto, 0), ("F(2x2)", map8, 2, .winograd2, 16), ("im2col", map4, 2, .im2col, 16),
        ]
        for (name, shape, batch, fixed, fixedMinimum) in cases {
            let auto = try run(.auto, minimum: 16, shape: shape, batch: batch)
            let expected = try run(fixed, minimum: fixedMinimum, shape: shape, batch: batch)
            XCTAssertTrue(auto.conv.usesWinograd, name)
            XCTAssertEqual(auto.conv.takesWinograd(batch: batch), name != "im2col", name)
            XCTAssertEqual(auto.output, expected.output, "\(name): forward of \(batch) images on \(shape.height)x\(shape.width)")
            XCTAssertEqual(auto.dX, expected.dX, "\(name): dX")
            XCTAssertEqual(auto.dW, expected.dW, "\(name): dW and db")
        }
        // And they differ from one another: the three algorithms round differently.
        let f4 = try run(.auto, minimum: 0, shape: map8, batch: 2), f2 = try run(.winograd2, minimum: 16, shape: map8, batch: 2)
        let col = try run(.im2col, minimum: 16, shape: map8, batch: 2)
        XCTAssertNotEqual(f4.output, f2.output, "F(4x4) and F(2x2) gave the same bits: is one of them not running?")
        XCTAssertNotEqual(f2.output, col.output, "F(2x2) and im2col gave the same bits: is one of them not running?")
    }

    /// The cost rule behind `auto`'s choice of F(4×4) or F(2×2) (`Conv2D.favoursF4x4`): on maps
    /// of whole 4×4 tiles (8×8 images: 4 tiles of 4×4, 16 of 2×2) F(4×4) from exactly
    /// `winogradMinimumTiles` tiles; on 5×5 maps, where F(4×4) computes 64 outputs for 25 and
    /// F(2×2) 36, the products cost the same and F(2×2) has fewer kernels: F(2×2) at any count;
    /// a minimum of 0 keeps F(4×4) in every pass, even a 1×1 map's.
    func testF4x4OrF2x2ByTheirCosts() {
        for minimum in [1, 16, 32, 64] {
            for images in 1...40 {
                XCTAssertEqual(Conv2D.favoursF4x4(tiles4: 4 * images, tiles2: 16 * images, minimum: minimum), 4 * images >= minimum,
                               "8x8 maps, \(images) images, minimum \(minimum)")
            }
            for images in [1, 8, 32, 1 << 16] {
                XCTAssertFalse(Conv2D.favoursF4x4(tiles4: 4 * images, tiles2: 9 * images, minimum: minimum),
                               "5x5 maps, \(images) images, minimum \(minimum)")
            }
        }
        XCTAssertTrue(Conv2D.favoursF4x4(tiles4: 1, tiles2: 1, minimum: 0))
        XCTAssertTrue(Conv2D.favoursF4x4(tiles4: 4, tiles2: 9, minimum: 0))
    }

    func testSamePaddingMatchesTensorFlow() {
        // TensorFlow "SAME": out = ceil(in/stride); the odd pad goes to the bottom/right.
        let g = ConvGeometry(inHeight: 224, inWidth: 224, channels: 3, kernelHeight: 3, kernelWidth: 3,
                             strideHeight: 2, strideWidth: 2, padding: .same)
        XCTAssertEqual(g.outHeight, 112)
        XCTAssertEqual(g.padTop, 0)  // total pad 1: top 0, bottom 1
        let k8 = ConvGeometry(inHeight: 64, inWidth: 64, channels: 3, kernelHeight: 8, kernelWidth: 8,
                              strideHeight: 1, strideWidth: 1, padding: .same)
        XCTAssertEqual(k8.outHeight, 64)
        XCTAssertEqual(k8.padTop, 3)  // total pad 7: top 3, bottom 4
    }

    /// The network-level switch: vgg built with `ConvolutionOptions(algorithm: .im2col)` uses no
    /// Winograd layer and gives the same logits as the default build (Winograd F(4×4) in its
    /// 3×3 layers) and the F(2×2) build within 1e-3 + 1e-3 relative, from the same weights
    /// and images.
    func testConvolutionAlgorithmOptionGivesSameLogits() throws {
        let auto = try ModelZoo.build("vgg", imageSize: 32)
        let plain = try ModelZoo.build("vgg", imageSize: 32, convolution: ConvolutionOptions(algorithm: .im2col))
        let small = try ModelZoo.build("vgg", imageSize: 32, convolution: ConvolutionOptions(algorithm: .winograd2))
        func winogradLayers(_ n: Network) -> Int { n.nodes.filter { ($0.layer as? Conv2D)?.usesWinograd == true }.count }
        for n in [auto, plain, small] {
            n.initialize(seed: 3)
            n.reserve(maxBatch: 2)
        }
        XCTAssertGreaterThan(winogradLayers(auto), 0)
        XCTAssertEqual(winogradLayers(plain), 0)
        var random = Random(seed: 4)
        XCTAssertEqual(winogradLayers(small), winogradLayers(auto))
        for i in 0..<(2 * auto.inputShape.count) {
            auto.input[i] = random.uniform(0, 1)
            plain.input[i] = auto.input[i]
            small.input[i] = auto.input[i]
        }
        let a = auto.forward(batch: 2, context: PassContext(training: false))
        let b = plain.forward(batch: 2, context: PassContext(training: false))
        let c = small.forward(batch: 2, context: PassContext(training: false))
        assertClose([a[0], a[1]], [b[0], b[1]], absolute: 1e-3, relative: 1e-3, "vgg logits, auto vs im2col")
        assertClose([c[0], c[1]], [b[0], b[1]], absolute: 1e-3, relative: 1e-3, "vgg logits, winograd2 vs im2col")
    }
}
