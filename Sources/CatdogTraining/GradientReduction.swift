import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

/// The "reduce" of a data-parallel step (accumulate → reduce → apply): how every rank's
/// gradient buckets become, on every rank, the sum the optimizer applies. The step starts the
/// buckets in backward order, the same on every rank, and tests them while backward runs;
/// `wait` leaves the bucket's (possibly approximated) sum in place in the gradient buffer.
public protocol GradientReduction: AnyObject {
    /// For logs: "fp32", "fp16", "PowerSGD rank 4".
    var name: String { get }
    /// The buckets, in the order they are started.
    var buckets: [Range<Int>] { get }
    /// Bytes this rank sends into the all-reduces of `bucket` at update `update`.
    func wireBytes(bucket: Int, update: Int) -> Int
    /// Starts reducing bucket `bucket` of `gradients` for global update `update`.
    func start(bucket: Int, gradients: UnsafeMutablePointer<Float>, update: Int) throws -> PendingReduction
}

/// Every bucket summed exactly in fp32: the result does not depend on the rank count.
public final class FP32Reduction: GradientReduction {
    public let buckets: [Range<Int>]
    let comm: Communicator
    public var name: String { "fp32" }

    public init(buckets: [Range<Int>], communicator: Communicator) {
        self.buckets = buckets
        comm = communicator
    }

    public func wireBytes(bucket: Int, update: Int) -> Int { buckets[bucket].count * 4 }

    public func start(bucket: Int, gradients: UnsafeMutablePointer<Float>, update: Int) throws -> PendingReduction {
        let range = buckets[bucket]
        return try comm.startAllReduceSum(gradients + range.lowerBound, count: range.count)
    }
}

/// Exact fp32 sums in which each rank adds up a part of every bucket in proportion to its
/// weight, its share of the global batch (`Communicator.startPartedAllReduceSum`): a rank
/// that computes little, being slow, also sums little, and it sends and receives each bucket
/// in two rounds instead of a ring's 2(N-1). The sum is the ranks' gradients added in rank
/// order, the same whatever the weights.
public final class PartedReduction: GradientReduction {
    public let buckets: [Range<Int>]
    let comm: Communicator
    /// One a rank, at least 0, not all 0: the shares of the batch the step splits by. Change
    /// them only between updates, to the same values on every rank.
    public var weights: [Int] {
        didSet { precondition(Self.valid(weights, ranks: comm.size), "weights \(weights) for \(comm.size) ranks") }
    }
    public var name: String { "fp32, parted by share" }

    public init(buckets: [Range<Int>], communicator: Communicator, weights: [Int]? = nil) {
        precondition(buckets.count <= Self.maxBuckets)
        self.buckets = buckets
        comm = communicator
        self.weights = weights ?? .init(repeating: 1, count: communicator.size)
        precondition(Self.valid(self.weights, ranks: communicator.size))
    }

    /// Tags of `startPartedAllReduceSum`: one a bucket.
    public static let maxBuckets = partedSumTags

    /// Weights of at most 2^24 each and 2^31 together, so that `parts` of a bucket (at most
    /// 2^31 values) multiplies within 64 bits.
    static func valid(_ weights: [Int], ranks: Int) -> Bool {
        weights.count == ranks && weights.allSatisfy { (0...(1 << 24)).contains($0) } && weights.contains { $0 > 0 }
            && weights.reduce(0, +) <= 1 << 31
    }

    /// `count` values in parts by `weights`: part r ends at count × (w0 + … + wr) / Σw, rounded down.
    public static func parts(count: Int, weights: [Int]) -> [Int] {
        let total = weights.reduce(0, +)
        var parts: [Int] = [], cumulative = 0, end = 0
        for w in weights {
            cumulative += w
            let next = count * cumulative / total
            parts.append(next - end)
            end = next
        }
        return parts
    }

    /// This rank sends the others its values of their parts, then the sum of its own to each.
    public func wireBytes(bucket: Int, update: Int) -> Int {
        let count = buckets[bucket].count, mine = Self.parts(count: count, weights: weights)[comm.rank]
        return comm.size > 1 ? 4 * ((count - mine) + mine * (comm.size - 1)) : 0
    }

    public func start(bucket: Int, gradients: UnsafeMutablePointer<Float>, update: Int) throws -> PendingReduction {
        let range = buckets[bucket]
        return try comm.startPartedAllReduceSum(gradients + range.lowerBound, count: range.count,
                                                parts: Self.parts(count: range.count, weights: weights), tag: bucket)
    }
}

/// Horovod's fp16 compression: half the bytes, each gradient rounded to fp16 (and flushed to
/// zero below 6e-8) on the way.
public final class FP16Reduction: GradientReduction {
    public let buckets: [Range<Int>]
    let comm: Communicator
    private let half: UnsafeMutablePointer<Float16>
    private let offset: Int
    public var name: String { "fp16" }

