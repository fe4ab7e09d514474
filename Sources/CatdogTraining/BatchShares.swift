import CatdogData
import CatdogDistributed
import CatdogRun
import Foundation

/// Each rank's share of the global batch when the lab is not uniform (`--balance`): whole
/// groups of ghost batch normalization, so that a step's mathematics (which samples, their
/// augmentation, each group's BatchNorm statistics, the summed gradient) is that of an even
/// split, and only who computes which group changes.
public enum BatchShares {
    /// `units` groups split among ranks so that the slowest rank finishes first, where rank r
    /// takes `fixed[r]` seconds a step whatever its share (the optimizer) plus one group per
    /// `1 / speeds[r]` seconds: every rank gets one group, at most `maxUnits`, and each further
    /// group goes to the rank that would finish it soonest (ties to the lower rank). Exact for
    /// step times of that form; O(units · log ranks), at most 65,536 groups.
    public static func split(units: Int, speeds: [Double], fixed: [Double]? = nil, maxUnits: Int) -> [Int] {
        let n = speeds.count
        precondition(n > 0 && units >= n && maxUnits >= 1 && maxUnits * n >= units && (fixed?.count ?? n) == n)
        let speed = speeds.map { $0.isFinite && $0 > 0 ? $0 : Double.leastNormalMagnitude }
        let fixed = (fixed ?? Array(repeating: 0, count: n)).map { $0.isFinite ? max($0, 0) : 0 }
        var shares = [Int](repeating: 1, count: n)
        var heap = FinishHeap()
        for r in 0..<n where maxUnits > 1 { heap.push((fixed[r] + 2 / speed[r], r)) }
        var left = units - n
        while left > 0, let (_, r) = heap.pop() {
            shares[r] += 1
            left -= 1
            if shares[r] < maxUnits { heap.push((fixed[r] + Double(shares[r] + 1) / speed[r], r)) }
        }
        return shares
    }

    /// The time a step of `shares` takes: the slowest rank's.
    public static func stepTime(_ shares: [Int], speeds: [Double], fixed: [Double]? = nil) -> Double {
        shares.indices.map { (fixed?[$0] ?? 0) + Double(shares[$0]) / max(speeds[$0], Double.leastNormalMagnitude) }.max() ?? 0
    }

    /// The step time if shares could be any fraction of a group (the bound whole groups
    /// approach): the T at which the ranks, each from its `fixed` seconds on and taking at most
    /// `maxUnits`, together compute `units` groups; and each rank's share of the units at that T.
    public static func fractionalSplit(units: Int, speeds: [Double], fixed: [Double],
                                       maxUnits: Double = .infinity) -> (time: Double, shares: [Double]) {
        let n = speeds.count
        precondition(n > 0 && fixed.count == n && maxUnits * Double(n) >= Double(units))
        let speed = speeds.map { $0.isFinite && $0 > 0 ? $0 : Double.leastNormalMagnitude }
        let start = fixed.map { $0.isFinite ? max($0, 0) : 0 }
        func shares(at t: Double) -> [Double] { (0..<n).map { min(max(0, t - start[$0]) * speed[$0], maxUnits) } }
        // Bisection on T: the units computed grow with T, from 0 at the least fixed time to at
        // least `units` once the slowest rank alone would have computed them all.
        var low = start.min()!, high = start.max()! + Double(units) / speed.min()!
        for _ in 0..<100 where high - low > 1e-12 * max(high, 1) {
            let mid = (low + high) / 2
            if shares(at: mid).reduce(0, +) < Double(units) { low = mid } else { high = mid }
        }
        return (high, shares(at: high))
    }

    /// A min-heap of (time, rank), ordered by time and then rank.
    struct FinishHeap {
        private var items: [(Double, Int)] = []
        private static func less(_ a: (Double, Int), _ b: (Double, Int)) -> Bool { a.0 < b.0 || (a.0 == b.0 && a.1 < b.1) }

        mutating func push(_ item: (Double, Int)) {
            items.append(item)
            var i = items.count - 1
            while i > 0, Self.less(items[i], items[(i - 1) / 2]) {
                items.swapAt(i, (i - 1) / 2)
                i = (i - 1) / 2
            }
        }

        mutating func pop() -> (Double, Int)? {
            guard let top = items.first else { return nil }
            items.swapAt(0, items.count - 1)
            items.removeLast()
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count, Self.less(items[l], items[m]) { m = l }
                if r < items.count, Self.less(items[r], items[m]) { m = r }
                if m == i { return top }
                items.swapAt(i, m)
                i = m
            }
        }
    }
}

