import CatdogEngine
import CatdogSupport
import XCTest

final class NetworkGradientTests: XCTestCase {
    /// A residual graph (a node read by two layers) end to end: loss gradient w.r.t. sampled
    /// parameters against central differences. Tolerance 2e-3 + 3e-2 relative.
    func testResidualNetworkGradientsMatchFiniteDifferences() throws {
        var b = NetworkBuilder(input: .init(height: 6, width: 6, channels: 2))
        b.add(Conv2D(4, 3, activation: .linear))
        let skip = b.add(BatchNorm())
        b.add(Conv2D(4, 3))
        b.add(Add(), inputs: [b.last, skip])
        b.add(Conv2D(3, 3, stride: 2))  // smooth, unlike max pooling, whose ties break finite differences
        b.add(GlobalAveragePool())
        b.add(Dense(3))
        b.add(Dense(1))
        let network = try b.build()
        network.initialize(seed: 4)
        network.reserve(maxBatch: 3)
        var random = Random(seed: 1)
        for i in 0..<(3 * network.inputShape.count) { network.input[i] = random.uniform(-1, 1) }
        let bce = MeanBCE(network: network, labels: [1, 0, 1], context: PassContext(training: true))
        bce.backpropagate()
        for _ in 0..<60 {
            let i = random.below(network.parameterCount)
            let numeric = centralDifference(network.parameters, i, epsilon: 1e-2, loss: bce.loss)
            let analytic = Double(network.gradients[i])
            XCTAssertTrue(gradientAgrees(analytic, numeric, absolute: 2e-3, relative: 3e-2), "parameter \(i): \(analytic) vs \(numeric)")
        }
    }

    /// A ReLU or ReLU6 before a max pool leaves its mask to the pool (`handsOnActivationMasks`),
    /// and a Winograd convolution before a 2x2 pool pools into it without writing its own
    /// output: the logits and parameter gradients are the same bits as with every layer on its
    /// own, in vgg and simple (convolution, ReLU, 2x2 pool), a net with a convolution's ReLU6
    /// before an overlapping 3x3 /2 pool and BatchNorm's before a 2x2 one, and one whose
    /// Winograd layers' maps (10 x 7, 5 x 3) leave windows and tiles cut by the edge; in fp32
    /// and in bf16. With the pooling, the convolution's own output stays as it was (NaN here).
    func testActivationMasksLeftToTheMaxPoolGiveTheSameGradients() throws {
        var b = NetworkBuilder(input: .init(height: 13, width: 11, channels: 3))
        b.add(Conv2D(16, 3, activation: .relu6))
        b.add(MaxPool2D(3, stride: 2))
        b.add(Conv2D(16, 3))
        b.add(BatchNorm(activation: .relu6))
        b.add(MaxPool2D(2))
        b.add(Flatten())
        b.add(Dense(1))
        var odd = NetworkBuilder(input: .init(height: 10, width: 7, channels: 16))
        odd.add(Conv2D(16, 3, activation: .relu))
        odd.add(MaxPool2D(2))
        odd.add(Conv2D(16, 3, activation: .relu6))
        odd.add(MaxPool2D(2))
        odd.add(Flatten())
        odd.add(Dense(1))
        for precision in Self.precisionsHere {
            // F(4×4) in every pass: it is the transform that pools as it writes.
            let options = ConvolutionOptions(winogradMinimumTiles: 0, precision: precision)
            let cases: [(String, () throws -> Network)] = [
                ("vgg", { try ModelZoo.build("vgg", imageSize: 32, convolution: options) }),
                ("simple", { try ModelZoo.build("simple", imageSize: 32, convolution: options) }),
                ("relu6 net", { try b.build(convolution: options) }),
                ("odd maps", { try odd.build(convolution: options) }),
            ]
            for (name, make) in cases {
                var results: [(logits: [Float], gradients: [Float], handed: Int, unwritten: Int, winners: [Int32])] = []
                for handOn in [false, true] {
                    // Inputs this large put some of the ReLU6's inputs above 6. The sentinels: the
                    // outputs of the convolutions before 2x2 pools.
                    let pass = try trainingPassOfFour(make, handOn: handOn, seed: 3, inputSeed: 2, inputs: 20, labels: [0, 1, 1, 0],
                                                      context: PassContext(training: true, step: 1)) { network in
                        network.nodes.indices.filter { i in
                            network.nodes[i].layer is Conv2D
                                && network.nodes.contains { ($0.layer as? MaxPool2D)?.poolsTwoByTwo == true && $0.inputs == [i] }
                        }
                    }
                    let network = pass.network
                    // Each pool's winners (ties, as at ReLU's zeros, go to the first in the window).
                    let winners = network.nodes.flatMap { node -> [Int32] in
                        guard let pool = node.layer as? MaxPool2D, let argmax = pool.argmaxPointer else { return [] }
                        return Array(UnsafeBufferPointer(start: argmax, count: 4 * node.shape.count))
                    }
                    let plan = Network.activationMaskPlan(network.nodes)
                    results.append((pass.logits, network.gradients.array, plan.outputGradientMasked.filter { $0 }.count, pass.unwritten,
                                    winners))
                }
                let what = "\(name), \(precision)"
                XCTAssertGreaterThan(results[1].handed, 0, "\(what): no layer leaves its mask to a pool")
                XCTAssertEqual(results[0].unwritten, 0, "\(what): a convolution did not write its output, without pooling")
                if name == "vgg" || name == "odd maps" {  // the others' convolutions before pools are not Winograd's
                    XCTAssertGreaterThan(results[1].unwritten, 0, "\(what): no convolution pooled into its pool")
                }
                XCTAssertEqual(results[0].logits.map(\.bitPattern), results[1].logits.map(\.bitPattern), "\(what): logits differ")
                XCTAssertEqual(results[0].winners, results[1].winners, "\(what): the pools' winners differ")
                XCTAssertTrue(results[0].gradients.contains { $0 != 0 }, "\(what): no gradient")
                XCTAssertEqual(results[0].gradients.map(\.bitPattern), results[1].gradients.map(\.bitPattern),
                               "\(what): parameter gradients differ with the mask left to the pool")
            }
        }
    }

