import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

/// One synchronous data-parallel update, the algorithm in order: forward, loss, backward
/// (starting each gradient bucket's all-reduce as soon as backward has passed its layers),
/// wait for the all-reduces, weight decay, optimizer update. `train` and `bench` share it.
public final class DataParallelStep {
    public let network: Network
    /// Parameter groups (PyTorch's `param_groups`): each range of the flat buffer has its own
    /// optimizer and learning-rate multiplier. Parameters in no group stay frozen.
    public struct ParameterGroup {
        public let range: Range<Int>
        public let optimizer: Optimizer
        public let learningRateScale: Float
        public init(range: Range<Int>, optimizer: Optimizer, learningRateScale: Float = 1) {
            self.range = range
            self.optimizer = optimizer
            self.learningRateScale = learningRateScale
        }
    }
    public let groups: [ParameterGroup]
    /// The first group's optimizer (the only one when the whole network trains).
    public var optimizer: Optimizer { groups[0].optimizer }
    /// Forward starts from this node's activation and backward stops there (0: the input).
    public let firstNode: Int
    /// The parameters that train: from the lowest group to the end of the flat buffer.
    public let trainable: Range<Int>
    public let comm: Communicator
    /// Overlap the all-reduce with backward; else one all-reduce of the whole flat buffer after it.
    public var overlap: Bool
    /// How the buckets are summed across ranks (fp32, fp16, PowerSGD): the step's "reduce".
    public let reduction: GradientReduction
    /// Gradient buckets in backward order: contiguous parameter ranges that are final once
    /// backward has passed their lowest node (`lastNode`).
    public let buckets: [(range: Range<Int>, lastNode: Int)]
    /// Labels (0 cat, 1 dog) of the local batch: the caller fills them with the input.
    /// Holds `batchCapacity` labels (the local batch, which micro-batching may make larger
    /// than the network's reserved batch).
    public let labels: FloatBuffer
    private let dLogits: FloatBuffer
    private var pending: [PendingReduction] = []
    /// When set, the update number this step computes: once its backward is done the rank
    /// tells its peers (the heartbeat), so a rank left waiting can name the ones that never
    /// finished computing it.
    public var heartbeat: Int?
    /// When set, each phase of the step is recorded there (see `Timeline`).
    public var timeline: Timeline?
    private var bucketStarts: [UInt64] = []
    /// The next bucket to start in this update.
    private var nextBucket = 0


    /// Seconds in forward+backward+update, and waiting for all-reduces after backward.
    public private(set) var computeSeconds = 0.0
    public private(set) var exposedCommSeconds = 0.0
    /// Seconds in the optimizer update (weight decay included).
    public private(set) var optimizerSeconds = 0.0
    /// The last update's seconds in forward and backward (which grow with the samples) and in
    /// weight decay and the optimizer (which do not).
    public private(set) var lastStep = (passes: 0.0, update: 0.0)
    /// Wait for the all-reduces by testing them and sleeping in between (20 µs to 1 ms), instead
    /// of spinning in MPI: for more ranks than cores on a machine, where a waiting rank's
    /// spinning takes the core (or the CPU quota) from a rank that still computes.
    public var waitsPolitely = false
    /// Label smoothing ε of the loss's gradient (`BinaryCrossEntropy.smoothedTarget`; 0 = off).
    public var labelSmoothing: Float = 0

    public convenience init(network: Network, optimizer: Optimizer, communicator: Communicator, overlap: Bool,
                            bucketBytes: Int, compression: GradientCompression = .none, allReduce: AllReduceTopology = .flat,
                            batchCapacity: Int = 0) {
        self.init(network: network, groups: [.init(range: 0..<network.parameterCount, optimizer: optimizer)],
                  firstNode: 0, communicator: communicator, overlap: overlap, bucketBytes: bucketBytes,
                  compression: compression, allReduce: allReduce, batchCapacity: batchCapacity)
    }

