import CatdogEngine
import CatdogSupport
import Foundation
import XCTest

/// Each optimizer's first steps against Keras's formulas evaluated in double precision
/// (written out here independently of the implementation), and a few values worked by hand.
/// Tolerance: 1e-6 absolute on parameters of size ~1.
final class OptimizerTests: XCTestCase {
    let initial: [Float] = [0.5, -1.0, 2.0, 0.0]
    let gradientSteps: [[Float]] = [[0.1, -0.2, 0.3, 0.0], [0.2, 0.1, -0.5, 1e-3], [-0.3, 0.4, 0.2, -2.0]]

    func run(_ optimizer: Optimizer, lr: Float) -> [Float] {
        let w = FloatBuffer(initial)
        for g in gradientSteps { step(optimizer, w, g, lr: lr) }
        return w.array
    }

    /// One update with gradient `g`, keeping the gradient buffer alive through the call.
    func step(_ optimizer: Optimizer, _ w: FloatBuffer, _ g: [Float], lr: Float) {
        let gradient = FloatBuffer(g)
        withExtendedLifetime(gradient) {
            optimizer.step(parameters: w.pointer, gradients: gradient.pointer, learningRate: lr)
        }
    }

    func reference(_ update: (_ w: inout Double, _ g: Double, _ t: Int, _ slot: inout [Double]) -> Void, slots: Int) -> [Float] {
        initial.indices.map { i in
            var w = Double(initial[i])
            var slot = [Double](repeating: 0, count: slots)
            for (t, g) in gradientSteps.enumerated() { update(&w, Double(g[i]), t + 1, &slot) }
            return Float(w)
        }
    }

    func testSGDPlainMomentumAndNesterov() {
        let lr = 0.1, mu = 0.9
        assertClose(run(SGD(count: 4), lr: 0.1), reference({ w, g, _, _ in w -= lr * g }, slots: 0), absolute: 1e-6)
        assertClose(run(SGD(count: 4, momentum: 0.9), lr: 0.1), reference({ w, g, _, s in
            s[0] = mu * s[0] - lr * g; w += s[0] }, slots: 1), absolute: 1e-6)
        assertClose(run(SGD(count: 4, momentum: 0.9, nesterov: true), lr: 0.1), reference({ w, g, _, s in
            s[0] = mu * s[0] - lr * g; w += mu * s[0] - lr * g }, slots: 1), absolute: 1e-6)
        // By hand: g = 1 twice, lr 0.1, μ 0.9: m = −0.1, w = 0.9; m = −0.19, w = 0.71.
        let w = FloatBuffer([1]), sgd = SGD(count: 1, momentum: 0.9)
        step(sgd, w, [1], lr: 0.1)
        step(sgd, w, [1], lr: 0.1)
        XCTAssertEqual(w[0], 0.71, accuracy: 1e-6)
    }

    func testAdaGrad() {
        let lr = 0.1, eps = 1e-7
        assertClose(run(AdaGrad(count: 4), lr: 0.1), reference({ w, g, _, s in
            if s[0] == 0 { s[0] = 0.1 }
            s[0] += g * g; w -= lr * g / (s[0] + eps).squareRoot() }, slots: 1), absolute: 1e-6)
    }

    func testRMSProp() {
        let lr = 0.01, rho = 0.9, eps = 1e-7
        assertClose(run(RMSProp(count: 4), lr: 0.01), reference({ w, g, _, s in
            s[0] = rho * s[0] + (1 - rho) * g * g; w -= lr * g / (s[0] + eps).squareRoot() }, slots: 1), absolute: 1e-6)
        // By hand: first step moves by lr·g/√(0.1·g²) = lr·√10 ≈ 0.0316 against the gradient's sign.
        let w = FloatBuffer([0]), rms = RMSProp(count: 1)
        step(rms, w, [0.5], lr: 0.01)
        XCTAssertEqual(w[0], -0.0316228, accuracy: 1e-6)
    }

    func testAdam() {
        let lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-7
        assertClose(run(Adam(count: 4), lr: 0.01), reference({ w, g, t, s in
            let alpha = lr * (1 - pow(b2, Double(t))).squareRoot() / (1 - pow(b1, Double(t)))
            s[0] += (g - s[0]) * (1 - b1); s[1] += (g * g - s[1]) * (1 - b2)
            w -= alpha * s[0] / (s[1].squareRoot() + eps) }, slots: 2), absolute: 1e-6)
        // By hand: Adam's first step is lr·sign(g) (up to ε).
        let w = FloatBuffer([1]), adam = Adam(count: 1)
        step(adam, w, [-3], lr: 0.01)
        XCTAssertEqual(w[0], 1.01, accuracy: 1e-6)
    }

