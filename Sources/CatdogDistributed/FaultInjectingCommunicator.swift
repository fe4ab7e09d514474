/// A communicator that fails on purpose, for rehearsing failures: on rank `rank`, the
/// `reduction`-th gradient reduction (0-based; blocking or non-blocking, fp32 or fp16) throws
/// `InjectedFault` instead of starting. Everything else passes through to `base`.
public final class FaultInjectingCommunicator: Communicator {
    public struct InjectedFault: Error, CustomStringConvertible {
        public var reduction: Int
        public var description: String { "injected fault at gradient reduction \(reduction) (--inject-fault)" }
    }

    /// Parses `RANK:REDUCTION`, as the `--inject-fault` option takes it.
    public struct Plan: Sendable, Equatable {
        public var rank: Int
        public var reduction: Int
        public init(rank: Int, reduction: Int) {
            self.rank = rank
            self.reduction = reduction
        }
        public init?(parsing text: String) {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
            guard parts.count == 2, let rank = parts[0], let reduction = parts[1], rank >= 0, reduction >= 0 else { return nil }
            self.init(rank: rank, reduction: reduction)
        }
    }

    public let base: Communicator
    public let plan: Plan
    private var reductions = 0

    public init(wrapping base: Communicator, plan: Plan) {
        self.base = base
        self.plan = plan
    }

    private func count() throws {
        defer { reductions += 1 }
        if base.rank == plan.rank, reductions == plan.reduction { throw InjectedFault(reduction: reductions) }
    }

    public var rank: Int { base.rank }
    public var size: Int { base.size }
    public var hostName: String { base.hostName }
    public var ranksOnMachine: Int { base.ranksOnMachine }
    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try self.count()
        try base.allReduceSum(buffer, count: count)
    }
    public func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, channel: Int) throws -> PendingReduction {
        try self.count()
        return try base.startAllReduceSum(buffer, count: count, channel: channel)
    }
    public func startAllReduceSumHalf(_ buffer: UnsafeMutablePointer<Float16>, count: Int) throws -> PendingReduction {
        try self.count()
        return try base.startAllReduceSumHalf(buffer, count: count)
    }
    public func startAllReduceSumBF16(_ buffer: UnsafeMutablePointer<UInt16>, count: Int, channel: Int) throws -> PendingReduction {
        try self.count()
        return try base.startAllReduceSumBF16(buffer, count: count, channel: channel)
    }
    public func startPartedAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, parts: [Int], tag: Int) throws -> PendingReduction {
        try self.count()
        return try base.startPartedAllReduceSum(buffer, count: count, parts: parts, tag: tag)
    }
    public func allReduceSum(_ values: inout [Double]) throws { try base.allReduceSum(&values) }
    public func allReduceMinMax(_ value: UInt64) throws -> (min: UInt64, max: UInt64) { try base.allReduceMinMax(value) }
    public func allReduceMax(_ values: inout [Double]) throws { try base.allReduceMax(&values) }
    public func nodeSharedMemory(bytes: Int) throws -> NodeSharedMemory { try base.nodeSharedMemory(bytes: bytes) }
    public func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws {
        try base.broadcast(buffer, bytes: bytes, root: root)
    }
    public func allGather(_ buffer: UnsafeMutableRawPointer, itemBytes: Int, counts: [Int], offsets: [Int]) throws {
        try base.allGather(buffer, itemBytes: itemBytes, counts: counts, offsets: offsets)
    }
    public func barrier() throws { try base.barrier() }
    public func abort(code: Int32) -> Never { base.abort(code: code) }
    public var hostNames: [String] { base.hostNames }
    public func announceProgress(_ progress: Int) { base.announceProgress(progress) }
    public var heartbeats: HeartbeatTable? { base.heartbeats }
    public var machineRank: Int { base.machineRank }
    public var machineSize: Int { base.machineSize }
    public var machineCount: Int { base.machineCount }
    public var railCount: Int { base.railCount }
    /// The first stage of a hierarchical all-reduce counts as the reduction.
    public func startMachineReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws -> PendingReduction {
        try self.count()
        return try base.startMachineReduceSum(buffer, count: count, root: root)
    }
    public func startRailAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, channel: Int) throws -> PendingReduction {
        try base.startRailAllReduceSum(buffer, count: count, channel: channel)
    }
    public func startRailAllReduceSumBF16(_ buffer: UnsafeMutablePointer<UInt16>, count: Int, channel: Int) throws -> PendingReduction {
        try base.startRailAllReduceSumBF16(buffer, count: count, channel: channel)
    }
    public func startMachineBroadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws -> PendingReduction {
        try base.startMachineBroadcast(buffer, count: count, root: root)
    }
    /// Not a gradient reduction: not counted.
    public func machineAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try base.machineAllReduceSum(buffer, count: count)
    }
}
