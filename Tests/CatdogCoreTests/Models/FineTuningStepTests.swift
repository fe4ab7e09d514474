import CatdogDistributed
import CatdogEngine
import CatdogSupport
import CatdogTraining
import XCTest

/// Training only the layers after a cut (`--freeze until:N`): forward from the cut's activation,
/// backward that stops there, parameter groups with their own learning rates.
final class FineTuningStepTests: XCTestCase {
    /// Each of efficientnet-lite0's 16 block entries and the head's entry is a cut, with the
    /// shapes the architecture gives at 224×224 (block 12 enters at 7×7×192).
    func testEfficientNetBlockEntriesAreCuts() throws {
        let network = try ModelZoo.build("efficientnet-lite0", imageSize: 224)
        let entries = EfficientNetLite.lite0.blockInputs()
        XCTAssertEqual(entries.count, 17)
        for entry in entries { XCTAssertTrue(network.isCut(entry), "node \(entry)") }
        XCTAssertEqual(network.nodes[entries[0]].shape, FeatureShape(height: 112, width: 112, channels: 32))
        XCTAssertEqual(network.nodes[entries[12]].shape, FeatureShape(height: 7, width: 7, channels: 192))
        XCTAssertEqual(network.nodes[entries[16]].shape, FeatureShape(height: 7, width: 7, channels: 320))
        // Inside a block with an identity skip the graph is not cut: the Add reads the block's input.
        XCTAssertFalse(network.isCut(entries[2] + 1))
    }

    /// Gradients of the layers after the cut, computed from the cut's activation alone, equal
    /// those of a full backward pass (1e-6 relative); the layers before it get none.
    func testBackwardFromACutMatchesTheFullPass() throws {
        let network = try ModelZoo.build("efficientnet-lite0", imageSize: 32)
        network.initialize(seed: 3)
        network.reserve(maxBatch: 2)
        var random = Random(seed: 5)
        for i in 0..<(2 * network.inputShape.count) { network.input[i] = random.uniform(-1, 1) }
        let cut = EfficientNetLite.lite0.blockInputs()[13]
        let trainable = network.parameterRange(after: cut)
        XCTAssertGreaterThan(trainable.lowerBound, 0)
        let context = PassContext(training: false)
        var dLogits: [Float] = [0.7, -0.4]
        network.forward(batch: 2, context: context)
        network.gradients.zero()
        network.backward(dLogits: &dLogits, batch: 2, context: context)
        let full = Array(UnsafeBufferPointer(start: network.gradients.pointer, count: network.parameterCount))
        network.gradients.zero()
        network.forward(batch: 2, context: context, from: cut)
        network.backward(dLogits: &dLogits, batch: 2, context: context, stopAt: cut)
        for i in 0..<trainable.lowerBound { XCTAssertEqual(network.gradients[i], 0, "frozen parameter \(i)") }
        var largest: Float = 0
        for i in trainable { largest = max(largest, abs(full[i])) }
        XCTAssertGreaterThan(largest, 0)
        for i in trainable {
            XCTAssertEqual(network.gradients[i], full[i], accuracy: 1e-6 * largest, "parameter \(i)")
        }
    }