    /// Adam's vectorised C step equals the scalar formula bit for bit on every instruction set
    /// this CPU runs (1,003 values, so the vector loops have tails; 5 steps; gradients and
    /// weights over many magnitudes): ranks on AVX-512 and AVX2 machines must keep identical weights.
    func testAdamStepIsTheSameBitsOnEveryInstructionSet() throws {
        let count = 1_003
        var random = Random(seed: 9)
        let w0 = (0..<count).map { _ in random.uniform(-2, 2) * Float(pow(10, Double(random.below(7)) - 3)) }
        let gradients = (0..<5).map { _ in (0..<count).map { _ in random.uniform(-1, 1) * Float(pow(10, Double(random.below(9)) - 5)) } }
        let tested = forEachKernelInstructionSet { kernels in
            let adam = Adam(count: count)
            let w = FloatBuffer(w0), m = FloatBuffer(count: count), v = FloatBuffer(count: count), expected = FloatBuffer(w0)
            for (t, g) in gradients.enumerated() {
                let gb = FloatBuffer(g)
                adam.step(parameters: w.pointer, gradients: gb.pointer, learningRate: 0.01)
                // The step size as Adam computes it (from its Float hyperparameters, in double).
                let n = Double(t + 1)
                let alpha = Float(Double(Float(0.01)) * (1 - pow(Double(adam.beta2), n)).squareRoot() / (1 - pow(Double(adam.beta1), n)))
                // The formula element by element, as Swift evaluates it (no fused multiply-adds).
                let (b1, b2) = (1 - adam.beta1, 1 - adam.beta2)
                for i in 0..<count {
                    m[i] += (gb[i] - m[i]) * b1
                    v[i] += (gb[i] * gb[i] - v[i]) * b2
                    expected[i] -= alpha * m[i] / (v[i].squareRoot() + adam.epsilon)
                }
            }
            let differing = (0..<count).filter { w[$0].bitPattern != expected[$0].bitPattern }
            XCTAssertEqual(differing.count, 0, "\(kernels): \(differing.count) weights differ from the scalar formula, first at \(differing.first ?? -1)")
        }
        XCTAssertGreaterThanOrEqual(tested.count, 2, "fewer than two instruction sets ran")
    }

    /// LAMB's C passes give the same bits on every instruction set this CPU runs (its norms are
    /// summed in lanes of fixed order): two tensors of 1,003 and 517 values, 5 steps.
    func testLambIsTheSameBitsOnEveryInstructionSet() throws {
        let count = 1_520
        var random = Random(seed: 10)
        let w0 = (0..<count).map { _ in random.uniform(-2, 2) * Float(pow(10, Double(random.below(5)) - 2)) }
        let gradients = (0..<5).map { _ in (0..<count).map { _ in random.uniform(-1, 1) * Float(pow(10, Double(random.below(7)) - 4)) } }
        var results: [(KernelInstructionSet, [Float])] = []
        forEachKernelInstructionSet { kernels in
            let lamb = Lamb(count: count, tensors: [0..<1_003, 1_003..<count])
            let w = FloatBuffer(w0)
            for g in gradients {
                let gb = FloatBuffer(g)
                withExtendedLifetime(gb) { lamb.step(parameters: w.pointer, gradients: gb.pointer, learningRate: 0.01) }
            }
            results.append((kernels, w.array))
        }
        XCTAssertGreaterThanOrEqual(results.count, 2, "fewer than two instruction sets ran")
        for (kernels, w) in results.dropFirst() {
            let differing = zip(w, results[0].1).filter { $0.bitPattern != $1.bitPattern }.count
            XCTAssertEqual(differing, 0, "\(kernels) against \(results[0].0): \(differing) weights differ")
        }
    }