    /// Trains only the layers after `firstNode` (a cut of the network), whose parameters the
    /// groups cover; the caller fills `network.activation(firstNode)` instead of the input.
    /// PowerSGD sums exactly before update `compressFrom`; its random start comes from `seed`.
    /// With `sharingReductionWith`, the step reduces through that step's reduction and its
    /// state (the same model at another input size, for progressive resizing). `allReduce` is how
    /// exact fp32 gradients are summed: `FP32Reduction`, `HierarchicalReduction` or `PartedReduction`;
    /// with PowerSGD, `.hierarchical` runs it between machines (`HierarchicalReduction.across`).
    public init(network: Network, groups: [ParameterGroup], firstNode: Int, communicator: Communicator, overlap: Bool,
                bucketBytes: Int, compression: GradientCompression = .none, allReduce: AllReduceTopology = .flat, compressFrom: Int = 0, seed: UInt64 = 1,
                batchCapacity: Int = 0, sharingReductionWith other: DataParallelStep? = nil) {
        precondition(!groups.isEmpty && network.isCut(firstNode))
        self.network = network
        self.groups = groups
        self.firstNode = firstNode
        trainable = groups.map(\.range.lowerBound).min()!..<network.parameterCount
        precondition(network.parameterRange(after: firstNode).lowerBound <= trainable.lowerBound)
        comm = communicator
        self.overlap = overlap
        labels = FloatBuffer(count: max(network.maxBatch, batchCapacity))
        dLogits = FloatBuffer(count: network.maxBatch)
        let buckets = DataParallelStep.makeBuckets(network, bytes: bucketBytes, trainable: trainable, firstNode: firstNode)
        self.buckets = buckets
        pending.reserveCapacity(buckets.count)
        if let other {
            precondition(other.buckets.map(\.range) == buckets.map(\.range))
            reduction = other.reduction
            return
        }
        let ranges = buckets.map(\.range)
        switch compression {
        case .none:
            switch allReduce {
            case .flat: reduction = FP32Reduction(buckets: ranges, communicator: communicator)
            case .hierarchical: reduction = HierarchicalReduction(buckets: ranges, communicator: communicator)
            case .parted: reduction = PartedReduction(buckets: ranges, communicator: communicator)
            }
        case .fp16: reduction = FP16Reduction(buckets: ranges, communicator: communicator)
        case .powerSGD(let r, let bf16):
            let betweenMachines = allReduce == .hierarchical
            let powerSGD = PowerSGDReduction(
                buckets: ranges, tensors: network.parameterSlots.map { ($0.offset, $0.shape) }, rank: r,
                startUpdate: compressFrom, seed: seed, communicator: communicator, bf16Factors: bf16, betweenMachines: betweenMachines)
            reduction = betweenMachines ? HierarchicalReduction(buckets: ranges, communicator: communicator, across: powerSGD) : powerSGD
        }
    }

    static func makeBuckets(_ network: Network, bytes: Int, trainable: Range<Int>? = nil,
                            firstNode: Int = 0) -> [(range: Range<Int>, lastNode: Int)] {
        let trainable = trainable ?? 0..<network.parameterCount
        var buckets: [(range: Range<Int>, lastNode: Int)] = []
        var upper = trainable.upperBound
        for index in stride(from: network.nodes.count - 1, through: firstNode + 1, by: -1) {
            let range = network.parameterRange(ofNode: index)
            guard !range.isEmpty, range.lowerBound >= trainable.lowerBound else { continue }
            if (upper - range.lowerBound) * 4 >= bytes {
                buckets.append((range.lowerBound..<upper, index))
                upper = range.lowerBound
            }
        }
        if upper > trainable.lowerBound { buckets.append((trainable.lowerBound..<upper, firstNode + 1)) }
        return buckets
    }

    /// Runs one update on the first `batch` samples of `network.input` and `labels`.
    /// `normalizer` is the global batch size (the loss is the mean over it); a rank whose
    /// slice is empty passes batch 0 and still joins every collective.
    ///
    /// With `input` (batch × the input shape, e.g. a loader's prefetched batch), the samples
    /// go through the network in micro-batches of `network.maxBatch`, their gradients summed
    /// before the one all-reduce (gradient accumulation): memory for activations is set by
    /// the micro-batch, not the batch. The update equals the whole batch's up to float
    /// rounding, except that BatchNorm normalizes each micro-batch by its own statistics
    /// (unless `context` asks for groups of ghost batch normalization, which micro-batches
    /// then hold whole).
    /// `update` is the global update number (PowerSGD starts compressing at one).
    /// With `average`, the weights' moving average (as long as the parameters) follows the
    /// updated weights with that decay, in the optimizer's pass where it can.
    public func run(batch: Int, input: UnsafePointer<Float>? = nil, normalizer: Int, context: PassContext,
                    learningRate: Float, weightDecay: Float, update: Int = 0,
                    average: (weights: FloatBuffer, decay: Float)? = nil) throws -> (lossSum: Double, correct: Int) {
        precondition(input == nil ? batch <= network.maxBatch : (firstNode == 0 && batch <= labels.count))
        let start = Date()
        network.gradients.zero()
        pending.removeAll(keepingCapacity: true)
        bucketStarts.removeAll(keepingCapacity: true)
        nextBucket = 0
        let result = try accumulate(batch: batch, input: input, normalizer: normalizer, context: context, update: update)
        let backwardDone = Date()
        if let heartbeat { comm.announceProgress(heartbeat) }
        let updating: Double
        if updatesAsSumsArrive {
            updating = try reduceUpdatingEachBucket(update: update, learningRate: learningRate, weightDecay: weightDecay,
                                                    average: average)
        } else {
            try reduce(update: update)
            let reduced = Date()
            apply(learningRate: learningRate, weightDecay: weightDecay, average: average)
            updating = Date().timeIntervalSince(reduced)
        }
        let finished = Date()
        let waited = finished.timeIntervalSince(backwardDone) - updating
        lastStep = (backwardDone.timeIntervalSince(start), updating)
        exposedCommSeconds += waited
        optimizerSeconds += updating
        computeSeconds += finished.timeIntervalSince(start) - waited
        return result
    }

