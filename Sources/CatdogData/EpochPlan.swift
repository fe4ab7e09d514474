import CatdogSupport

/// Which samples each rank trains on at each step of an epoch.
///
/// One global permutation per (seed, epoch); step s covers permutation positions
/// [s·B, (s+1)·B) of the global batch B, and rank r takes its r-th slice of B/N (or of its
/// share, when the ranks' shares follow their speeds). Every rank
/// runs the same number of steps (a rank that stopped early would hang the others in a
/// collective); the last step may be short, and then some ranks get fewer samples, or none.
/// No sample is dropped. Because the global batch at a step does not depend on N, a run
/// resumes on a different rank count at the same position.
public struct EpochPlan: Sendable {
    public let epoch: Int
    public let globalBatch: Int
    public let ranks: Int
    /// The run's seed: with `epoch` it sets `order`, and the next epoch's plan is made from it.
    public let seed: UInt64
    public let order: [Int]

    public struct BatchSizeError: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// B/N samples for each rank, or with `shares` (see `withShares`) those, where B need not
    /// divide by N.
    public init(sampleCount: Int, globalBatch: Int, ranks: Int, seed: UInt64, epoch: Int, shares: [Int]? = nil) throws {
        guard globalBatch > 0, ranks > 0 else { throw BatchSizeError(description: "batch size and rank count must be positive") }
        guard shares != nil || globalBatch % ranks == 0 else {
            throw BatchSizeError(description: """
                the global batch size \(globalBatch) does not divide among \(ranks) ranks; \
                use a global batch size that is a multiple of \(ranks) (e.g. \(max(ranks, globalBatch / ranks * ranks)))
                """)
        }
        self.epoch = epoch
        self.globalBatch = globalBatch
        self.ranks = ranks
        self.seed = seed
        var random = Random(seed: seed, 0xE90C, UInt64(epoch))
        order = random.permutation(sampleCount)
        let split = shares ?? Array(repeating: globalBatch / ranks, count: ranks)
        try EpochPlan.check(split, globalBatch: globalBatch, ranks: ranks)
        self.shares = split
        offsets = EpochPlan.offsets(split)
    }

    /// Samples of each global batch that each rank takes, in rank order: B/N each by default,
    /// or a balanced split (`withShares`). Rank r's slice of a step starts after ranks 0..<r's.
    public private(set) var shares: [Int]
    private var offsets: [Int]

    /// The same epoch with rank r taking `shares[r]` samples of each global batch (their sum is
    /// the global batch). Which samples a step holds, and their order, do not change.
    public func withShares(_ shares: [Int]) throws -> EpochPlan {
        try EpochPlan.check(shares, globalBatch: globalBatch, ranks: ranks)
        var plan = self
        plan.shares = shares
        plan.offsets = EpochPlan.offsets(shares)
        return plan
    }

    static func check(_ shares: [Int], globalBatch: Int, ranks: Int) throws {
        guard shares.count == ranks, shares.allSatisfy({ $0 >= 0 }), shares.reduce(0, +) == globalBatch else {
            throw BatchSizeError(description: "shares \(shares) do not split a global batch of \(globalBatch) among \(ranks) ranks")
        }
    }

    static func offsets(_ shares: [Int]) -> [Int] {
        var sum = 0
        return shares.map { share in defer { sum += share }; return sum }
    }

    /// The largest slice any rank takes.
    public var largestShare: Int { shares.max() ?? 0 }
    public var steps: Int { (order.count + globalBatch - 1) / globalBatch }

    /// The plan of the epoch after this one, with the same shares.
    public func following() throws -> EpochPlan {
        try EpochPlan(sampleCount: order.count, globalBatch: globalBatch, ranks: ranks, seed: seed, epoch: epoch + 1, shares: shares)
    }

    /// Positions (into the sample list) that `rank` processes at `step`.
    public func samples(step: Int, rank: Int) -> ArraySlice<Int> {
        let start = min(step * globalBatch + offsets[rank], order.count)
        let end = min(start + shares[rank], order.count, (step + 1) * globalBatch)
        return order[start..<max(start, end)]
    }

    /// Number of samples in the global batch of `step` (the loss normalizer).
    public func globalCount(step: Int) -> Int {
        min(globalBatch, order.count - step * globalBatch)
    }

    /// Global index of the first sample `rank` holds at `step` (keys dropout masks).
    public func firstPosition(step: Int, rank: Int) -> Int { epoch * order.count + step * globalBatch + offsets[rank] }
}
