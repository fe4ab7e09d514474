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
    /// All-reduce gradients in half precision (Horovod's fp16 compression): half the bytes on
    /// the wire, at the cost of fp16 rounding (and underflow below 6e-8) of each gradient.
    public let fp16: Bool
    private let half: UnsafeMutablePointer<Float16>
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

    public init(network: Network, optimizer: Optimizer, communicator: Communicator, overlap: Bool, bucketBytes: Int,
                fp16: Bool = false) {
        self.fp16 = fp16
        half = .allocate(capacity: fp16 ? max(network.parameterCount, 1) : 1)
        self.network = network
        self.optimizer = optimizer
        comm = communicator
        self.overlap = overlap
        labels = FloatBuffer(count: network.maxBatch)
        dLogits = FloatBuffer(count: network.maxBatch)
        buckets = DataParallelStep.makeBuckets(network, bytes: bucketBytes)
        pending.reserveCapacity(buckets.count)
    }

    deinit { half.deallocate() }

    /// Starts the all-reduce of gradient range `range`, in fp16 if asked.
    private func startReduction(_ range: Range<Int>) throws -> PendingReduction {
        guard fp16 else {
            return try comm.startAllReduceSum(network.gradients.pointer + range.lowerBound, count: range.count)
        }
        let g = network.gradients.pointer
        for i in range { half[i] = Float16(g[i]) }
        return try comm.startAllReduceSumHalf(half + range.lowerBound, count: range.count)
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
                pending.append(try startReduction(buckets[next].range))
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
        } else if fp16, comm.size > 1 {
            try startReduction(0..<network.parameterCount).wait()
        } else {
            try comm.allReduceSum(network.gradients.pointer, count: network.parameterCount)
        }
        if fp16, comm.size > 1 {
            let g = network.gradients.pointer
            for i in 0..<network.parameterCount { g[i] = Float(half[i]) }
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
