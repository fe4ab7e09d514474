import CatdogSupport

/// The collectives data-parallel training needs. `MPICommunicator` is the real one;
/// `LocalCommunicator` is a single process, for tests and one-rank runs without MPI.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Host name this rank runs on.
    var hostName: String { get }
    /// Ranks of the job on this rank's machine (they share its memory and cores).
    var ranksOnMachine: Int { get }
    /// Sums `count` floats across ranks, in place.
    func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// Starts a non-blocking in-place sum; `wait` completes it. Non-blocking collectives on one
    /// `channel` (0 or 1) must start in the same order on every rank; the two channels are
    /// independent, so a reduction whose second round starts whenever its first completes
    /// (PowerSGD) runs that round on channel 1 while channel 0 carries the buckets in order.
    func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, channel: Int) throws -> PendingReduction
    /// Starts a non-blocking in-place sum in which rank r adds up part r of the buffer and
    /// sends it to the others: `parts` holds each rank's element count, in rank order (summing
    /// to `count`; the same on every rank; a part may be empty). A rank with a small part does
    /// little of the arithmetic and, as it sends all its values at once and receives the sums
    /// at once, takes part in two rounds instead of a ring's 2(N-1): for ranks of unequal
    /// speed. The sum is the ranks' values added in rank order, whatever the parts. Like the
    /// buckets of `startAllReduceSum`, those of one `tag` (below `partedSumTags`) start in the
    /// same order on every rank; different tags may be in flight together.
    func startPartedAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, parts: [Int], tag: Int) throws -> PendingReduction
    /// Starts a non-blocking in-place sum of half-precision values (fp16 compression).
    func startAllReduceSumHalf(_ buffer: UnsafeMutablePointer<Float16>, count: Int) throws -> PendingReduction
    /// Starts a non-blocking in-place sum of bf16 values (each a float's upper 16 bits), every
    /// addition made in float and rounded to nearest even (`catdog_bf16_add`), on `channel` as
    /// in `startAllReduceSum` (PowerSGD's factors in bf16).
    func startAllReduceSumBF16(_ buffer: UnsafeMutablePointer<UInt16>, count: Int, channel: Int) throws -> PendingReduction
    /// Sums doubles across ranks (metrics).
    func allReduceSum(_ values: inout [Double]) throws
    /// Element-wise maximum of doubles across ranks.
    func allReduceMax(_ values: inout [Double]) throws
    /// Memory shared by the ranks on this rank's machine (an MPI-3 shared window): `bytes`
    /// in one block, one copy per machine, whichever rank writes it. Collective over all ranks.
    func nodeSharedMemory(bytes: Int) throws -> NodeSharedMemory
    /// Minimum and maximum of one value across ranks.
    func allReduceMinMax(_ value: UInt64) throws -> (min: UInt64, max: UInt64)
    func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws
    /// Every rank contributes `counts[rank]` items of `itemBytes` at item offset
    /// `offsets[rank]` of `buffer`; afterwards every rank holds all of them.
    func allGather(_ buffer: UnsafeMutableRawPointer, itemBytes: Int, counts: [Int], offsets: [Int]) throws
    func barrier() throws
    /// Ends every rank of the job at once with `code` (MPI_Abort).
    func abort(code: Int32) -> Never
    /// Every rank's host name (index = rank).
    var hostNames: [String] { get }
    /// Tells every peer, without waiting, that this rank has reached `progress` (its global
    /// update number); what peers announced is kept in `heartbeats`.
    func announceProgress(_ progress: Int)
    /// What this rank last heard from each peer (nil with one rank).
    var heartbeats: HeartbeatTable? { get }

    // A hierarchical all-reduce (`HierarchicalReduction`): the ranks of each machine sum into
    // one of them, that rank sums across the machines with the ranks of the same index on the
    // other machines (its rail: the machines' first ranks are rail 0, their second rail 1, ...),
    // and shares the sum with its machine. Each of the three is non-blocking and, like the
    // buckets of `startAllReduceSum`, must start in the same order on every rank taking part.

    /// This rank's index among the ranks of its machine (0: the machine's leader), their
    /// number, and the number of machines.
    var machineRank: Int { get }
    var machineSize: Int { get }
    var machineCount: Int { get }
    /// The rails: as many as the fewest ranks any machine has (every machine has ranks 0 ..<
    /// railCount), each holding one rank of every machine.
    var railCount: Int { get }
    /// Starts summing `count` floats of the machine's ranks into the buffer of its rank `root`
    /// (the others' buffers are only read).
    func startMachineReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws -> PendingReduction
    /// On ranks with `machineRank < railCount` only: starts the in-place sum across the machines
    /// among the ranks of this rank's rail, on `channel` (0 or 1) as in `startAllReduceSum`.
    func startRailAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, channel: Int) throws -> PendingReduction
    /// The same for bf16 values, added as `startAllReduceSumBF16` adds them.
    func startRailAllReduceSumBF16(_ buffer: UnsafeMutablePointer<UInt16>, count: Int, channel: Int) throws -> PendingReduction
    /// Starts sending the `count` floats of the machine's rank `root` to its other ranks.
    func startMachineBroadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws -> PendingReduction
    /// Sums `count` floats over the ranks of this rank's machine, in place on every one of them
    /// (blocking; outside a step's gradient reductions, e.g. a resume's state).
    func machineAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
}