    /// LAMB on two tensors ([0, 2) and [2, 4)) against its formula in double precision: each
    /// tensor's Adam step (PyTorch's bias correction, ε = 1e-6) scaled by ‖w‖/‖u‖ of that
    /// tensor; a tensor whose weights are all zero takes the plain step (ratio 1).
    func testLambScalesEachTensorByItsTrustRatio() {
        let lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-6
        var w = initial.map(Double.init)
        var m = [Double](repeating: 0, count: 4), v = m
        for (t, g) in gradientSteps.enumerated() {
            for tensor in [0..<2, 2..<4] {
                var u = [Double](repeating: 0, count: 4)
                for i in tensor {
                    m[i] = b1 * m[i] + (1 - b1) * Double(g[i])
                    v[i] = b2 * v[i] + (1 - b2) * Double(g[i]) * Double(g[i])
                    let mHat = m[i] / (1 - pow(b1, Double(t + 1))), vHat = v[i] / (1 - pow(b2, Double(t + 1)))
                    u[i] = mHat / (vHat.squareRoot() + eps)
                }
                let wn = tensor.reduce(0.0) { $0 + w[$1] * w[$1] }.squareRoot(), un = tensor.reduce(0.0) { $0 + u[$1] * u[$1] }.squareRoot()
                let ratio = wn > 0 && un > 0 ? wn / un : 1
                for i in tensor { w[i] -= lr * ratio * u[i] }
            }
        }
        assertClose(run(Lamb(count: 4, tensors: [0..<2, 2..<4]), lr: 0.01), w.map(Float.init), absolute: 1e-6)
        // A tensor of zeros moves by the Adam step alone.
        let zeros = FloatBuffer([0, 0])
        let lamb = Lamb(count: 2, tensors: [0..<2])
        step(lamb, zeros, [0.5, -0.5], lr: 0.01)
        assertClose(zeros.array, [-0.01, 0.01], absolute: 1e-6)
    }

    func testNadam() {
        let lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-7
        var product = [Double](repeating: 1, count: initial.count)
        var index = 0
        let expected = reference({ w, g, t, s in
            let u = b1 * (1 - 0.5 * pow(0.96, Double(t))), uNext = b1 * (1 - 0.5 * pow(0.96, Double(t + 1)))
            if t == 1 { product[index] = 1 }
            product[index] *= u
            s[0] += (g - s[0]) * (1 - b1); s[1] += (g * g - s[1]) * (1 - b2)
            let mHat = uNext * s[0] / (1 - product[index] * uNext) + (1 - u) * g / (1 - product[index])
            let vHat = s[1] / (1 - pow(b2, Double(t)))
            w -= lr * mHat / (vHat.squareRoot() + eps)
            if t == 3 { index += 1 }
        }, slots: 2)
        assertClose(run(Nadam(count: 4), lr: 0.01), expected, absolute: 1e-6)
    }

    func testWeightDecayTouchesOnlyKernels() throws {
        let network = try ModelZoo.build("resnet", imageSize: 32)
        network.gradients.zero()
        addWeightDecay(0.1, ranges: network.decayingRanges(), parameters: network.parameters.pointer, gradients: network.gradients.pointer)
        for slot in network.parameterSlots {
            let i = slot.offset
            let expected = slot.decays ? 0.1 * network.parameters[i] : 0
            XCTAssertEqual(network.gradients[i], expected, accuracy: 1e-9, slot.name)
        }
    }

    func testScheduleWarmupCosineAndStep() {
        var s = LearningRateSchedule(baseRate: 1, warmupSteps: 4, totalSteps: 104, decay: .cosine)
        s.minimumFactor = 0
        XCTAssertEqual(s.rate(at: 0), 0.25, accuracy: 1e-6)
        XCTAssertEqual(s.rate(at: 3), 1, accuracy: 1e-6)
        XCTAssertEqual(s.rate(at: 4), 1, accuracy: 1e-6)
        XCTAssertEqual(s.rate(at: 54), 0.5, accuracy: 1e-6)
        XCTAssertEqual(s.rate(at: 104), 0, accuracy: 1e-6)
        var step = LearningRateSchedule(baseRate: 1, totalSteps: 100, decay: .step)
        step.stepEvery = 10
        step.stepFactor = 0.5
        XCTAssertEqual(step.rate(at: 9), 1)
        XCTAssertEqual(step.rate(at: 25), 0.25)
    }
}

/// AdamW's decoupled decay and the weights' moving average, against the formulas.
final class WeightDecayAndAverageTests: XCTestCase {
    /// Decoupled decay shrinks only the given ranges, by exactly (1 − lr·λ); AdamW's moment
    /// update is Adam's.
    func testDecoupledDecayShrinksOnlyTheKernels() {
        let w = FloatBuffer([1, 2, 3, 4, 5])
        decayWeights(0.1, ranges: [0..<2, 4..<5], parameters: w.pointer)
        assertClose(w.array, [0.9, 1.8, 3, 4, 4.5], absolute: 1e-6)
        XCTAssertTrue(OptimizerKind.adamw.decouplesWeightDecay)
        XCTAssertFalse(OptimizerKind.adam.decouplesWeightDecay)
        let a = OptimizerKind.adamw.make(count: 1), b = OptimizerKind.adam.make(count: 1)
        XCTAssertEqual(a.kind, .adamw)
        let wa = FloatBuffer([1]), wb = FloatBuffer([1]), g = FloatBuffer([-3])
        withExtendedLifetime(g) {
            a.step(parameters: wa.pointer, gradients: g.pointer, learningRate: 0.01)
            b.step(parameters: wb.pointer, gradients: g.pointer, learningRate: 0.01)
        }
        XCTAssertEqual(wa[0], wb[0])
    }