    /// A BatchNorm without activation read only by an addition (the end of each resnet block)
    /// writes the sum itself in a training forward (`BatchNorm.addsInto`), its own output left
    /// unwritten: the logits, the parameter gradients and the moving statistics are the same
    /// bits as with each layer on its own (`handsOnActivationMasks` off), in resnet and
    /// resnet-pool (ReLU after the addition), resnet with linear activations, with ghost groups
    /// of 2 samples and with the whole batch as one group, in fp32 and in bf16.
    func testBatchNormAddingIntoItsAdditionGivesTheSameBits() throws {
        for precision in Self.precisionsHere {
            let options = ConvolutionOptions(precision: precision)
            let cases: [(String, () throws -> Network)] = [
                ("resnet", { try ModelZoo.build("resnet", imageSize: 32, convolution: options) }),
                ("resnet-pool", { try ModelZoo.build("resnet-pool", imageSize: 32, convolution: options) }),
                ("linear resnet", {
                    var b = NetworkBuilder(input: .init(height: 24, width: 24, channels: 3))
                    ModelZoo.resnet(&b, activation: .linear)
                    return try b.build(convolution: options)
                }),
            ]
            for (name, make) in cases {
                for group in [0, 2] {
                    var results: [(logits: [Float], gradients: [Float], state: [Float], unwritten: Int)] = []
                    for handOn in [false, true] {
                        var context = PassContext(training: true, step: 1)
                        context.normalizationGroup = group
                        // The sentinels: the BatchNorms read only by an addition.
                        let pass = try trainingPassOfFour(make, handOn: handOn, seed: 5, inputSeed: 6, inputs: 2, labels: [1, 0, 0, 1],
                                                          context: context) { network in
                            Network.additionPlan(network.nodes).enumerated().compactMap { $0.element == nil ? nil : $0.offset }
                        }
                        results.append((pass.logits, pass.network.gradients.array, pass.network.state.array, pass.unwritten))
                        XCTAssertEqual(pass.sentinels, 4, "\(name): the BatchNorms that end the blocks")
                    }
                    let what = "\(name), \(precision), groups of \(group)"
                    XCTAssertEqual(results[0].unwritten, 0, "\(what): a BatchNorm did not write its output, without the addition")
                    XCTAssertEqual(results[1].unwritten, 4, "\(what): a BatchNorm wrote its output and the addition's")
                    XCTAssertFalse(results[0].logits.contains { $0.isNaN }, "\(what): NaN logits")
                    XCTAssertEqual(results[0].logits.map(\.bitPattern), results[1].logits.map(\.bitPattern), "\(what): logits differ")
                    XCTAssertTrue(results[0].gradients.contains { $0 != 0 }, "\(what): no gradient")
                    XCTAssertEqual(results[0].gradients.map(\.bitPattern), results[1].gradients.map(\.bitPattern),
                                   "\(what): parameter gradients differ with the BatchNorm adding into its addition")
                    XCTAssertEqual(results[0].state.map(\.bitPattern), results[1].state.map(\.bitPattern),
                                   "\(what): moving statistics differ")
                }
            }
        }
    }

