import CHalf
import Foundation

/// Ranks as threads of one process (what `EmbeddedChannel` is to swift-nio): the collectives
/// of `MPICommunicator`, computed in rank order so every result is deterministic, without
/// processes or MPI. Tests of distributed behaviour (reductions, bucket order, what each rank
/// ends with) run through it in milliseconds; `ThreadCommunicator.run(ranks:)` starts one
/// thread per rank and returns what each rank's body returned.
///
/// Collectives are matched as MPI matches them: by their order on a channel (blocking ones on
/// channel 0). Two ranks starting different collectives at the same position is a bug in the
/// caller and stops the process with both descriptions. A rank whose body throws makes every
/// rank waiting in a collective throw `PeerFailed`, so a failing test ends instead of hanging.
public final class ThreadCommunicator: Communicator {
    public struct PeerFailed: Error, CustomStringConvertible {
        public var rank: Int
        public var description: String { "rank \(rank) failed while the others waited in a collective" }
    }

    public let rank: Int
    public let size: Int
    private let world: Member
    /// With machines (`run(ranks:machineRanks:)`): this rank's machine, twice (its sums into
    /// one rank and that rank's broadcasts keep their own orders), and its rail's group.
    private let machine: Member?, machineShare: Member?, rail: Member?
    public let machineCount: Int
    public let railCount: Int

    /// A rank's place in one group of ranks that hold collectives together, and how many it
    /// has started there on each channel.
    final class Member {
        let group: Group
        let index: Int
        var sequence = [0, 0]
        init(_ group: Group, _ index: Int) {
            self.group = group
            self.index = index
        }
    }

    init(rank: Int, group: Group, machine: Member? = nil, machineShare: Member? = nil, rail: Member? = nil, machineCount: Int? = nil,
         railCount: Int = 1) {
        self.rank = rank
        self.size = group.size
        world = Member(group, rank)
        self.machine = machine
        self.machineShare = machineShare
        self.rail = rail
        self.machineCount = machineCount ?? group.size
        self.railCount = railCount
    }

    /// Runs `body` on `ranks` threads, each with its own communicator; returns their results
    /// in rank order, or rethrows the first rank's error (by rank). With `machineRanks` K, the
    /// ranks form machines of K consecutive ranks (the last may have fewer) for the
    /// hierarchical all-reduce; without, every rank is a machine of its own.
    public static func run<T>(ranks: Int, machineRanks: Int? = nil, _ body: @escaping (ThreadCommunicator) throws -> T) throws -> [T] {
        precondition(ranks >= 1 && (machineRanks ?? 1) >= 1)
        let group = Group(size: ranks)
        let k = machineRanks ?? 1
        let machines = (ranks + k - 1) / k
        let machineGroups = (0..<machines).map { Group(size: min(k, ranks - $0 * k)) }
        let shareGroups = (0..<machines).map { Group(size: min(k, ranks - $0 * k)) }
        // As many rails as the smallest machine has ranks (the last may have fewer than k).
        let rails = min(k, ranks - (machines - 1) * k)
        let railGroups = (0..<rails).map { _ in Group(size: machines) }
        let shared = Shared(body: body, count: ranks)
        let done = DispatchGroup()
        for r in 0..<ranks {
            done.enter()
            let thread = Thread {
                let m = r / k, index = r % k
                let comm = machineRanks == nil ? ThreadCommunicator(rank: r, group: group)
                    : ThreadCommunicator(rank: r, group: group, machine: Member(machineGroups[m], index), machineShare: Member(shareGroups[m], index),
                                         rail: index < rails ? Member(railGroups[index], m) : nil, machineCount: machines, railCount: rails)
                let result = Result { try shared.body(comm) }
                if case .failure = result {
                    // Ranks waiting in any group's collective must stop waiting too.
                    for g in [group] + railGroups + machineGroups + shareGroups { g.fail(rank: r) }
                }
                shared.lock.lock()
                shared.results[r] = result
                shared.lock.unlock()
                done.leave()
            }
            thread.stackSize = 16 << 20
            thread.start()
        }
        done.wait()
        // A rank's own error before the PeerFailed it caused in the others.
        let results = shared.results
        let failures = results.compactMap { result -> Error? in
            if case .failure(let error) = result { return error } else { return nil }
        }
        if let first = failures.first(where: { !($0 is PeerFailed) }) ?? failures.first { throw first }
        return results.map { try! $0!.get() }
    }

