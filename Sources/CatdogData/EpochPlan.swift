import CatdogSupport

/// Which samples each rank trains on at each step of an epoch.
///
/// One global permutation per (seed, epoch); step s covers permutation positions
/// [s·B, (s+1)·B) of the global batch B, and rank r takes its r-th slice of B/N. Every rank
/// runs the same number of steps (a rank that stopped early would hang the others in a
/// collective); the last step may be short, and then some ranks get fewer samples, or none.
/// No sample is dropped. Because the global batch at a step does not depend on N, a run
/// resumes on a different rank count at the same position.
public struct EpochPlan: Sendable {
    public let epoch: Int
    public let globalBatch: Int
    public let ranks: Int
    public let order: [Int]

    public struct BatchSizeError: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public init(sampleCount: Int, globalBatch: Int, ranks: Int, seed: UInt64, epoch: Int) throws {
        guard globalBatch > 0, ranks > 0 else { throw BatchSizeError(description: "batch size and rank count must be positive") }
        guard globalBatch % ranks == 0 else {
            throw BatchSizeError(description: """
                the global batch size \(globalBatch) does not divide among \(ranks) ranks; \
                use a global batch size that is a multiple of \(ranks) (e.g. \(max(ranks, globalBatch / ranks * ranks)))
                """)
        }
        self.epoch = epoch
        self.globalBatch = globalBatch
        self.ranks = ranks
        var random = Random(seed: seed, 0xE90C, UInt64(epoch))
        order = random.permutation(sampleCount)
    }

    public var localBatch: Int { globalBatch / ranks }
    public var steps: Int { (order.count + globalBatch - 1) / globalBatch }

    /// Positions (into the sample list) that `rank` processes at `step`.
    public func samples(step: Int, rank: Int) -> ArraySlice<Int> {
        let start = min(step * globalBatch + rank * localBatch, order.count)
        let end = min(start + localBatch, order.count, (step + 1) * globalBatch)
        return order[start..<max(start, end)]
    }

    /// Number of samples in the global batch of `step` (the loss normalizer).
    public func globalCount(step: Int) -> Int {
        min(globalBatch, order.count - step * globalBatch)
    }

    /// Global index of the first sample `rank` holds at `step` (keys dropout masks).
    public func firstPosition(step: Int, rank: Int) -> Int { epoch * order.count + step * globalBatch + rank * localBatch }
}