    /// fp32, and bf16 where this CPU computes it.
    private static var precisionsHere: [Precision] {
        BF16Gemm.available && Precision.bf16.unavailableReason == nil ? [.fp32, .bf16] : [.fp32]
    }

    /// One training pass of 4 samples through the network `make` builds, hand-offs on or off
    /// (`handsOnActivationMasks`), initialised with `seed`, its input uniform in ±`inputs`: the
    /// outputs of the nodes `sentinels` picks set to NaN, forward, the loss of `labels`, backward
    /// into zeroed gradients. Returns the network, its logits, the sentinels' count and how many
    /// of them the pass left unwritten (NaN still).
    private func trainingPassOfFour(_ make: () throws -> Network, handOn: Bool, seed: UInt64, inputSeed: UInt64, inputs: Float,
                                    labels: [Float], context: PassContext, sentinels: (Network) -> [Int]) throws
        -> (network: Network, logits: [Float], sentinels: Int, unwritten: Int) {
        let network = try make()
        network.handsOnActivationMasks = handOn
        network.initialize(seed: seed)
        network.reserve(maxBatch: 4)
        var random = Random(seed: inputSeed)
        for i in 0..<(4 * network.inputShape.count) { network.input[i] = random.uniform(-inputs, inputs) }
        let watched = sentinels(network)
        for i in watched { network.activation(i).update(repeating: .nan, count: 4 * network.nodes[i].shape.count) }
        let z = network.forward(batch: 4, context: context)
        let logits = Array(UnsafeBufferPointer(start: z, count: 4))
        let unwritten = watched.filter { network.activation($0).pointee.isNaN }.count
        var d = [Float](repeating: 0, count: 4)
        _ = BinaryCrossEntropy.forwardBackward(logits: z, labels: labels, count: 4, normalizer: 4, dLogits: &d)
        network.gradients.zero()
        network.backward(dLogits: d, batch: 4, context: context)
        return (network, logits, watched.count, unwritten)
    }

    /// A small conv net must drive the loss on 8 fixed random images with fixed labels to ~0.
    func testTinyModelOverfitsTinyBatch() throws {
        var b = NetworkBuilder(input: .init(height: 12, width: 12, channels: 3))
        b.add(Conv2D(8, 3, activation: .relu))
        b.add(MaxPool2D(2))
        b.add(Conv2D(16, 3, activation: .relu))
        b.add(GlobalAveragePool())
        b.add(Dense(16, activation: .relu))
        b.add(Dense(1))
        let network = try b.build()
        network.initialize(seed: 2)
        network.reserve(maxBatch: 8)
        var random = Random(seed: 9)
        for i in 0..<(8 * network.inputShape.count) { network.input[i] = random.uniform(-1, 1) }
        let labels: [Float] = [0, 1, 1, 0, 1, 0, 0, 1]
        let adam = Adam(count: network.parameterCount)
        var d = [Float](repeating: 0, count: 8)
        var first = 0.0, last = 0.0, correct = 0
        for step in 0..<300 {
            let context = PassContext(training: true, step: step)
            let z = network.forward(batch: 8, context: context)
            let result = BinaryCrossEntropy.forwardBackward(logits: z, labels: labels, count: 8, normalizer: 8, dLogits: &d)
            if step == 0 { first = result.lossSum / 8 }
            last = result.lossSum / 8
            correct = result.correct
            network.gradients.zero()
            network.backward(dLogits: d, batch: 8, context: context)
            adam.step(parameters: network.parameters.pointer, gradients: network.gradients.pointer, learningRate: 0.01)
        }
        XCTAssertGreaterThan(first, 0.5)
        XCTAssertLessThan(last, 0.05, "loss went from \(first) to \(last)")
        XCTAssertEqual(correct, 8)
    }
}