    /// The decay warms up as (1 + t)/(10 + t) and is capped by the asked one; three updates
    /// match the recurrence in double precision (1e-6); swapping exchanges the contents.
    func testMovingAverageFollowsItsRecurrence() {
        XCTAssertEqual(WeightAverage.decay(0.999, step: 1), Float(2.0 / 11.0), accuracy: 1e-7)
        XCTAssertEqual(WeightAverage.decay(0.999, step: 100_000), 0.999, accuracy: 1e-7)
        XCTAssertEqual(WeightAverage.decay(0.5, step: 20), 0.5)
        let average = FloatBuffer([0, 1, -2]), steps: [[Float]] = [[1, 1, 1], [2, -1, 0.5], [-4, 3, 0]]
        var expected: [Double] = [0, 1, -2]
        for (t, weights) in steps.enumerated() {
            let d = WeightAverage.decay(0.9, step: t + 1)
            let w = FloatBuffer(weights)
            WeightAverage.update(average, toward: w, decay: d)
            for i in 0..<3 { expected[i] = Double(d) * expected[i] + (1 - Double(d)) * Double(weights[i]) }
        }
        assertClose(average.array, expected.map { Float($0) }, absolute: 1e-6)
        let other = FloatBuffer([7, 8, 9]), before = average.array
        WeightAverage.swapContents(average, other)
        XCTAssertEqual(average.array, [7, 8, 9])
        XCTAssertEqual(other.array, before)
    }

    /// Adam's update in one pass (`Adam.update`: decay, step and moving average per element,
    /// `catdog_adam_average_step`) gives the same bits as the three passes it replaces
    /// (`decayWeights`, `step`, `WeightAverage.update`), on every instruction set, over 1,000
    /// parameters (vector bodies and leftovers) with decaying stretches at the start, inside,
    /// adjacent and at the end, three updates in a row; and without an average, as `step` and
    /// decay alone.
    func testAdamsOnePassUpdateGivesTheSameBitsAsThreePasses() {
        var random = Random(seed: 5)
        let n = 1000, decaying = [0..<37, 100..<333, 333..<340, 901..<1000]
        let w0 = (0..<n).map { _ in random.uniform(-1, 1) }, a0 = (0..<n).map { _ in random.uniform(-1, 1) }
        let gradients = (0..<3).map { _ in FloatBuffer((0..<n).map { _ in random.uniform(-0.1, 0.1) }) }
        let ran = forEachKernelInstructionSet { kernels in
            for averaging in [true, false] {
                let fused = Adam(count: n, kind: .adamw), separate = Adam(count: n, kind: .adamw)
                let wf = FloatBuffer(w0), ws = FloatBuffer(w0), af = FloatBuffer(a0), as_ = FloatBuffer(a0)
                for (t, g) in gradients.enumerated() {
                    let d = WeightAverage.decay(0.99, step: t + 1), lr: Float = 0.01, factor = lr * 0.05
                    fused.update(parameters: wf.pointer, gradients: g.pointer, count: n, learningRate: lr, decayFactor: factor,
                                 decaying: decaying, average: averaging ? af.pointer : nil, averageDecay: d)
                    decayWeights(factor, ranges: decaying, parameters: ws.pointer)
                    separate.step(parameters: ws.pointer, gradients: g.pointer, learningRate: lr)
                    if averaging { WeightAverage.update(as_, toward: ws, decay: d) }
                }
                let name = "\(kernels), average \(averaging)"
                XCTAssertEqual(wf.array.map(\.bitPattern), ws.array.map(\.bitPattern), "\(name): weights")
                XCTAssertEqual(af.array.map(\.bitPattern), as_.array.map(\.bitPattern), "\(name): average")
                XCTAssertEqual(fused.slots[0].buffer.array.map(\.bitPattern), separate.slots[0].buffer.array.map(\.bitPattern), "\(name): m")
                XCTAssertEqual(fused.iterations, 3)
                XCTAssertNotEqual(wf.array, w0, name)
                XCTAssertEqual(af.array == a0, !averaging, name)
            }
        }
        XCTAssertGreaterThanOrEqual(ran.count, 2, "fewer than two instruction sets ran")
    }
}