/// Communicators without machines of several ranks: every rank is a machine of its own, so the
/// hierarchical all-reduce is the flat one.
extension Communicator {
    public var machineRank: Int { 0 }
    public var machineSize: Int { 1 }
    public var machineCount: Int { size }
    public var railCount: Int { 1 }
    public func startMachineReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws -> PendingReduction {
        precondition(root == 0)
        return LocalCommunicator.Done()
    }
    public func startRailAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, channel: Int) throws -> PendingReduction {
        try startAllReduceSum(buffer, count: count, channel: channel)
    }
    public func startRailAllReduceSumBF16(_ buffer: UnsafeMutablePointer<UInt16>, count: Int, channel: Int) throws -> PendingReduction {
        try startAllReduceSumBF16(buffer, count: count, channel: channel)
    }
    public func startMachineBroadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws -> PendingReduction {
        precondition(root == 0)
        return LocalCommunicator.Done()
    }
}

extension Communicator {
    public func machineAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try startMachineReduceSum(buffer, count: count, root: 0).wait()
        try startMachineBroadcast(buffer, count: count, root: 0).wait()
    }
}

/// A block of memory every rank on one machine sees (`Communicator.nodeSharedMemory`).
public protocol NodeSharedMemory: AnyObject {
    var pointer: UnsafeMutableRawPointer { get }
    var bytes: Int { get }
    /// This rank's index among the ranks on its machine, and their number.
    var localRank: Int { get }
    var localSize: Int { get }
    /// Waits for every rank on this machine (e.g. until all have written their part).
    func barrier() throws
}

/// An all-reduce in flight.
public protocol PendingReduction: AnyObject {
    /// Gives the library a chance to progress it; true once complete.
    func test() throws -> Bool
    func wait() throws
}

extension Communicator {
    public func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws -> PendingReduction {
        try startAllReduceSum(buffer, count: count, channel: 0)
    }

    public func broadcast(_ buffer: FloatBuffer, root: Int = 0) throws {
        try broadcast(UnsafeMutableRawPointer(buffer.pointer), bytes: buffer.count * 4, root: root)
    }