    public init(buckets: [Range<Int>], communicator: Communicator) {
        self.buckets = buckets
        comm = communicator
        offset = buckets.map(\.lowerBound).min() ?? 0
        half = .allocate(capacity: max((buckets.map(\.upperBound).max() ?? 0) - offset, 1))
    }

    deinit { half.deallocate() }

    public func wireBytes(bucket: Int, update: Int) -> Int { buckets[bucket].count * 2 }

    public func start(bucket: Int, gradients: UnsafeMutablePointer<Float>, update: Int) throws -> PendingReduction {
        let range = buckets[bucket]
        guard comm.size > 1 else { return try comm.startAllReduceSum(gradients + range.lowerBound, count: range.count) }
        let h = half + (range.lowerBound - offset), g = gradients + range.lowerBound
        convertToHalf(g, h, count: range.count)
        return Then(try comm.startAllReduceSumHalf(h, count: range.count)) { convertFromHalf(h, g, count: range.count) }
    }

    /// A reduction followed by work once it completes.
    final class Then: PendingReduction {
        let inner: PendingReduction
        var after: (() -> Void)?
        init(_ inner: PendingReduction, _ after: @escaping () -> Void) {
            self.inner = inner
            self.after = after
        }
        func test() throws -> Bool {
            guard after != nil else { return true }
            guard try inner.test() else { return false }
            finish()
            return true
        }
        func wait() throws {
            guard after != nil else { return }
            try inner.wait()
            finish()
        }
        private func finish() {
            after?()
            after = nil
        }
    }
}

/// Exact fp32 sums in three stages per bucket (Horovod's hierarchical all-reduce): the ranks of
/// each machine sum into its leader through shared memory, the leaders all-reduce across the
/// network, each leader sends the sum back to its machine. Only one rank per machine sends
/// across the network, once per bucket; with one rank per machine it is the flat all-reduce.
/// The sum is that of `FP32Reduction` up to the order of its additions.
///
/// With `across`, PowerSGD between the machines, its buckets taken in turn by the machine's
/// ranks: bucket b is summed into the machine's rank b mod `railCount`, which compresses it
/// with the machine's error feedback for it, sums P and Q with the ranks of that index on the
/// other machines (its rail), and shares the approximation and Q with its machine. So each
/// rank computes the arithmetic of a share of the buckets, on its machine's sum, where the flat
/// `PowerSGDReduction` has every rank compute all of it on its own gradient; what is applied
/// follows the summed gradients alone, as there, and so is the same up to rounding. One machine
/// compresses too (sending nothing), so that, like the flat PowerSGD, what a run computes
/// depends on the machine and rank counts only through rounding.
///
/// Each stage runs on a communicator of its own and starts, on every rank, in bucket order:
/// a bucket's second stage starts once its first has completed and the previous bucket's
/// second stage has started, and likewise for the third. `advance` moves every bucket as far as
/// it can; a bucket's `PendingReduction` calls it when tested or waited for.
public final class HierarchicalReduction: GradientReduction {
    public let buckets: [Range<Int>]
    let comm: Communicator
    /// PowerSGD between the machines (its `betweenMachines`), or nil for exact sums.
    public let across: PowerSGDReduction?
    public var name: String {
        guard let across else { return "fp32 hierarchical (\(comm.machineCount) machines)" }
        return "\(across.name) between \(comm.machineCount) machine\(comm.machineCount == 1 ? "" : "s") (fp32 sums within each)"
    }

    private enum Stage {
        case idle
        case withinMachine(PendingReduction)
        case acrossMachines(PendingReduction)
        /// Summed across machines (or nothing to sum there); the broadcast has not started.
        case summed
        case sharing(PendingReduction)
        case done
    }
    private var stages: [Stage]
    private var gradients: UnsafeMutablePointer<Float>?
    private var update = 0
    /// Buckets started this update; the next bucket whose second stage may start; the next
    /// whose third may; the first not yet done (all before it are).
    private var started = 0, nextAcross = 0, nextShare = 0, firstUnfinished = 0

    public init(buckets: [Range<Int>], communicator: Communicator, across: PowerSGDReduction? = nil) {
        precondition(across.map { $0.betweenMachines && $0.buckets == buckets } ?? true)
        self.buckets = buckets
        comm = communicator
        self.across = across
        stages = Array(repeating: .idle, count: buckets.count)
        across?.owned = buckets.indices.map { owner(of: $0) == communicator.machineRank }
    }

