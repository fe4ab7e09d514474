import CatdogEngine
import CatdogSupport
import XCTest

/// Finite-difference checks of every layer's backward against its forward.
/// Tolerance (unless a test says otherwise): |analytic − numeric| ≤ 2e-3 + 2e-2·max(|analytic|, |numeric|),
/// central differences with ε = 1e-2 on L = Σ r·y in double precision.
final class GradientCheckTests: XCTestCase {
    func testConv2DSameStride1() throws {
        try LayerHarness(Conv2D(4, 3), inputs: [.init(height: 5, width: 6, channels: 3)], batch: 2).checkGradients()
    }

    func testConv2DValidStride2EvenKernel() throws {
        try LayerHarness(Conv2D(filters: 3, kernelSize: (4, 2), strides: (2, 3), padding: .valid),
                         inputs: [.init(height: 9, width: 8, channels: 2)], batch: 3).checkGradients()
    }

    func testConv2DSameStride2AsymmetricPadding() throws {
        try LayerHarness(Conv2D(5, 3, stride: 2), inputs: [.init(height: 7, width: 8, channels: 3)], batch: 2).checkGradients()
    }

    func testConv2DPointwiseWithoutBias() throws {
        try LayerHarness(Conv2D(6, 1, useBias: false), inputs: [.init(height: 4, width: 3, channels: 5)], batch: 2).checkGradients()
    }

    func testConv2DChunkedBatchMatchesGradients() throws {
        let conv = Conv2D(4, 3)
        conv.maxColumnFloats = 1  // one output pixel per chunk: forward and backward recompute im2col per chunk
        try LayerHarness(conv, inputs: [.init(height: 5, width: 5, channels: 2)], batch: 3).checkGradients()
    }

    func testDense() throws {
        try LayerHarness(Dense(5), inputs: [.init(height: 2, width: 2, channels: 3)], batch: 4).checkGradients()
    }

    func testMaxPool2D() throws {
        let h = try LayerHarness(MaxPool2D(2), inputs: [.init(height: 6, width: 5, channels: 3)], batch: 2)
        // Distinct values at least 0.05 apart, so a ±1e-2 step never changes a window's winner.
        var random = Random(seed: 5)
        let order = random.permutation(h.inputs[0].count)
        for (i, rank) in order.enumerated() { h.inputs[0][i] = Float(rank) * 0.05 - 1 }
        h.checkGradients()
    }

    /// Forward and backward against the definition, with ties (values from a set of four):
    /// each output the largest of its window, its gradient to the first pixel in the window
    /// (row by row) that holds it; 2x2 windows take a kernel path of their own.
    func testMaxPool2DAgainstTheDefinitionWithTies() throws {
        for (pool, stride) in [(2, 2), (2, 1), (3, 2)] {
            let shape = FeatureShape(height: 7, width: 6, channels: 21)
            let h = try LayerHarness(MaxPool2D(pool, stride: stride), inputs: [shape], batch: 2)
            var random = Random(seed: 7)
            for i in 0..<h.inputs[0].count { h.inputs[0][i] = Float(random.below(4)) }
            let upstream = (0..<h.output.count).map { _ in random.uniform(-1, 1) }
            h.forward()
            h.backward(upstream)
            let oh = (shape.height - pool) / stride + 1, ow = (shape.width - pool) / stride + 1, c = shape.channels
            var y = [Float](repeating: 0, count: h.output.count), dx = [Float](repeating: 0, count: h.inputs[0].count)
            for n in 0..<2 {
                for r in 0..<oh {
                    for s in 0..<ow {
                        for k in 0..<c {
                            var best = -Float.infinity, at = -1
                            for i in 0..<pool {
                                for j in 0..<pool {
                                    let index = ((n * shape.height + r * stride + i) * shape.width + s * stride + j) * c + k
                                    if h.inputs[0][index] > best { best = h.inputs[0][index]; at = index }
                                }
                            }
                            let o = ((n * oh + r) * ow + s) * c + k
                            y[o] = best
                            dx[at] += upstream[o]
                        }
                    }
                }
            }
            XCTAssertEqual(h.output.array, y, "maxpool \(pool)x\(pool) /\(stride): outputs")
            XCTAssertEqual(h.dInputs[0].array, dx, "maxpool \(pool)x\(pool) /\(stride): input gradients")
        }
    }

    func testMaxPool2DStride1Overlapping() throws {
        let h = try LayerHarness(MaxPool2D(3, stride: 1), inputs: [.init(height: 5, width: 5, channels: 2)], batch: 2)
        var random = Random(seed: 6)
        let order = random.permutation(h.inputs[0].count)
        for (i, rank) in order.enumerated() { h.inputs[0][i] = Float(rank) * 0.05 - 1 }
        h.checkGradients()
    }

    func testReLUAndReLU6() throws {
        for activation in [Activation.relu, .relu6] {
            let h = try LayerHarness(ActivationLayer(activation), inputs: [.init(height: 3, width: 3, channels: 4)], batch: 2)
            // Keep every input at least 0.1 from the kinks at 0 and 6.
            var random = Random(seed: 8)
            for i in 0..<h.inputs[0].count {
                h.inputs[0][i] = [Float(-1), 3, 7][random.below(3)] + random.uniform(-0.9, 0.9)
            }
            h.checkGradients()
        }
    }