    /// A data-parallel step with two groups (SGD, no momentum): the frozen part stays bit for
    /// bit, each group moves by −lr·scale·gradient, and repeated steps drive the loss down.
    func testParameterGroupsTrainOnlyAfterTheCutAtTheirOwnRates() throws {
        let (network, cut, body, head) = try smallCutNetwork()
        let groups = [DataParallelStep.ParameterGroup(range: body, optimizer: SGD(count: body.count, momentum: 0), learningRateScale: 0.1),
                      DataParallelStep.ParameterGroup(range: head, optimizer: SGD(count: head.count, momentum: 0))]
        let step = DataParallelStep(network: network, groups: groups, firstNode: cut, communicator: LocalCommunicator(),
                                    overlap: true, bucketBytes: 64)
        var random = Random(seed: 2)
        let width = network.nodes[cut].shape.count
        for i in 0..<(4 * width) { network.activation(cut)[i] = random.uniform(0, 1) }
        for (i, label) in [1, 0, 0, 1].enumerated() { step.labels[i] = Float(label) }
        let before = Array(UnsafeBufferPointer(start: network.parameters.pointer, count: network.parameterCount))
        let lr: Float = 0.05
        let first = try step.run(batch: 4, normalizer: 4, context: PassContext(training: true), learningRate: lr, weightDecay: 0)
        for i in 0..<body.lowerBound { XCTAssertEqual(network.parameters[i], before[i], "frozen parameter \(i)") }
        for i in body { XCTAssertEqual(network.parameters[i], before[i] - 0.1 * lr * network.gradients[i], accuracy: 1e-6) }
        for i in head { XCTAssertEqual(network.parameters[i], before[i] - lr * network.gradients[i], accuracy: 1e-6) }
        var last = first
        for _ in 0..<200 {
            last = try step.run(batch: 4, normalizer: 4, context: PassContext(training: true), learningRate: lr, weightDecay: 0)
        }
        XCTAssertLessThan(last.lossSum, first.lossSum * 0.5)
        for i in 0..<body.lowerBound { XCTAssertEqual(network.parameters[i], before[i]) }
    }

    /// AdamW groups with a moving average: each group's decay, step and average run in one
    /// pass, the frozen part's average outside them; the result is bit for bit what the
    /// passes one after another give (decay of the kernels after the cut, each group's step
    /// at its rate, the average of every weight), and the frozen weights do not move.
    func testGroupsUpdateInOnePassAsInThree() throws {
        let (network, cut, body, head) = try smallCutNetwork()
        let groups = [DataParallelStep.ParameterGroup(range: body, optimizer: Adam(count: body.count, kind: .adamw), learningRateScale: 0.1),
                      DataParallelStep.ParameterGroup(range: head, optimizer: Adam(count: head.count, kind: .adamw))]
        let step = DataParallelStep(network: network, groups: groups, firstNode: cut, communicator: LocalCommunicator(),
                                    overlap: true, bucketBytes: 64)
        var random = Random(seed: 2)
        for i in 0..<(4 * network.nodes[cut].shape.count) { network.activation(cut)[i] = random.uniform(0, 1) }
        for (i, label) in [1, 0, 0, 1].enumerated() { step.labels[i] = Float(label) }
        let before = FloatBuffer(network.parameters.array)
        let average = FloatBuffer((0..<network.parameterCount).map { _ in random.uniform(-1, 1) }), averageBefore = average.array
        let lr: Float = 0.05, decay: Float = 0.3, d: Float = 0.9
        _ = try step.run(batch: 4, normalizer: 4, context: PassContext(training: true), learningRate: lr, weightDecay: decay,
                         average: (average, d))
        // The same update, pass by pass, from the weights before and the step's gradients.
        let expected = before, expectedAverage = FloatBuffer(averageBefore)
        decayWeights(lr * decay, ranges: network.decayingRanges(from: body.lowerBound), parameters: expected.pointer)
        for (group, scale) in [(body, Float(0.1)), (head, 1)] {
            Adam(count: group.count, kind: .adamw).step(parameters: expected.pointer + group.lowerBound,
                                                        gradients: network.gradients.pointer + group.lowerBound, learningRate: lr * scale)
        }
        WeightAverage.update(expectedAverage, toward: expected, decay: d)
        XCTAssertEqual(network.parameters.array.map(\.bitPattern), expected.array.map(\.bitPattern), "weights")
        XCTAssertEqual(average.array.map(\.bitPattern), expectedAverage.array.map(\.bitPattern), "average")
        for i in 0..<body.lowerBound { XCTAssertEqual(network.parameters[i], before[i], "frozen parameter \(i)") }
        XCTAssertNotEqual(average[0], averageBefore[0], "the frozen part's average did not move")
        XCTAssertFalse(network.decayingRanges(from: body.lowerBound).isEmpty)
    }