    /// Broadcasts a string (e.g. JSON) from `root`.
    public func broadcast(_ string: String, root: Int = 0) throws -> String {
        var length = UInt64(string.utf8.count)
        try withUnsafeMutableBytes(of: &length) { try broadcast($0.baseAddress!, bytes: 8, root: root) }
        var bytes = [UInt8](string.utf8)
        if rank != root { bytes = .init(repeating: 0, count: Int(length)) }
        try bytes.withUnsafeMutableBytes { try broadcast($0.baseAddress!, bytes: Int(length), root: root) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Collective: every rank's bytes (index = rank), of any lengths.
    public func allGather(bytes mine: [UInt8]) throws -> [[UInt8]] {
        var sizes = [Double](repeating: 0, count: size)
        sizes[rank] = Double(mine.count)
        try allReduceSum(&sizes)
        let counts = sizes.map { Int($0) }
        var offsets = [0]
        for c in counts.dropLast() { offsets.append(offsets.last! + c) }
        var all = [UInt8](repeating: 0, count: counts.reduce(0, +))
        if !mine.isEmpty {
            all.withUnsafeMutableBytes { raw in
                mine.withUnsafeBytes { (raw.baseAddress! + offsets[rank]).copyMemory(from: $0.baseAddress!, byteCount: mine.count) }
            }
        }
        if !all.isEmpty {
            try all.withUnsafeMutableBytes { try allGather($0.baseAddress!, itemBytes: 1, counts: counts, offsets: offsets) }
        }
        return zip(offsets, counts).map { Array(all[$0..<($0 + $1)]) }
    }

    /// Collective: every rank's string (index = rank).
    public func allGather(string: String) throws -> [String] {
        try allGather(bytes: Array(string.utf8)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Contiguous block of `count` items rank `r` owns: [r·count/N, (r+1)·count/N).
    public func block(of count: Int, rank r: Int? = nil) -> Range<Int> {
        let r = r ?? rank
        return (r * count / size)..<((r + 1) * count / size)
    }
}

/// Tags of `startPartedAllReduceSum`: 0..<partedSumTags.
public let partedSumTags = 1024

/// What every implementation of `startPartedAllReduceSum` requires of its arguments.
func checkPartedSum(count: Int, parts: [Int], tag: Int, ranks: Int) {
    precondition(parts.count == ranks && parts.allSatisfy { $0 >= 0 } && parts.reduce(0, +) == count,
                 "parts \(parts) do not split \(count) values among \(ranks) ranks")
    precondition((0..<partedSumTags).contains(tag) && count <= Int(Int32.max), "tag \(tag), count \(count)")
}

/// One process, no MPI: every collective is the identity.
public final class LocalCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var hostName: String { ProcessInfo.processInfo.hostName }
    public var ranksOnMachine: Int { 1 }
    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {}
    public func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, channel: Int) throws -> PendingReduction { Done() }
    public func startAllReduceSumHalf(_ buffer: UnsafeMutablePointer<Float16>, count: Int) throws -> PendingReduction { Done() }
    public func startAllReduceSumBF16(_ buffer: UnsafeMutablePointer<UInt16>, count: Int, channel: Int) throws -> PendingReduction { Done() }
    public func startPartedAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, parts: [Int], tag: Int) throws -> PendingReduction {
        checkPartedSum(count: count, parts: parts, tag: tag, ranks: size)
        return Done()
    }
    public func allReduceSum(_ values: inout [Double]) throws {}
    public func allReduceMinMax(_ value: UInt64) throws -> (min: UInt64, max: UInt64) { (value, value) }
    public func allReduceMax(_ values: inout [Double]) throws {}
    public func nodeSharedMemory(bytes: Int) throws -> NodeSharedMemory { PrivateMemory(bytes: bytes) }
    public func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws {}
    public func allGather(_ buffer: UnsafeMutableRawPointer, itemBytes: Int, counts: [Int], offsets: [Int]) throws {}
    public func barrier() throws {}
    public func abort(code: Int32) -> Never { exit(code) }
    public var hostNames: [String] { [hostName] }
    public func announceProgress(_ progress: Int) {}
    public var heartbeats: HeartbeatTable? { nil }

    final class PrivateMemory: NodeSharedMemory {
        let pointer: UnsafeMutableRawPointer
        let bytes: Int
        var localRank: Int { 0 }
        var localSize: Int { 1 }
        init(bytes: Int) {
            self.bytes = bytes
            pointer = .allocate(byteCount: max(bytes, 1), alignment: 64)
        }
        deinit { pointer.deallocate() }
        func barrier() throws {}
    }

    final class Done: PendingReduction {
        func test() throws -> Bool { true }
        func wait() throws {}
    }
}

import Foundation