    func testFusedReLUMatchesConvThenReLU() throws {
        // Conv2D's fused ReLU must equal a linear conv followed by a ReLU layer, forward and backward.
        let shape = FeatureShape(height: 6, width: 6, channels: 3)
        let fused = try LayerHarness(Conv2D(4, 3, activation: .relu), inputs: [shape], batch: 2)
        let linear = try LayerHarness(Conv2D(4, 3), inputs: [shape], batch: 2)
        linear.parameters.copy(from: fused.parameters)
        linear.inputs[0].copy(from: fused.inputs[0])
        let relu = try LayerHarness(ActivationLayer(.relu), inputs: [linear.outputShape], batch: 2)
        var random = Random(seed: 3)
        let r = (0..<fused.output.count).map { _ in random.uniform(-1, 1) }
        fused.forward(); fused.backward(r)
        linear.forward(); relu.inputs[0].copy(from: linear.output); relu.forward(); relu.backward(r)
        linear.backward(relu.dInputs[0].array)
        assertClose(fused.output.array, relu.output.array, absolute: 1e-6, "output")
        assertClose(fused.dInputs[0].array, linear.dInputs[0].array, absolute: 1e-5, "dx")
        assertClose(fused.gradients.array, linear.gradients.array, absolute: 1e-5, "dW")
    }

    func testDropoutIsInvertedAndBackpropagatesThroughItsMask() throws {
        let h = try LayerHarness(Dropout(0.5), inputs: [.init(height: 1, width: 1, channels: 400)], batch: 2)
        h.forward()
        let y = h.output.array, x = h.inputs[0].array
        let dropped = zip(x, y).filter { $0.1 == 0 }.count
        XCTAssertEqual(Double(dropped) / Double(x.count), 0.5, accuracy: 0.08)
        for (xi, yi) in zip(x, y) where yi != 0 { XCTAssertEqual(yi, 2 * xi, accuracy: 1e-6) }
        h.checkGradients()
        h.context.training = false
        h.forward()
        XCTAssertEqual(h.output.array, h.inputs[0].array)
    }

    func testDropoutMaskDependsOnGlobalSampleNotPosition() throws {
        let a = try LayerHarness(Dropout(0.3), inputs: [.init(height: 1, width: 1, channels: 64)], batch: 2)
        let b = try LayerHarness(Dropout(0.3), inputs: [.init(height: 1, width: 1, channels: 64)], batch: 1)
        for i in 0..<64 { b.inputs[0][i] = a.inputs[0][64 + i] }
        b.context.firstSample = 1  // b's only sample is a's second one
        a.forward(); b.forward()
        XCTAssertEqual(Array(a.output.array[64...]), b.output.array)
    }

    /// BatchNorm and Add with a fused activation equal the layer followed by an ActivationLayer,
    /// forward and backward (outputs to 1e-6, gradients to 1e-5), for ReLU and ReLU6, with batch
    /// statistics and with moving ones.
    func testFusedActivationsInBatchNormAndAddMatchSeparateLayers() throws {
        let shape = FeatureShape(height: 3, width: 4, channels: 5)
        for activation in [Activation.relu, .relu6] {
            for training in [true, false] {
                let fused = try LayerHarness(BatchNorm(momentum: 0.9, activation: activation), inputs: [shape], batch: 3)
                let plain = try LayerHarness(BatchNorm(momentum: 0.9), inputs: [shape], batch: 3)
                fused.context.training = training
                plain.context.training = training
                plain.parameters.copy(from: fused.parameters)
                plain.inputs[0].copy(from: fused.inputs[0])
                // γ of 4 and β of 3 put some outputs above 6, so ReLU6's upper kink is crossed too.
                for i in 0..<fused.parameters.count { fused.parameters[i] = i < 5 ? 4 : 3; plain.parameters[i] = fused.parameters[i] }
                try assertFusedMatchesSeparate(fused, plain, activation: activation, "batchnorm \(activation) training \(training)")
            }
            let fusedAdd = try LayerHarness(Add(activation: activation), inputs: [shape, shape], batch: 2)
            let plainAdd = try LayerHarness(Add(), inputs: [shape, shape], batch: 2)
            for k in 0..<2 {
                for i in 0..<fusedAdd.inputs[k].count { fusedAdd.inputs[k][i] *= 8 }  // some sums above 6
                plainAdd.inputs[k].copy(from: fusedAdd.inputs[k])
            }
            try assertFusedMatchesSeparate(fusedAdd, plainAdd, activation: activation, "add \(activation)")
        }
    }