    /// A conv, a pool (the cut), a conv and a dense head on 8×8×3, for 4 samples: the body
    /// after the cut and the head as parameter ranges.
    /// On 2 ranks with overlap, the optimizers whose update is elementwise (AdamW, Adam, SGD with
    /// momentum, RMSProp, AdaGrad) update each bucket's parameters as its sums arrive, in
    /// stretches of 7 here (`updatesAsSumsArrive`), while later buckets are still on the network.
    /// Three steps of two groups after a frozen part, with weight decay (decoupled for AdamW, in
    /// the gradients for the others) and a moving average, end with the same bits in the weights,
    /// the average and the optimizer's state as updating everything after the last bucket.
    /// Nadam and LAMB (a product over the steps, a norm over each tensor) wait for every bucket.
    func testUpdatingEachBucketAsItsSumsArriveGivesTheSameBits() throws {
        for kind in [OptimizerKind.nadam, .lamb] {
            XCTAssertFalse(kind.make(count: 10).updatesInSlices, "\(kind)")
        }
        for kind in [OptimizerKind.adamw, .adam, .sgd, .rmsprop, .adagrad] {
            func train(eachBucket: Bool) throws -> [[UInt32]] {
                try ThreadCommunicator.run(ranks: 2) { comm -> [UInt32] in
                    let (network, cut, body, head) = try self.smallCutNetwork()
                    let groups = [DataParallelStep.ParameterGroup(range: body, optimizer: kind.make(count: body.count), learningRateScale: 0.1),
                                  DataParallelStep.ParameterGroup(range: head, optimizer: kind.make(count: head.count))]
                    let step = DataParallelStep(network: network, groups: groups, firstNode: cut, communicator: comm,
                                                overlap: true, bucketBytes: 64)
                    step.updateEachBucket = eachBucket
                    step.updateStretch = 7
                    XCTAssertEqual(step.updatesAsSumsArrive, eachBucket)
                    XCTAssertGreaterThanOrEqual(step.buckets.count, 2)
                    var same = Random(seed: 3), random = Random(seed: 2, UInt64(comm.rank))
                    let average = FloatBuffer((0..<network.parameterCount).map { _ in same.uniform(-1, 1) })
                    for _ in 0..<3 {
                        for i in 0..<(2 * network.nodes[cut].shape.count) { network.activation(cut)[i] = random.uniform(0, 1) }
                        for i in 0..<2 { step.labels[i] = Float((comm.rank + i) % 2) }
                        _ = try step.run(batch: 2, normalizer: 4, context: PassContext(training: true), learningRate: 0.05,
                                         weightDecay: 0.3, average: (average, 0.9))
                    }
                    let moments = groups.flatMap { $0.optimizer.slots.flatMap(\.buffer.array) }
                    XCTAssertEqual(groups.map(\.optimizer.iterations), [3, 3])
                    return (network.parameters.array + average.array + moments).map(\.bitPattern)
                }
            }
            let asTheyArrive = try train(eachBucket: true), afterAll = try train(eachBucket: false)
            for rank in 0..<2 {
                let apart = zip(asTheyArrive[rank], afterAll[rank]).filter { $0 != $1 }.count
                XCTAssertEqual(apart, 0, "\(kind) rank \(rank): \(apart) of \(afterAll[rank].count) values differ")
            }
            XCTAssertEqual(asTheyArrive[0], asTheyArrive[1], "\(kind): the ranks disagree")
        }
    }

    func smallCutNetwork() throws -> (network: Network, cut: Int, body: Range<Int>, head: Range<Int>) {
        var b = NetworkBuilder(input: .init(height: 8, width: 8, channels: 3))
        b.add(Conv2D(4, 3, activation: .relu))
        let cut = b.add(MaxPool2D(2))
        b.add(Conv2D(6, 3, activation: .relu))
        b.add(Flatten())
        b.add(Dense(1))
        let network = try b.build()
        network.initialize(seed: 8)
        network.reserve(maxBatch: 4)
        let head = network.parameterRange(ofNode: network.nodes.count - 1)
        let body = network.parameterRange(after: cut).lowerBound..<head.lowerBound
        return (network, cut, body, head)
    }
}