/// The shares of a run: fixed (even, or weights), or with `auto` re-estimated from the
/// ranks' compute time a sample over each window of `window` steps (the first after
/// `firstWindow`, not counting the run's first step), changed when the new
/// split would make a step at least `improvement` shorter. The same on every rank: they all
/// decide from the same all-reduced table.
public final class Balancer {
    public let split: BatchSplit
    /// Samples in a group of ghost batch normalization (the unit of a share); nil: none, and
    /// then the split is even.
    public let group: Int?
    public private(set) var units: [Int]
    public let maxUnits: Int
    /// Samples in a unit of the shares: the group, or without groups the even share.
    public let unitSize: Int
    public static let window = 20
    /// The first estimate comes sooner: an even split wastes the most while nothing is known.
    public static let firstWindow = 5
    public static let improvement = 0.03
    /// A rank takes at most this many times the even share (its input buffers are allocated
    /// for it), and at most all but one group of every other rank.
    public static let largestShareFactor = 4

    private var windowCompute = 0.0
    private var windowUpdate = 0.0
    private var windowSamples = 0.0
    private var windowSteps = 0
    private var observedSteps = 0
    private var estimates = 0

    public struct SplitError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(split: BatchSplit, globalBatch: Int, group: Int?, ranks: Int) throws {
        self.split = split
        self.group = group
        let g = max(group ?? globalBatch / max(ranks, 1), 1)
        unitSize = g
        let total = globalBatch / g
        guard total >= ranks else {
            throw SplitError(description: "the global batch of \(globalBatch) holds \(total) groups of \(g) samples (--ghost-batch) for \(ranks) ranks, and every rank needs at least one: use a smaller --ghost-batch or a larger --batch-size")
        }
        let evenUnits = (total + ranks - 1) / ranks
        maxUnits = min(total - (ranks - 1), Balancer.largestShareFactor * evenUnits)
        switch split {
        case .even:
            guard globalBatch % ranks == 0, total % ranks == 0 else {
                throw SplitError(description: "the global batch of \(globalBatch) does not divide among \(ranks) ranks; use a global batch size that is a multiple of \(ranks), or --balance auto")
            }
            units = Array(repeating: total / ranks, count: ranks)
        case .auto:
            // Whole groups as even as they go (64 in groups of 4 on 3 ranks: 24/20/20) until
            // the ranks' speeds are known.
            units = BatchShares.split(units: total, speeds: Array(repeating: 1, count: ranks), maxUnits: maxUnits)
        case .weights(let weights):
            guard weights.count == ranks else {
                throw SplitError(description: "--balance gives \(weights.count) weights for \(ranks) ranks: give one a rank, in rank order")
            }
            units = BatchShares.split(units: total, speeds: weights, maxUnits: maxUnits)
        }
    }

    public var unitCount: Int { units.reduce(0, +) }
    /// Samples each rank takes of a global batch.
    public var shares: [Int] { units.map { $0 * unitSize } }
    /// The most samples any rank can be given (its input buffers hold that many).
    public var largestPossibleShare: Int { split == .auto ? maxUnits * unitSize : shares.max() ?? 0 }

    /// Adds one step of this rank's time in forward and backward passes, in the update (the
    /// optimizer, the same whatever the share) and its samples to the window; true when the
    /// window is full (every rank then calls `rebalance`, which is collective).
    public func observe(passSeconds: Double, updateSeconds: Double, samples: Int) -> Bool {
        guard split == .auto else { return false }
        observedSteps += 1
        // The first step of a run (or of a resume) warms caches and allocators: not a speed.
        guard observedSteps > 1 else { return false }
        windowCompute += passSeconds
        windowUpdate += updateSeconds
        windowSamples += Double(samples)
        windowSteps += 1
        return windowSteps >= (estimates == 0 ? Balancer.firstWindow : Balancer.window)
    }

    /// Forgets the window (after a change of input size, a resume, or an evaluation).
    public func restartWindow() {
        windowCompute = 0
        windowUpdate = 0
        windowSamples = 0
        windowSteps = 0
    }