    /// Whether each bucket's parameters are updated as soon as its sums arrive, while the
    /// later buckets are still on the network (`reduceUpdatingEachBucket`): with overlap, on more
    /// than one rank, where every group's optimizer updates in slices (all but Nadam and LAMB).
    public var updatesAsSumsArrive: Bool {
        overlapping && updateEachBucket && groups.allSatisfy { $0.optimizer.updatesInSlices }
    }
    /// Off: the update waits for every bucket, as before it could update in slices.
    public var updateEachBucket = true

    /// Waits for the buckets in any order and updates each one's parameters as it arrives, a
    /// stretch of `updateStretch` at a time with the pending buckets tested in between (their
    /// further rounds, e.g. PowerSGD's second product, start there); then whatever no bucket
    /// holds (frozen weights' decay and average), and each group's `finishUpdate`. The same bits
    /// as `reduce` then `apply`: each parameter's update reads only its own values. Returns the
    /// seconds spent updating. A reduction that fails part way leaves the buckets before it
    /// updated; its error ends the run, which resumes from its last checkpoint.
    private func reduceUpdatingEachBucket(update: Int, learningRate: Float, weightDecay: Float,
                                          average: (weights: FloatBuffer, decay: Float)?) throws -> Double {
        if let average { precondition(average.weights.count == network.parameterCount) }
        let all = network.decayingRanges(from: trainable.lowerBound)
        let decaying: Decaying = (all, groups.map { Self.relative(all, to: $0.range) })
        let exposedStart = Timeline.mark(timeline)
        try startBuckets(through: 0, update: update)
        var done = [Bool](repeating: false, count: pending.count), left = pending.count
        var updating = 0.0, nap: UInt32 = 20
        func testAll() throws {
            for (index, bucket) in pending.enumerated() where !done[index] {
                guard try bucket.test() else { continue }
                done[index] = true
                left -= 1
                if let timeline {
                    let mib = Double(reduction.wireBytes(bucket: index, update: update)) / 1_048_576
                    timeline.record(String(format: "all-reduce bucket %d (%.2f MiB)", index, mib), "comm", since: bucketStarts[index])
                }
            }
        }
        var updated = [Bool](repeating: false, count: pending.count)
        while updated.contains(false) {
            try testAll()
            guard let index = updated.indices.first(where: { done[$0] && !updated[$0] }) else {
                if waitsPolitely {
                    usleep(nap)
                    nap = min(nap * 2, 1000)
                }
                continue
            }
            nap = 20
            let started = Date(), mark = Timeline.mark(timeline)
            let range = buckets[index].range
            var from = range.lowerBound
            while from < range.upperBound {
                let to = min(from + updateStretch, range.upperBound)
                applyStretch(from..<to, learningRate: learningRate, weightDecay: weightDecay, decaying: decaying, average: average)
                from = to
                if left > 0 { try testAll() }
            }
            updated[index] = true
            updating += Date().timeIntervalSince(started)
            timeline?.record("optimizer, bucket \(index)", "compute", since: mark)
        }
        timeline?.record("waiting for the all-reduce", "wait", since: exposedStart)
        let started = Date()
        for rest in Self.gaps(in: 0..<network.parameterCount, outside: buckets.map(\.range)) {
            applyStretch(rest, learningRate: learningRate, weightDecay: weightDecay, decaying: decaying, average: average)
        }
        for group in groups { group.optimizer.finishUpdate() }
        return updating + Date().timeIntervalSince(started)
    }

    /// Parameters a bucket's update covers between two tests of the pending buckets: 64K
    /// (256 KB of each of the weights, gradients, moments and average; ~25 µs on a Zen 5 core).
    public var updateStretch = 1 << 16 {
        didSet { precondition(updateStretch > 0) }
    }