    /// `fused` (a layer with its activation) against `plain` (the same layer without) followed by
    /// an ActivationLayer, on the same inputs and weights.
    private func assertFusedMatchesSeparate(_ fused: LayerHarness, _ plain: LayerHarness, activation: Activation,
                                            _ what: String) throws {
        let act = try LayerHarness(ActivationLayer(activation), inputs: [plain.outputShape], batch: plain.batch)
        var random = Random(seed: 4)
        let r = (0..<fused.output.count).map { _ in random.uniform(-1, 1) }
        fused.forward(); fused.backward(r)
        plain.forward(); act.inputs[0].copy(from: plain.output); act.forward(); act.backward(r)
        plain.backward(act.dInputs[0].array)
        XCTAssertGreaterThan(fused.output.array.filter { $0 == 0 }.count, 0, "\(what): no output was cut off at 0")
        assertClose(fused.output.array, act.output.array, absolute: 1e-6, "\(what) output")
        for k in fused.dInputs.indices { assertClose(fused.dInputs[k].array, plain.dInputs[k].array, absolute: 1e-5, "\(what) dx \(k)") }
        assertClose(fused.gradients.array, plain.gradients.array, absolute: 1e-5, "\(what) dW")
    }

    func testBatchNormTraining() throws {
        try LayerHarness(BatchNorm(), inputs: [.init(height: 3, width: 2, channels: 4)], batch: 3).checkGradients()
    }

    func testBatchNormInference() throws {
        let h = try LayerHarness(BatchNorm(), inputs: [.init(height: 3, width: 2, channels: 4)], batch: 2)
        h.context.training = false
        h.checkGradients()
    }

    func testBatchNormNormalizesAndUpdatesMovingStatistics() throws {
        let h = try LayerHarness(BatchNorm(momentum: 0.9), inputs: [.init(height: 4, width: 4, channels: 2)], batch: 4)
        for i in 0..<h.parameters.count { h.parameters[i] = i < 2 ? 1 : 0 }  // γ = 1, β = 0
        for i in 0..<h.state.count { h.state[i] = i < 2 ? 0 : 1 }
        for i in 0..<h.inputs[0].count { h.inputs[0][i] = h.inputs[0][i] * 3 + (i % 2 == 0 ? 5 : -2) }
        h.forward()
        for ch in 0..<2 {
            let values = stride(from: ch, to: h.output.count, by: 2).map { Double(h.output[$0]) }
            let mean = values.reduce(0, +) / Double(values.count)
            let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count)
            XCTAssertEqual(mean, 0, accuracy: 1e-5)
            XCTAssertEqual(variance, 1, accuracy: 1e-2)  // ε = 1e-3 shrinks it slightly
            let x = stride(from: ch, to: h.inputs[0].count, by: 2).map { Double(h.inputs[0][$0]) }
            let xMean = x.reduce(0, +) / Double(x.count)
            XCTAssertEqual(Double(h.state[ch]), 0.1 * xMean, accuracy: 1e-4)
        }
    }

    func testGlobalAveragePoolFlattenAndAdd() throws {
        try LayerHarness(GlobalAveragePool(), inputs: [.init(height: 3, width: 4, channels: 5)], batch: 2).checkGradients()
        try LayerHarness(Flatten(), inputs: [.init(height: 3, width: 2, channels: 2)], batch: 2).checkGradients()
        let shape = FeatureShape(height: 2, width: 3, channels: 2)
        try LayerHarness(Add(), inputs: [shape, shape], batch: 2).checkGradients()
    }

    func testBinaryCrossEntropyGradientAndStability() {
        let logits: [Float] = [-30, -3, -0.5, 0, 0.7, 4, 40]
        let labels: [Float] = [0, 1, 0, 1, 1, 0, 1]
        var d = [Float](repeating: 0, count: logits.count)
        let (lossSum, correct) = BinaryCrossEntropy.forwardBackward(
            logits: logits, labels: labels, count: logits.count, normalizer: 7, dLogits: &d)
        var expected = 0.0
        // −log σ(z) = softplus(−z), −log(1 − σ(z)) = softplus(z), computed without overflow.
        func softplus(_ x: Double) -> Double { x > 30 ? x : log1p(exp(x)) }
        for (z, y) in zip(logits, labels) { expected += y == 1 ? softplus(-Double(z)) : softplus(Double(z)) }
        XCTAssertEqual(lossSum, expected, accuracy: 1e-5 * expected)
        XCTAssertEqual(correct, 4)  // -30→0 ✓, -3→1 ✗, -0.5→0 ✓, 0→1 ✗ (0 predicts cat), 0.7 ✓, 4→0 ✗, 40 ✓
        for (i, (z, y)) in zip(logits, labels).enumerated() {
            let h = 1e-3
            let f = { (v: Double) -> Double in max(v, 0) - v * Double(y) + log1p(exp(-abs(v))) }
            let numeric = (f(Double(z) + h) - f(Double(z) - h)) / (2 * h) / 7
            XCTAssertEqual(Double(d[i]), numeric, accuracy: 1e-6)
        }
        XCTAssertTrue(BinaryCrossEntropy.loss(logit: 200, label: 0).isFinite)
        XCTAssertEqual(BinaryCrossEntropy.loss(logit: -200, label: 1), 200, accuracy: 1e-3)
    }
}