    /// The rank of each machine that sums bucket `bucket` across the machines: the leader for
    /// exact sums, the machine's ranks in turn for PowerSGD.
    public func owner(of bucket: Int) -> Int { across == nil ? 0 : bucket % comm.railCount }

    /// What crosses the network: the owner's bucket, once; the other ranks' stays on the machine.
    public func wireBytes(bucket: Int, update: Int) -> Int {
        guard comm.machineRank == owner(of: bucket) else { return 0 }
        return across?.wireBytes(bucket: bucket, update: update) ?? buckets[bucket].count * 4
    }

    /// What one machine sends a step into the all-reduces (its ranks' `wireBytes` together).
    public func machineWireBytes(update: Int) -> Int {
        buckets.indices.reduce(0) { $0 + (across?.wireBytes(bucket: $1, update: update) ?? buckets[$1].count * 4) }
    }

    public func start(bucket: Int, gradients: UnsafeMutablePointer<Float>, update: Int) throws -> PendingReduction {
        if bucket == 0 {
            started = 0
            nextAcross = 0
            nextShare = 0
            firstUnfinished = 0
            stages = Array(repeating: .idle, count: buckets.count)
            across?.beginUpdate()
        }
        precondition(bucket == started, "buckets start in order")
        self.gradients = gradients
        self.update = update
        let range = buckets[bucket]
        stages[bucket] = .withinMachine(try comm.startMachineReduceSum(gradients + range.lowerBound, count: range.count, root: owner(of: bucket)))
        started += 1
        try advance()
        return Pending(owner: self, bucket: bucket)
    }

    /// Starts every stage that may start now and notes every one that has completed.
    func advance() throws {
        guard let gradients else { return }
        while nextAcross < started, case .withinMachine(let pending) = stages[nextAcross], try pending.test() {
            let range = buckets[nextAcross]
            if comm.machineRank == owner(of: nextAcross) && (comm.machineCount > 1 || across != nil) {
                stages[nextAcross] = .acrossMachines(try across?.start(bucket: nextAcross, gradients: gradients, update: update)
                    ?? comm.startRailAllReduceSum(gradients + range.lowerBound, count: range.count, channel: 0))
            } else {
                stages[nextAcross] = .summed
            }
            nextAcross += 1
        }
        while nextShare < nextAcross {
            if case .acrossMachines(let pending) = stages[nextShare] {
                guard try pending.test() else { break }
            }
            stages[nextShare] = comm.machineSize > 1 ? .sharing(try share(nextShare, gradients)) : .done
            nextShare += 1
        }
        for b in firstUnfinished..<nextShare {
            if case .sharing(let pending) = stages[b], try pending.test() { stages[b] = .done }
        }
        while firstUnfinished < nextShare, isDone(firstUnfinished) { firstUnfinished += 1 }
    }

    /// The owner's sum of `bucket` to its machine, and with PowerSGD the bucket's new factors Q
    /// (the next update's warm start, which every rank keeps so that any can write it).
    private func share(_ bucket: Int, _ gradients: UnsafeMutablePointer<Float>) throws -> PendingReduction {
        let range = buckets[bucket], root = owner(of: bucket)
        let sum = try comm.startMachineBroadcast(gradients + range.lowerBound, count: range.count, root: root)
        guard let across, case let factors = across.factorRange(bucket: bucket), !factors.isEmpty else { return sum }
        return PowerSGDReduction.Both(sum, try comm.startMachineBroadcast(across.q.pointer + factors.lowerBound, count: factors.count, root: root))
    }

    fileprivate func isDone(_ bucket: Int) -> Bool {
        if case .done = stages[bucket] { return true }
        return false
    }

    /// Blocks until the earliest unfinished bucket's current stage completes.
    fileprivate func waitForEarliest() throws {
        guard let b = stages.indices[firstUnfinished...].first(where: { !isDone($0) }) else { return }
        switch stages[b] {
        case .withinMachine(let p), .acrossMachines(let p), .sharing(let p): try p.wait()
        case .idle, .summed, .done: break
        }
    }

    final class Pending: PendingReduction {
        let owner: HierarchicalReduction
        let bucket: Int
        init(owner: HierarchicalReduction, bucket: Int) {
            self.owner = owner
            self.bucket = bucket
        }
        func test() throws -> Bool {
            try owner.advance()
            return owner.isDone(bucket)
        }
        func wait() throws {
            while true {
                try owner.advance()
                if owner.isDone(bucket) { return }
                try owner.waitForEarliest()
            }
        }
    }
}

extension GradientReduction {
    /// The PowerSGD state of this reduction, flat or between machines (nil without it).
    public var powerSGD: PowerSGDReduction? {
        self as? PowerSGDReduction ?? (self as? HierarchicalReduction)?.across
    }
}