    /// The kernels' ranges that weight decay applies to, in the flat buffer and relative to each
    /// group: worked out once a step, not for every stretch.
    private typealias Decaying = (all: [Range<Int>], byGroup: [[Range<Int>]])

    /// `apply`'s work on the parameters `stretch` (indices into the flat buffer) alone.
    private func applyStretch(_ stretch: Range<Int>, learningRate: Float, weightDecay: Float, decaying ranges: Decaying,
                              average: (weights: FloatBuffer, decay: Float)?) {
        let p = network.parameters.pointer, g = network.gradients.pointer
        let decaying = ranges.all
        let decoupled = groups.first?.optimizer.kind.decouplesWeightDecay == true
        let decayFactor = decoupled ? learningRate * weightDecay : 0
        if !decoupled {
            addWeightDecay(weightDecay, ranges: decaying.map { $0.clamped(to: stretch) }.filter { !$0.isEmpty }, parameters: p, gradients: g)
        }
        for (group, mine) in zip(groups, ranges.byGroup) {
            let r = group.range, part = r.clamped(to: stretch)
            guard !part.isEmpty else { continue }
            group.optimizer.update(slice: (part.lowerBound - r.lowerBound)..<(part.upperBound - r.lowerBound),
                                   parameters: p + r.lowerBound, gradients: g + r.lowerBound, count: r.count,
                                   learningRate: learningRate * group.learningRateScale, decayFactor: decayFactor,
                                   decaying: mine,
                                   average: average.map { $0.weights.pointer + r.lowerBound }, averageDecay: average?.decay ?? 0)
        }
        for o in Self.gaps(in: stretch, outside: groups.map(\.range)) {
            updateOutsideGroups(o, decayFactor: decayFactor, decaying: decaying, average: average)
        }
    }

    /// Overlap the reduction with backward (with one rank there is nothing to overlap).
    private var overlapping: Bool { overlap && comm.size > 1 }

    /// Starts the buckets backward has finished, through `node`. Every rank must start the
    /// same buckets in the same order, or the collectives would pair up wrongly and hang.
    private func startBuckets(through node: Int, update: Int) throws {
        while nextBucket < buckets.count, buckets[nextBucket].lastNode >= node {
            bucketStarts.append(Timeline.mark(timeline))
            pending.append(try reduction.start(bucket: nextBucket, gradients: network.gradients.pointer, update: update))
            nextBucket += 1
        }
    }

    /// Forward, loss and backward over the batch in micro-batches, their gradients summed;
    /// the buckets start during the last micro-batch's backward, once its gradients are final.
    private func accumulate(batch: Int, input: UnsafePointer<Float>?, normalizer: Int, context: PassContext,
                            update: Int) throws -> (lossSum: Double, correct: Int) {
        var result: (lossSum: Double, correct: Int) = (0, 0)
        var overlapError: Error?
        let overlapping = self.overlapping
        // With ghost batch normalization a micro-batch holds whole groups.
        let group = context.normalizationGroup
        let micro = input == nil ? max(batch, 1) : group > 0 ? network.maxBatch / group * group : network.maxBatch
        precondition(micro > 0, "the network's batch holds no whole group of ghost batch normalization")
        let sampleFloats = network.inputShape.count
        var first = 0
        while first < batch {
            let count = min(micro, batch - first)
            let isLast = first + count == batch
            if let input { network.input.update(from: input + first * sampleFloats, count: count * sampleFloats) }
            var microContext = context
            microContext.firstSample += first
            microContext.firstPassOfUpdate = first == 0
            let forwardStart = Timeline.mark(timeline)
            let logits = network.forward(batch: count, context: microContext, from: firstNode)
            let part = BinaryCrossEntropy.forwardBackward(logits: logits, labels: labels.pointer + first, count: count,
                                                          normalizer: normalizer, dLogits: dLogits.pointer,
                                                          smoothing: labelSmoothing)
            timeline?.record("forward (\(count) samples)", "compute", since: forwardStart)
            let backwardStart = Timeline.mark(timeline)
            result.lossSum += part.lossSum
            result.correct += part.correct
            network.backward(dLogits: dLogits.pointer, batch: count, context: microContext, stopAt: firstNode) { node in
                guard isLast, overlapping, overlapError == nil else { return }
                do {
                    try self.startBuckets(through: node, update: update)
                    for reduction in self.pending { _ = try reduction.test() }  // lets MPI progress them
                } catch { overlapError = error }
            }
            timeline?.record("backward (\(count) samples)", "compute", since: backwardStart)
            first += count
        }
        if let overlapError { throw overlapError }
        return result
    }

