import Foundation

/// One synchronous data-parallel update, the algorithm in order: forward, loss, backward
/// (starting each gradient bucket's all-reduce as soon as backward has passed its layers),
/// wait for the all-reduces, weight decay, optimizer update. `train` and `bench` share it.
public final class DataParallelStep {
    public let network: Network
    public let optimizer: Optimizer
    public let comm: Communicator
    /// Overlap the all-reduce with backward; else one all-reduce of the whole flat buffer after it.
    public var overlap: Bool
    /// Gradient buckets in backward order: contiguous parameter ranges that are final once
    /// backward has passed their lowest node (`lastNode`).
    public let buckets: [(range: Range<Int>, lastNode: Int)]
    /// Labels (0 cat, 1 dog) of the local batch: the caller fills them with the input.
    public let labels: FloatBuffer
    private let dLogits: FloatBuffer
    private var pending: [PendingReduction] = []

    /// Seconds in forward+backward+update, and waiting for all-reduces after backward.
    public private(set) var computeSeconds = 0.0
    public private(set) var exposedCommSeconds = 0.0

    public init(network: Network, optimizer: Optimizer, communicator: Communicator, overlap: Bool, bucketBytes: Int) {
        self.network = network
        self.optimizer = optimizer
        comm = communicator
        self.overlap = overlap
        labels = FloatBuffer(count: network.maxBatch)
        dLogits = FloatBuffer(count: network.maxBatch)
        buckets = DataParallelStep.makeBuckets(network, bytes: bucketBytes)
        pending.reserveCapacity(buckets.count)
    }

    static func makeBuckets(_ network: Network, bytes: Int) -> [(range: Range<Int>, lastNode: Int)] {
        var buckets: [(range: Range<Int>, lastNode: Int)] = []
        var upper = network.parameterCount
        for index in stride(from: network.nodes.count - 1, through: 1, by: -1) {
            let range = network.parameterRange(ofNode: index)
            guard !range.isEmpty else { continue }
            if (upper - range.lowerBound) * 4 >= bytes {
                buckets.append((range.lowerBound..<upper, index))
                upper = range.lowerBound
            }
        }
        if upper > 0 { buckets.append((0..<upper, 1)) }
        return buckets
    }

    /// Runs one update on the first `batch` samples of `network.input` and `labels`.
    /// `normalizer` is the global batch size (the loss is the mean over it); a rank whose
    /// slice is empty passes batch 0 and still joins every collective.
    public func run(batch: Int, normalizer: Int, context: PassContext, learningRate: Float,
                    weightDecay: Float) throws -> (lossSum: Double, correct: Int) {
        let start = Date()
        network.gradients.zero()
        pending.removeAll(keepingCapacity: true)
        let overlapping = overlap && comm.size > 1
        var next = 0
        // Every rank must start the same buckets in the same order, or the collectives
        // would pair up wrongly and hang.
        func startBuckets(through node: Int) throws {
            while next < buckets.count, buckets[next].lastNode >= node {
                let bucket = buckets[next].range
                pending.append(try comm.startAllReduceSum(network.gradients.pointer + bucket.lowerBound, count: bucket.count))
                next += 1
            }
        }
        var result: (lossSum: Double, correct: Int) = (0, 0)
        var overlapError: Error?
        if batch > 0 {
            let logits = network.forward(batch: batch, context: context)
            result = BinaryCrossEntropy.forwardBackward(logits: logits, labels: labels.pointer, count: batch,
                                                        normalizer: normalizer, dLogits: dLogits.pointer)
            network.backward(dLogits: dLogits.pointer, batch: batch, context: context) { node in
                guard overlapping, overlapError == nil else { return }
                do {
                    try startBuckets(through: node)
                    for reduction in self.pending { _ = try reduction.test() }  // lets MPI progress them
                } catch { overlapError = error }
            }
        }
        if let overlapError { throw overlapError }
        let backwardDone = Date()
        if overlapping {
            try startBuckets(through: 0)
            for reduction in pending { try reduction.wait() }
        } else {
            try comm.allReduceSum(network.gradients.pointer, count: network.parameterCount)
        }
        let reduced = Date()
        addWeightDecay(weightDecay, slots: network.parameterSlots, parameters: network.parameters.pointer,
                       gradients: network.gradients.pointer)
        optimizer.step(parameters: network.parameters.pointer, gradients: network.gradients.pointer, learningRate: learningRate)
        let waited = reduced.timeIntervalSince(backwardDone)
        exposedCommSeconds += waited
        computeSeconds += Date().timeIntervalSince(start) - waited
        return result
    }

    public func resetTimers() {
        computeSeconds = 0
        exposedCommSeconds = 0
    }
}