    /// What the rank threads share in `run`; each writes only its own slot, under the lock.
    private final class Shared<T>: @unchecked Sendable {
        let body: (ThreadCommunicator) throws -> T
        var results: [Result<T, Error>?]
        let lock = NSLock()
        init(body: @escaping (ThreadCommunicator) throws -> T, count: Int) {
            self.body = body
            results = .init(repeating: nil, count: count)
        }
    }

    // MARK: - The matching

    /// Guarded by `condition`.
    final class Group: @unchecked Sendable {
        let size: Int
        let condition = NSCondition()
        var entries: [Key: Entry] = [:]
        var failedRank: Int?
        init(size: Int) { self.size = size }

        struct Key: Hashable { var channel: Int, position: Int }

        final class Entry {
            let what: String
            var contributions: [[UInt8]?]
            var result: [[UInt8]]?
            var collected = 0
            init(what: String, size: Int) {
                self.what = what
                contributions = .init(repeating: nil, count: size)
            }
        }

        func fail(rank: Int) {
            condition.lock()
            if failedRank == nil { failedRank = rank }
            condition.broadcast()
            condition.unlock()
        }
    }

    /// One collective in flight: every rank contributes bytes, the last one to arrive combines
    /// all contributions (in rank order) into each rank's result.
    final class Ticket: PendingReduction {
        let group: Group
        let key: Group.Key
        /// The rank's index in `group`.
        let rank: Int
        let deliver: ([UInt8]) -> Void
        private var finished = false

        init(group: Group, key: Group.Key, rank: Int, deliver: @escaping ([UInt8]) -> Void) {
            self.group = group
            self.key = key
            self.rank = rank
            self.deliver = deliver
        }

        func test() throws -> Bool {
            if finished { return true }
            group.condition.lock()
            defer { group.condition.unlock() }
            return try collectLocked(blocking: false)
        }

        func wait() throws {
            if finished { return }
            group.condition.lock()
            defer { group.condition.unlock() }
            _ = try collectLocked(blocking: true)
        }

        private func collectLocked(blocking: Bool) throws -> Bool {
            while true {
                let entry = group.entries[key]!
                if let result = entry.result {
                    deliver(result[rank])
                    entry.collected += 1
                    if entry.collected == group.size { group.entries[key] = nil }
                    finished = true
                    return true
                }
                if let failed = group.failedRank { throw PeerFailed(rank: failed) }
                guard blocking else { return false }
                group.condition.wait()
            }
        }
    }

    /// Starts collective `what` on `channel` with this rank's `contribution`; `combine` (the
    /// same on every rank; the last rank to arrive runs it) maps all contributions to each
    /// rank's result, which `deliver` receives when this rank tests or waits.
    func start(_ what: String, channel: Int = 0, contribution: [UInt8], in member: Member? = nil,
               combine: @escaping ([[UInt8]]) -> [[UInt8]], deliver: @escaping ([UInt8]) -> Void) throws -> Ticket {
        let member = member ?? world
        let group = member.group, rank = member.index, size = group.size
        let key = Group.Key(channel: channel, position: member.sequence[channel])
        member.sequence[channel] += 1
        group.condition.lock()
        defer { group.condition.unlock() }
        if let failed = group.failedRank { throw PeerFailed(rank: failed) }
        let entry = group.entries[key] ?? Group.Entry(what: what, size: size)
        group.entries[key] = entry
        guard entry.what == what else {
            fatalError("collective mismatch on channel \(channel) at position \(key.position): rank \(rank) started \(what), another rank \(entry.what)")
        }
        entry.contributions[rank] = contribution
        if entry.contributions.allSatisfy({ $0 != nil }) {
            entry.result = combine(entry.contributions.map { $0! })
            entry.contributions = []
            group.condition.broadcast()
        }
        return Ticket(group: group, key: key, rank: rank, deliver: deliver)
    }

    private func blocking(_ what: String, contribution: [UInt8], combine: @escaping ([[UInt8]]) -> [[UInt8]],
                          deliver: @escaping ([UInt8]) -> Void) throws {
        try start(what, contribution: contribution, combine: combine, deliver: deliver).wait()
    }