    /// Waits until every bucket is summed across ranks (starting those backward did not:
    /// all of them without overlap; fp32 without overlap is one all-reduce).
    private func reduce(update: Int) throws {
        let exposedStart = Timeline.mark(timeline)
        defer { timeline?.record("waiting for the all-reduce", "wait", since: exposedStart) }
        if !overlapping, reduction is FP32Reduction {
            try comm.allReduceSum(network.gradients.pointer + trainable.lowerBound, count: trainable.count)
            return
        }
        try startBuckets(through: 0, update: update)
        for (index, pendingBucket) in pending.enumerated() {
            if waitsPolitely {
                // Sleeps 20 µs, doubling to 1 ms: every wake-up costs the core a little.
                var nap: UInt32 = 20
                while try !pendingBucket.test() {
                    usleep(nap)
                    nap = min(nap * 2, 1000)
                }
            } else {
                try pendingBucket.wait()
            }
            if let timeline {
                let mib = Double(reduction.wireBytes(bucket: index, update: update)) / 1_048_576
                timeline.record(String(format: "all-reduce bucket %d (%.2f MiB)", index, mib), "comm", since: bucketStarts[index])
            }
        }
    }

    /// Weight decay (decoupled, or as L2 in the gradients), each group's optimizer step and
    /// the moving average: each group's in one update (`Optimizer.update`; Adam's is one pass
    /// over memory), then the decay and average of what no group holds.
    private func apply(learningRate: Float, weightDecay: Float, average: (weights: FloatBuffer, decay: Float)?) {
        let optimizerStart = Timeline.mark(timeline)
        defer { timeline?.record("optimizer", "compute", since: optimizerStart) }
        let p = network.parameters.pointer, g = network.gradients.pointer
        let decaying = network.decayingRanges(from: trainable.lowerBound)
        let decoupled = groups.first?.optimizer.kind.decouplesWeightDecay == true
        let decayFactor = decoupled ? learningRate * weightDecay : 0
        if !decoupled { addWeightDecay(weightDecay, ranges: decaying, parameters: p, gradients: g) }
        if let average { precondition(average.weights.count == network.parameterCount) }
        for group in groups {
            let r = group.range
            group.optimizer.update(parameters: p + r.lowerBound, gradients: g + r.lowerBound, count: r.count,
                                   learningRate: learningRate * group.learningRateScale, decayFactor: decayFactor,
                                   decaying: Self.relative(decaying, to: r),
                                   average: average.map { $0.weights.pointer + r.lowerBound }, averageDecay: average?.decay ?? 0)
        }
        for o in Self.gaps(in: 0..<network.parameterCount, outside: groups.map(\.range)) {
            updateOutsideGroups(o, decayFactor: decayFactor, decaying: decaying, average: average)
        }
    }

    /// Weights outside every group (frozen) are decayed and averaged all the same: they may be
    /// unfrozen later.
    private func updateOutsideGroups(_ o: Range<Int>, decayFactor: Float, decaying: [Range<Int>],
                                     average: (weights: FloatBuffer, decay: Float)?) {
        let p = network.parameters.pointer
        decayWeights(decayFactor, ranges: decaying.map { $0.clamped(to: o) }.filter { !$0.isEmpty }, parameters: p)
        if let average { WeightAverage.update(average.weights.pointer + o.lowerBound, toward: p + o.lowerBound, count: o.count, decay: average.decay) }
    }

    /// The parts of `whole` that none of `ranges` covers, in order.
    static func gaps(in whole: Range<Int>, outside ranges: [Range<Int>]) -> [Range<Int>] {
        var gaps: [Range<Int>] = [], covered = whole.lowerBound
        for r in ranges.map({ $0.clamped(to: whole) }).sorted(by: { $0.lowerBound < $1.lowerBound }) where !r.isEmpty {
            if r.lowerBound > covered { gaps.append(covered..<r.lowerBound) }
            covered = max(covered, r.upperBound)
        }
        if covered < whole.upperBound { gaps.append(covered..<whole.upperBound) }
        return gaps
    }

    /// `ranges` (of the flat buffer) as offsets into the group `r`, the parts outside it dropped.
    static func relative(_ ranges: [Range<Int>], to r: Range<Int>) -> [Range<Int>] {
        ranges.map { $0.clamped(to: r) }.filter { !$0.isEmpty }.map { ($0.lowerBound - r.lowerBound)..<($0.upperBound - r.lowerBound) }
    }

    public func resetTimers() {
        computeSeconds = 0
        exposedCommSeconds = 0
        optimizerSeconds = 0
    }
}