    /// Collective: every rank's speed over the window; changes the shares when that pays.
    /// Returns, when they changed, a line saying what and why.
    public func rebalance(communicator comm: Communicator) throws -> String? {
        let n = comm.size
        let steps = Double(max(windowSteps, 1))
        // Per rank, a step's mean: samples, seconds in the passes, seconds in the update.
        var table = [Double](repeating: 0, count: 3 * n)
        table[comm.rank] = windowSamples / steps
        table[n + comm.rank] = windowCompute / steps
        table[2 * n + comm.rank] = windowUpdate / steps
        restartWindow()
        estimates += 1
        try comm.allReduceSum(&table)  // one non-zero entry a slot: the same bits on every rank
        if history.count != n { history = Array(repeating: [], count: n); overheads = Array(repeating: 0, count: n) }
        var model: [(overhead: Double, perGroup: Double)] = []
        for r in 0..<n {
            history[r].append((table[r], table[n + r]))
            if history[r].count > Balancer.historyWindows { history[r].removeFirst() }
            let fit = Balancer.passModel(history[r], group: unitSize, knownOverhead: overheads[r])
            overheads[r] = fit.overhead
            model.append(fit)
        }
        let updates = Array(table[(2 * n)...])
        // Groups a second in the passes, and the seconds of a step that do not grow with the share.
        let speeds = model.map { 1 / $0.perGroup }
        let fixed = (0..<n).map { model[$0].overhead + updates[$0] }
        guard speeds.allSatisfy({ $0.isFinite && $0 > 0 }), fixed.allSatisfy({ $0.isFinite && $0 >= 0 }) else { return nil }
        let proposed = BatchShares.split(units: unitCount, speeds: speeds, fixed: fixed, maxUnits: maxUnits)
        let now = BatchShares.stepTime(units, speeds: speeds, fixed: fixed)
        let then = BatchShares.stepTime(proposed, speeds: speeds, fixed: fixed)
        guard proposed != units, then <= now * (1 - Balancer.improvement) else { return nil }
        units = proposed
        let g = unitSize
        let hosts = comm.hostNames
        let slowest = speeds.indices.min { speeds[$0] < speeds[$1] }!
        return String(format: "balance: shares %@ of the global batch of %d (groups of %d) from each rank's time a step: %@ ms + %@ ms a sample; a step ~%.0f ms instead of ~%.0f ms (slowest: rank %d on %@)",
                      units.map { String($0 * g) }.joined(separator: "/"), unitCount * g, g,
                      fixed.map { String(format: "%.0f", $0 * 1000) }.joined(separator: "/"),
                      speeds.map { String(format: "%.2f", 1000 / ($0 * Double(g))) }.joined(separator: "/"),
                      then * 1000, now * 1000, slowest, slowest < hosts.count ? hosts[slowest] : "?")
            + Self.wholeGroupsNote(units: unitCount, group: g, speeds: speeds, fixed: fixed, maxUnits: maxUnits, step: then)
    }

    /// What whole groups cost against shares of any size, when it is 3% of a step or more:
    /// "; the speeds ask for 41.5/22.5 samples (a step ~73 ms), whole groups of 4 cost 6%
    /// (--ghost-batch sets the group)". Empty otherwise. (The default group grows with the
    /// global batch, so a larger batch alone does not split finer.)
    static func wholeGroupsNote(units: Int, group g: Int, speeds: [Double], fixed: [Double], maxUnits: Int, step: Double) -> String {
        let ideal = BatchShares.fractionalSplit(units: units, speeds: speeds, fixed: fixed, maxUnits: Double(maxUnits))
        guard ideal.time > 0, step >= ideal.time * (1 + improvement) else { return "" }
        return String(format: "; the speeds ask for %@ samples (a step ~%.0f ms), whole groups of %d cost %.0f%% (--ghost-batch sets the group)",
                      ideal.shares.map { String(format: "%.1f", $0 * Double(g)) }.joined(separator: "/"), ideal.time * 1000, g,
                      100 * (step / ideal.time - 1))
    }

    /// Per rank, the last windows' (samples, seconds in the passes) a step, and the overhead
    /// a step of its passes as last estimated.
    private var history: [[(samples: Double, passes: Double)]] = []
    private var overheads: [Double] = []
    public static let historyWindows = 8

    /// A rank's forward and backward time a step as overhead + groups × perGroup (small
    /// batches cost more a sample: layer overheads, narrower matrix products), by least
    /// squares over its last windows when their shares spread over a group or more; else
    /// `knownOverhead` (the last fit's) and the rest of the latest window's time a group. The
    /// overhead stays within 0…90% of the latest time; a fit whose time would fall with the
    /// share is not believed, nor one over three or more windows whose slope the scatter
    /// leaves uncertain by more than half (its standard error): noise over shares a group or
    /// two apart had fitted a rank of 7 ms a sample as "136 ms + 1.57 ms a sample".
    static func passModel(_ windows: [(samples: Double, passes: Double)], group: Int,
                          knownOverhead: Double = 0) -> (overhead: Double, perGroup: Double) {
        guard let latest = windows.last else { return (0, 0) }
        let g = Double(group)
        let groups = max(latest.samples / g, 1e-9)
        func with(_ overhead: Double) -> (overhead: Double, perGroup: Double) {
            let o = min(max(overhead, 0), 0.9 * latest.passes)
            return (o, (latest.passes - o) / groups)
        }
        let x = windows.map { $0.samples / g }, y = windows.map(\.passes)
        let mx = x.reduce(0, +) / Double(x.count), my = y.reduce(0, +) / Double(y.count)
        let sxx = x.reduce(0) { $0 + ($1 - mx) * ($1 - mx) }
        guard (x.max() ?? 0) - (x.min() ?? 0) >= 1, sxx > 0 else { return with(knownOverhead) }
        let slope = zip(x, y).reduce(0) { $0 + ($1.0 - mx) * ($1.1 - my) } / sxx
        guard slope > 0, slope.isFinite else { return with(knownOverhead) }
        let intercept = my - slope * mx
        if x.count >= 3 {
            let residuals = zip(x, y).reduce(0) { $0 + pow($1.1 - intercept - slope * $1.0, 2) }
            let standardError = (residuals / Double(x.count - 2) / sxx).squareRoot()
            guard standardError <= slope / 2 else { return with(knownOverhead) }
        }
        return with(intercept)
    }
}