    private static func bytes<T>(_ pointer: UnsafePointer<T>, count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: pointer, count: count * MemoryLayout<T>.stride))
    }

    private static func elementwise<T>(_ contributions: [[UInt8]], as: T.Type, _ op: (T, T) -> T) -> [UInt8] {
        var total = contributions[0]
        total.withUnsafeMutableBytes { out in
            let o = out.bindMemory(to: T.self)
            for c in contributions.dropFirst() {
                c.withUnsafeBytes { input in
                    let x = input.bindMemory(to: T.self)
                    for i in o.indices { o[i] = op(o[i], x[i]) }
                }
            }
        }
        return total
    }

    private func sum<T>(_ what: String, _ buffer: UnsafeMutablePointer<T>, count: Int, channel: Int, in member: Member? = nil,
                        _ op: @escaping (T, T) -> T) throws -> Ticket {
        let size = (member ?? world).group.size
        return try start("\(what) of \(count)", channel: channel, contribution: Self.bytes(buffer, count: count), in: member,
                         combine: { .init(repeating: Self.elementwise($0, as: T.self, op), count: size) },
                         deliver: { result in result.withUnsafeBytes { buffer.update(from: $0.bindMemory(to: T.self).baseAddress!, count: count) } })
    }

    // MARK: - Communicator

    public var hostName: String { "thread-host" }
    public var ranksOnMachine: Int { size }
    public var hostNames: [String] { .init(repeating: hostName, count: size) }
    public func announceProgress(_ progress: Int) {}
    public var heartbeats: HeartbeatTable? { nil }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try sum("sum (float)", buffer, count: count, channel: 0, +).wait()
    }

    public func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, channel: Int) throws -> PendingReduction {
        precondition(channel == 0 || channel == 1)
        return try sum("sum (float)", buffer, count: count, channel: channel, +)
    }

    /// The sum in rank order, as `MPICommunicator`'s; the parts are checked to be the same on
    /// every rank (they are part of the collective's description).
    public func startPartedAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, parts: [Int], tag: Int) throws -> PendingReduction {
        checkPartedSum(count: count, parts: parts, tag: tag, ranks: size)
        return try sum("parted sum (float), tag \(tag), parts \(parts)", buffer, count: count, channel: 0, +)
    }

    /// Pairwise in float, rounded to half after each addition, as the MPI operation does.
    public func startAllReduceSumHalf(_ buffer: UnsafeMutablePointer<Float16>, count: Int) throws -> PendingReduction {
        try sum("sum (half)", buffer, count: count, channel: 0) { Float16(Float($0) + Float($1)) }
    }

    /// Pairwise, rounded to bf16 after each addition, as the MPI operation does.
    public func startAllReduceSumBF16(_ buffer: UnsafeMutablePointer<UInt16>, count: Int, channel: Int) throws -> PendingReduction {
        precondition(channel == 0 || channel == 1)
        return try sum("sum (bf16)", buffer, count: count, channel: channel, Self.bf16Add)
    }

    private static func bf16Add(_ a: UInt16, _ b: UInt16) -> UInt16 {
        var a = a, b = b
        catdog_bf16_add(&a, &b, 1)
        return b
    }

    public func allReduceSum(_ values: inout [Double]) throws {
        try values.withUnsafeMutableBufferPointer { v in
            try sum("sum (double)", v.baseAddress!, count: v.count, channel: 0, +).wait()
        }
    }

    public func allReduceMax(_ values: inout [Double]) throws {
        try values.withUnsafeMutableBufferPointer { v in
            try sum("max (double)", v.baseAddress!, count: v.count, channel: 0) { Swift.max($0, $1) }.wait()
        }
    }

    public func allReduceMinMax(_ value: UInt64) throws -> (min: UInt64, max: UInt64) {
        var low = value, high = value
        try sum("min (uint64)", &low, count: 1, channel: 0) { Swift.min($0, $1) }.wait()
        try sum("max (uint64)", &high, count: 1, channel: 0) { Swift.max($0, $1) }.wait()
        return (low, high)
    }

    public func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws {
        let size = self.size
        let mine = rank == root ? Array(UnsafeRawBufferPointer(start: buffer, count: bytes)) : []
        try blocking("broadcast of \(bytes) bytes from \(root)", contribution: mine,
                     combine: { .init(repeating: $0[root], count: size) },
                     deliver: { result in result.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes) } })
    }

    public func allGather(_ buffer: UnsafeMutableRawPointer, itemBytes: Int, counts: [Int], offsets: [Int]) throws {
        let size = self.size
        let mine = Array(UnsafeRawBufferPointer(start: buffer + offsets[rank] * itemBytes, count: counts[rank] * itemBytes))
        try blocking("all-gather of \(counts) items of \(itemBytes) bytes", contribution: mine,
                     combine: { .init(repeating: $0.joined().map { $0 }, count: size) },
                     deliver: { all in
                         var at = 0
                         for r in 0..<size {
                             let n = counts[r] * itemBytes
                             all[at..<(at + n)].withUnsafeBytes { buffer.advanced(by: offsets[r] * itemBytes).copyMemory(from: $0.baseAddress!, byteCount: n) }
                             at += n
                         }
                     })
    }

    public func barrier() throws {
        let size = self.size
        try blocking("barrier", contribution: [], combine: { _ in .init(repeating: [], count: size) }, deliver: { _ in })
    }

    public func abort(code: Int32) -> Never { exit(code) }

    // MARK: - Machines (the hierarchical all-reduce)

    public var machineRank: Int { machine?.index ?? 0 }
    public var machineSize: Int { machine?.group.size ?? 1 }

    /// Every rank of the machine contributes; rank `root` of it receives the sum (in rank order).
    public func startMachineReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws -> PendingReduction {
        precondition((0..<machineSize).contains(root))
        guard let machine, machine.group.size > 1 else { return LocalCommunicator.Done() }
        let receives = machine.index == root
        return try start("machine sum of \(count) into \(root)", contribution: Self.bytes(buffer, count: count), in: machine,
                         combine: { all in all.indices.map { $0 == root ? Self.elementwise(all, as: Float.self, +) : [] } },
                         deliver: { result in
                             guard receives else { return }
                             result.withUnsafeBytes { buffer.update(from: $0.bindMemory(to: Float.self).baseAddress!, count: count) }
                         })
    }

    public func startRailAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, channel: Int) throws -> PendingReduction {
        precondition(channel == 0 || channel == 1)
        guard machine != nil else { return try startAllReduceSum(buffer, count: count, channel: channel) }
        guard let rail else { preconditionFailure("only ranks on a rail sum across machines") }
        guard rail.group.size > 1 else { return LocalCommunicator.Done() }
        return try sum("rail sum (float)", buffer, count: count, channel: channel, in: rail, +)
    }

    public func startRailAllReduceSumBF16(_ buffer: UnsafeMutablePointer<UInt16>, count: Int, channel: Int) throws -> PendingReduction {
        precondition(channel == 0 || channel == 1)
        guard machine != nil else { return try startAllReduceSumBF16(buffer, count: count, channel: channel) }
        guard let rail else { preconditionFailure("only ranks on a rail sum across machines") }
        guard rail.group.size > 1 else { return LocalCommunicator.Done() }
        return try sum("rail sum (bf16)", buffer, count: count, channel: channel, in: rail, Self.bf16Add)
    }

    /// Rank `root`'s floats to every rank of its machine.
    public func startMachineBroadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws -> PendingReduction {
        precondition((0..<machineSize).contains(root))
        guard let machineShare, machineShare.group.size > 1 else { return LocalCommunicator.Done() }
        let mine = machineShare.index == root ? Self.bytes(buffer, count: count) : []
        return try start("machine broadcast of \(count) from \(root)", contribution: mine, in: machineShare,
                         combine: { .init(repeating: $0[root], count: $0.count) },
                         deliver: { result in result.withUnsafeBytes { buffer.update(from: $0.bindMemory(to: Float.self).baseAddress!, count: count) } })
    }

    /// One block for all the threads (they are one machine), allocated by the collective.
    public func nodeSharedMemory(bytes: Int) throws -> NodeSharedMemory {
        let size = self.size
        var address = 0
        try blocking("shared memory of \(bytes) bytes", contribution: [],
                     combine: { _ in
                         let block = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
                         return .init(repeating: Self.bytes([UInt(bitPattern: Int(bitPattern: block))], count: 1), count: size)
                     },
                     deliver: { result in address = result.withUnsafeBytes { Int(bitPattern: $0.load(as: UInt.self)) } })
        return SharedBlock(pointer: UnsafeMutableRawPointer(bitPattern: address)!, bytes: bytes, rank: rank, comm: self)
    }

    /// Never freed: the threads of a test share it until the process ends, as MPI's window
    /// lasts until MPI_Finalize.
    final class SharedBlock: NodeSharedMemory {
        let pointer: UnsafeMutableRawPointer
        let bytes: Int
        let localRank: Int
        var localSize: Int { comm.size }
        private let comm: ThreadCommunicator
        init(pointer: UnsafeMutableRawPointer, bytes: Int, rank: Int, comm: ThreadCommunicator) {
            self.pointer = pointer
            self.bytes = bytes
            localRank = rank
            self.comm = comm
        }
        func barrier() throws { try comm.barrier() }
    }
}
