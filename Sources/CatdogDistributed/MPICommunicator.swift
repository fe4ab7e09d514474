import CatdogSupport
import CHalf
import CMPI
import Foundation

/// An MPI call that failed: which call, its code and Open MPI's message.
public struct MPIError: Error, CustomStringConvertible {
    public var call: String
    public var code: Int32
    public var message: String
    public var description: String { "MPI \(call) failed (\(code)): \(message)" }

    static func check(_ code: Int32, _ call: String) throws {
        guard code != catdog_mpi_success() else { return }
        var buffer = [CChar](repeating: 0, count: Int(catdog_mpi_max_error_string()) + 1)
        var length: Int32 = 0
        MPI_Error_string(code, &buffer, &length)
        throw MPIError(call: call, code: code, message: String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
}

/// MPI_COMM_WORLD. Works under `mpirun` and as a singleton (one process started directly).
/// Errors are returned (MPI_ERRORS_RETURN) and thrown as `MPIError`, never silently ignored.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public let hostName: String
    public let ranksOnMachine: Int
    /// Every rank's host name (index = rank).
    public let hostNames: [String]
    public let heartbeats: HeartbeatTable?
    private let world: MPI_Comm
    /// The heartbeat's channel, made in `init` on every rank: `MPI_Comm_dup` is a collective
    /// on the world communicator, and one made lazily in the middle of a step would interleave
    /// with the gradient all-reduces already in flight in a different order on different
    /// ranks (a rank with an empty slice starts its buckets later), which corrupts Open MPI's
    /// non-blocking collectives.
    private var beats: BeatChannel?
    /// Channel 1 of `startAllReduceSum` (see there), made in `init` for the same reason.
    private var second = catdog_mpi_comm_null()
    /// The point-to-point messages of `startPartedAllReduceSum`, apart from everything else.
    private var parted = catdog_mpi_comm_null()
    /// Each tag's receive buffer for the parts others send this rank (reused: allocated once).
    private var partedScratch: [Int: FloatBuffer] = [:]
    /// The hierarchical all-reduce's communicators, made in `init` too: this rank's machine
    /// (twice: the sums into the leader and the leader's broadcasts each keep their own order)
    /// and, on ranks below `railCount`, the rail of the ranks of this rank's index on every
    /// machine (twice: channels 0 and 1; rail 0 holds the machines' leaders).
    private var machine = catdog_mpi_comm_null(), machineShare = catdog_mpi_comm_null()
    private var rail = catdog_mpi_comm_null(), railSecond = catdog_mpi_comm_null()
    public private(set) var machineRank = 0
    public private(set) var machineSize = 1
    public private(set) var machineCount = 1
    public private(set) var railCount = 1

    /// Initialises MPI once per process. The machines of the hierarchical all-reduce are the
    /// ranks that share memory, or with `machineRanks` K, consecutive groups of K ranks (to
    /// stand for machines of K cores when several emulated machines share one computer).
    public init(machineRanks: Int? = nil) throws {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 { try MPIError.check(MPI_Init(nil, nil), "MPI_Init") }
        world = catdog_mpi_comm_world()
        MPI_Comm_set_errhandler(world, catdog_mpi_errors_return())
        (rank, size) = try Self.rankAndSize(world, "")
        var name = [CChar](repeating: 0, count: Int(catdog_mpi_max_processor_name()) + 1)
        var length: Int32 = 0
        MPI_Get_processor_name(&name, &length)
        hostName = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var node = catdog_mpi_comm_null()
        var local: Int32 = 1
        if MPI_Comm_split_type(world, catdog_mpi_comm_type_shared(), 0, catdog_mpi_info_null(), &node) == catdog_mpi_success() {
            MPI_Comm_size(node, &local)
            MPI_Comm_free(&node)
        }
        ranksOnMachine = Int(local)
        hostNames = try Self.gatherHostNames(hostName, world: world, size: size)
        heartbeats = size > 1 ? HeartbeatTable(rank: rank, hosts: hostNames) : nil
        if let heartbeats { beats = BeatChannel(world: world, rank: rank, size: size, table: heartbeats) }
        if size > 1 {
            try MPIError.check(MPI_Comm_dup(world, &second), "MPI_Comm_dup")
            MPI_Comm_set_errhandler(second, catdog_mpi_errors_return())
            try MPIError.check(MPI_Comm_dup(world, &parted), "MPI_Comm_dup (parted sums)")
            MPI_Comm_set_errhandler(parted, catdog_mpi_errors_return())
            try makeMachines(ranksEach: machineRanks)
        }
    }

    /// Splits the ranks into machines and their leaders (collective over every rank).
    private func makeMachines(ranksEach: Int?) throws {
        if let k = ranksEach, k >= 1 {
            try MPIError.check(MPI_Comm_split(world, Int32(rank / k), Int32(rank), &machine), "MPI_Comm_split (machines)")
        } else {
            try MPIError.check(MPI_Comm_split_type(world, catdog_mpi_comm_type_shared(), Int32(rank), catdog_mpi_info_null(), &machine),
                               "MPI_Comm_split_type (machines)")
        }
        MPI_Comm_set_errhandler(machine, catdog_mpi_errors_return())
        (machineRank, machineSize) = try Self.rankAndSize(machine, " (machine)")
        try MPIError.check(MPI_Comm_dup(machine, &machineShare), "MPI_Comm_dup (machine)")
        MPI_Comm_set_errhandler(machineShare, catdog_mpi_errors_return())
        // Machines of unequal size: count the leaders, and find the fewest ranks a machine has.
        var leader: Int32 = machineRank == 0 ? 1 : 0, total: Int32 = 0
        try MPIError.check(MPI_Allreduce(&leader, &total, 1, catdog_mpi_int32(), catdog_mpi_sum(), world), "MPI_Allreduce (machines)")
        machineCount = Int(total)
        var ranks = Int32(machineSize), fewest: Int32 = 0
        try MPIError.check(MPI_Allreduce(&ranks, &fewest, 1, catdog_mpi_int32(), catdog_mpi_min(), world), "MPI_Allreduce (rails)")
        railCount = Int(fewest)
        try MPIError.check(MPI_Comm_split(world, machineRank < railCount ? Int32(machineRank) : catdog_mpi_undefined(), Int32(rank), &rail),
                           "MPI_Comm_split (rails)")
        if rail != catdog_mpi_comm_null() {
            MPI_Comm_set_errhandler(rail, catdog_mpi_errors_return())
            try MPIError.check(MPI_Comm_dup(rail, &railSecond), "MPI_Comm_dup (rails)")
            MPI_Comm_set_errhandler(railSecond, catdog_mpi_errors_return())
        }
    }

    public func startMachineReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws -> PendingReduction {
        precondition((0..<machineSize).contains(root))
        let pending = Request(beats: beats)
        guard machineSize > 1, count > 0 else { return pending }
        try MPIError.check(MPI_Ireduce(machineRank == root ? UnsafeRawPointer(catdog_mpi_in_place()) : UnsafeRawPointer(buffer), buffer, Int32(count),
                                       catdog_mpi_float(), catdog_mpi_sum(), Int32(root), machine, &pending.request), "MPI_Ireduce (machine)")
        return pending
    }

    public func startRailAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, channel: Int) throws -> PendingReduction {
        try startRailSum(buffer, count: count, type: catdog_mpi_float(), op: catdog_mpi_sum(), channel: channel, "MPI_Iallreduce (rail)")
    }

    public func startRailAllReduceSumBF16(_ buffer: UnsafeMutablePointer<UInt16>, count: Int, channel: Int) throws -> PendingReduction {
        try startRailSum(buffer, count: count, type: catdog_mpi_uint16(), op: try Self.bf16Sum(), channel: channel, "MPI_Iallreduce (rail, bf16)")
    }

    /// The in-place sum across the machines on this rank's rail, on `channel`.
    private func startRailSum(_ buffer: UnsafeMutableRawPointer, count: Int, type: MPI_Datatype?, op: MPI_Op?, channel: Int,
                              _ call: String) throws -> PendingReduction {
        let pending = Request(beats: beats)
        guard size > 1 else { return pending }
        precondition(channel == 0 || channel == 1)
        precondition(machineRank < railCount, "only ranks on a rail sum across machines")
        guard machineCount > 1, count > 0 else { return pending }
        try MPIError.check(MPI_Iallreduce(catdog_mpi_in_place(), buffer, Int32(count), type, op, channel == 0 ? rail : railSecond,
                                          &pending.request), call)
        return pending
    }

    public func startMachineBroadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws -> PendingReduction {
        precondition((0..<machineSize).contains(root))
        let pending = Request(beats: beats)
        guard machineSize > 1, count > 0 else { return pending }
        try MPIError.check(MPI_Ibcast(buffer, Int32(count), catdog_mpi_float(), Int32(root), machineShare, &pending.request), "MPI_Ibcast (machine)")
        return pending
    }

    /// This rank's index in `comm` and its size.
    static func rankAndSize(_ comm: MPI_Comm?, _ what: String) throws -> (Int, Int) {
        var r: Int32 = 0, n: Int32 = 0
        try MPIError.check(MPI_Comm_rank(comm, &r), "MPI_Comm_rank" + what)
        try MPIError.check(MPI_Comm_size(comm, &n), "MPI_Comm_size" + what)
        return (Int(r), Int(n))
    }

    /// Every rank's host name, up to 255 bytes each.
    private static func gatherHostNames(_ name: String, world: MPI_Comm, size: Int) throws -> [String] {
        guard size > 1 else { return [name] }
        let width = 256
        var mine = [UInt8](repeating: 0, count: width)
        for (i, byte) in name.utf8.prefix(width - 1).enumerated() { mine[i] = byte }
        var all = [UInt8](repeating: 0, count: width * size)
        try MPIError.check(MPI_Allgather(&mine, Int32(width), catdog_mpi_byte(), &all, Int32(width), catdog_mpi_byte(), world),
                           "MPI_Allgather (host names)")
        return (0..<size).map { r in String(decoding: all[(r * width)..<((r + 1) * width)].prefix { $0 != 0 }, as: UTF8.self) }
    }

    public func announceProgress(_ progress: Int) {
        beats?.announce(progress)
    }

    /// Shuts MPI down; call once at the end of a successful run.
    public func finalize() {
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        beats?.close()
        beats = nil
        for comm in [second, parted, machine, machineShare, rail, railSecond] where comm != catdog_mpi_comm_null() {
            var c = comm
            MPI_Comm_free(&c)
        }
        if finalized == 0 { MPI_Finalize() }
    }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        guard size > 1, count > 0 else { return }
        try MPIError.check(MPI_Allreduce(catdog_mpi_in_place(), buffer, Int32(count), catdog_mpi_float(),
                                         catdog_mpi_sum(), world), "MPI_Allreduce")
    }

    public func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, channel: Int) throws -> PendingReduction {
        let pending = Request(beats: beats)
        guard size > 1, count > 0 else { return pending }
        precondition(channel == 0 || channel == 1)
        try MPIError.check(MPI_Iallreduce(catdog_mpi_in_place(), buffer, Int32(count), catdog_mpi_float(),
                                          catdog_mpi_sum(), channel == 0 ? world : second, &pending.request), "MPI_Iallreduce")
        return pending
    }

    public func startPartedAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int, parts: [Int], tag: Int) throws -> PendingReduction {
        checkPartedSum(count: count, parts: parts, tag: tag, ranks: size)  // MPI counts are 32-bit
        guard size > 1, count > 0 else { return Request(beats: beats) }
        let mine = parts[rank]
        let needed = mine * size
        if (partedScratch[tag]?.count ?? -1) < needed { partedScratch[tag] = FloatBuffer(count: needed) }
        return try PartedSum(buffer: buffer, parts: parts, rank: rank, tag: Int32(tag), comm: parted,
                             scratch: partedScratch[tag]!.pointer, beats: beats)
    }

    /// `startPartedAllReduceSum`'s two rounds. First every rank sends each other rank its
    /// values of that rank's part and receives everyone's values of its own part; when all of
    /// those have arrived it adds them up in rank order, sends the sum of its part to every
    /// rank and receives theirs into the buffer (posted only once its own sends have gone, as
    /// they read the same buffer). Each rank's part of a round is posted at once, so a slow
    /// rank holds up the others once a round, not once per step of a ring.
    final class PartedSum: PendingReduction {
        private let buffer: UnsafeMutablePointer<Float>
        private let parts: [Int], offsets: [Int]
        private let rank: Int, tag: Int32
        private let comm: MPI_Comm?
        private let scratch: UnsafeMutablePointer<Float>
        private let beats: BeatChannel?
        private let requests: UnsafeMutablePointer<MPI_Request?>
        private var active = 0
        private var round = 1

        init(buffer: UnsafeMutablePointer<Float>, parts: [Int], rank: Int, tag: Int32, comm: MPI_Comm?,
             scratch: UnsafeMutablePointer<Float>, beats: BeatChannel?) throws {
            self.buffer = buffer
            self.parts = parts
            offsets = parts.reduce(into: [0]) { $0.append($0.last! + $1) }
            self.rank = rank
            self.tag = tag
            self.comm = comm
            self.scratch = scratch
            self.beats = beats
            requests = .allocate(capacity: 2 * parts.count)
            requests.initialize(repeating: catdog_mpi_request_null(), count: 2 * parts.count)
            let mine = parts[rank]
            for peer in parts.indices where peer != rank {
                if mine > 0 { try receive(scratch + peer * mine, mine, from: peer, tag: 2 * tag) }
                if parts[peer] > 0 { try send(buffer + offsets[peer], parts[peer], to: peer, tag: 2 * tag) }
            }
        }

        deinit {
            // A reduction abandoned in flight (its step failed): the job is ending; leave MPI's
            // requests to MPI_Finalize or MPI_Abort rather than wait here.
            requests.deallocate()
        }

        private func receive(_ at: UnsafeMutablePointer<Float>, _ count: Int, from peer: Int, tag: Int32) throws {
            try MPIError.check(MPI_Irecv(at, Int32(count), catdog_mpi_float(), Int32(peer), tag, comm, requests + active), "MPI_Irecv (parted sum)")
            active += 1
        }

        private func send(_ from: UnsafeMutablePointer<Float>, _ count: Int, to peer: Int, tag: Int32) throws {
            try MPIError.check(MPI_Isend(from, Int32(count), catdog_mpi_float(), Int32(peer), tag, comm, requests + active), "MPI_Isend (parted sum)")
            active += 1
        }

        func test() throws -> Bool {
            while round < 3 {
                var flag: Int32 = 0
                try MPIError.check(MPI_Testall(Int32(active), requests, &flag, nil), "MPI_Testall (parted sum)")
                beats?.poll()
                guard flag != 0 else { return false }
                active = 0
                if round == 1 { try sumAndShare() }
                round += 1
            }
            return true
        }

        func wait() throws {
            while try !test() {}
        }

        /// This rank's part, added up in rank order, then the second round.
        private func sumAndShare() throws {
            let mine = parts[rank]
            if mine > 0 {
                let own = buffer + offsets[rank]
                // In blocks that stay in cache: the first rank's values, then each next rank's added.
                let block = 4096
                var start = 0
                while start < mine {
                    let n = min(block, mine - start)
                    let out = scratch + rank * mine + start  // this rank's slot of the scratch is free
                    let first = rank == 0 ? own + start : scratch + start
                    out.update(from: first, count: n)
                    for peer in 1..<parts.count {
                        let values = peer == rank ? own + start : scratch + peer * mine + start
                        for i in 0..<n { out[i] += values[i] }
                    }
                    own.advanced(by: start).update(from: out, count: n)
                    start += n
                }
            }
            for peer in parts.indices where peer != rank {
                if mine > 0 { try send(buffer + offsets[rank], mine, to: peer, tag: 2 * tag + 1) }
                if parts[peer] > 0 { try receive(buffer + offsets[peer], parts[peer], from: peer, tag: 2 * tag + 1) }
            }
        }
    }

    public func startAllReduceSumHalf(_ buffer: UnsafeMutablePointer<Float16>, count: Int) throws -> PendingReduction {
        let pending = Request(beats: beats)
        guard size > 1, count > 0 else { return pending }
        try MPIError.check(MPI_Iallreduce(catdog_mpi_in_place(), buffer, Int32(count), catdog_mpi_uint16(),
                                          catdog_mpi_fp16_sum(), world, &pending.request), "MPI_Iallreduce (fp16)")
        return pending
    }

    public func startAllReduceSumBF16(_ buffer: UnsafeMutablePointer<UInt16>, count: Int, channel: Int) throws -> PendingReduction {
        let pending = Request(beats: beats)
        guard size > 1, count > 0 else { return pending }
        precondition(channel == 0 || channel == 1)
        try MPIError.check(MPI_Iallreduce(catdog_mpi_in_place(), buffer, Int32(count), catdog_mpi_uint16(),
                                          try Self.bf16Sum(), channel == 0 ? world : second, &pending.request), "MPI_Iallreduce (bf16)")
        return pending
    }

    /// The MPI operation summing bf16 values (`catdog_bf16_add`), made once.
    private static func bf16Sum() throws -> MPI_Op {
        if let op = bf16SumOp { return op }
        var op: MPI_Op? = catdog_mpi_op_null()
        try MPIError.check(MPI_Op_create({ input, output, count, _ in
            guard let input, let output, let count else { return }
            catdog_bf16_add(input.assumingMemoryBound(to: UInt16.self), output.assumingMemoryBound(to: UInt16.self), Int(count.pointee))
        }, 1, &op), "MPI_Op_create (bf16 sum)")
        guard let op else { throw MPIError(call: "MPI_Op_create (bf16 sum)", code: -1, message: "no operation made") }
        bf16SumOp = op
        return op
    }
    nonisolated(unsafe) private static var bf16SumOp: MPI_Op?

    public func allReduceSum(_ values: inout [Double]) throws { try allReduce(&values, catdog_mpi_sum()) }

    public func allReduceMax(_ values: inout [Double]) throws { try allReduce(&values, catdog_mpi_max()) }

    /// In-place all-reduce of doubles with `op`. With the heartbeat on, non-blocking and
    /// listening while it waits, so a stall here still names the silent peer.
    private func allReduce(_ values: inout [Double], _ op: MPI_Op) throws {
        guard size > 1, !values.isEmpty else { return }
        let count = Int32(values.count)
        try values.withUnsafeMutableBufferPointer { v in
            guard let beats else {
                try MPIError.check(MPI_Allreduce(catdog_mpi_in_place(), v.baseAddress, count, catdog_mpi_double(), op, world),
                                   "MPI_Allreduce")
                return
            }
            let pending = Request(beats: beats)
            try MPIError.check(MPI_Iallreduce(catdog_mpi_in_place(), v.baseAddress, count, catdog_mpi_double(), op, world,
                                              &pending.request), "MPI_Iallreduce")
            try pending.wait()
        }
    }

    public func nodeSharedMemory(bytes: Int) throws -> NodeSharedMemory {
        try SharedWindow(world: world, bytes: bytes)
    }

    /// `MPI_Win_allocate_shared` over the ranks of one machine (`MPI_Comm_split_type`): the
    /// machine's first rank allocates all of it, the others map the same pages.
    final class SharedWindow: NodeSharedMemory {
        let pointer: UnsafeMutableRawPointer
        let bytes: Int
        let localRank: Int
        let localSize: Int
        private var node = catdog_mpi_comm_null()
        private(set) var window = catdog_mpi_win_null()

        init(world: MPI_Comm, bytes: Int) throws {
            self.bytes = bytes
            var comm = catdog_mpi_comm_null()
            try MPIError.check(MPI_Comm_split_type(world, catdog_mpi_comm_type_shared(), 0, catdog_mpi_info_null(), &comm),
                               "MPI_Comm_split_type")
            node = comm
            MPI_Comm_set_errhandler(comm, catdog_mpi_errors_return())
            (localRank, localSize) = try MPICommunicator.rankAndSize(comm, " (node)")
            var base: UnsafeMutableRawPointer?
            let mine = localRank == 0 ? max(bytes, 1) : 0
            var win = catdog_mpi_win_null()
            try withUnsafeMutablePointer(to: &base) { out in
                try MPIError.check(MPI_Win_allocate_shared(MPI_Aint(mine), 1, catdog_mpi_info_null(), comm, out, &win),
                                   "MPI_Win_allocate_shared")
            }
            window = win
            var size: MPI_Aint = 0, unit: Int32 = 0
            var shared: UnsafeMutableRawPointer?
            try withUnsafeMutablePointer(to: &shared) { out in
                try MPIError.check(MPI_Win_shared_query(win, 0, &size, &unit, out), "MPI_Win_shared_query")
            }
            guard let shared, Int(size) >= bytes else {
                throw MPIError(call: "MPI_Win_shared_query", code: -1, message: "the machine's shared window is missing or too small")
            }
            pointer = shared
        }

        func barrier() throws { try MPIError.check(MPI_Barrier(node), "MPI_Barrier (node)") }

        // No MPI_Win_free in deinit: it is collective, and a rank unwinding after an error
        // would wait in it for ranks that are still training, instead of aborting the job.
        // MPI_Finalize (or the end of the process) releases the window.
    }

    public func allReduceMinMax(_ value: UInt64) throws -> (min: UInt64, max: UInt64) {
        guard size > 1 else { return (value, value) }
        var input = value, low: UInt64 = 0, high: UInt64 = 0
        try MPIError.check(MPI_Allreduce(&input, &low, 1, catdog_mpi_uint64(), catdog_mpi_min(), world), "MPI_Allreduce")
        try MPIError.check(MPI_Allreduce(&input, &high, 1, catdog_mpi_uint64(), catdog_mpi_max(), world), "MPI_Allreduce")
        return (low, high)
    }

    public func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws {
        guard size > 1, bytes > 0 else { return }
        // Counts are 32-bit: send large buffers in pieces.
        var offset = 0
        while offset < bytes {
            let piece = min(bytes - offset, 1 << 30)
            try MPIError.check(MPI_Bcast(buffer + offset, Int32(piece), catdog_mpi_byte(), Int32(root), world), "MPI_Bcast")
            offset += piece
        }
    }

    public func allGather(_ buffer: UnsafeMutableRawPointer, itemBytes: Int, counts: [Int], offsets: [Int]) throws {
        guard size > 1 else { return }
        // One item is one contiguous datatype, so the 32-bit counts are in items, not bytes.
        var item = MPI_Datatype(bitPattern: 0)
        try MPIError.check(MPI_Type_contiguous(Int32(itemBytes), catdog_mpi_byte(), &item), "MPI_Type_contiguous")
        try MPIError.check(MPI_Type_commit(&item), "MPI_Type_commit")
        defer { MPI_Type_free(&item) }
        var counts32 = counts.map { Int32($0) }, offsets32 = offsets.map { Int32($0) }
        try MPIError.check(MPI_Allgatherv(catdog_mpi_in_place(), 0, item, buffer, &counts32, &offsets32, item, world),
                           "MPI_Allgatherv")
    }

    public func barrier() throws {
        guard let beats else { return try MPIError.check(MPI_Barrier(world), "MPI_Barrier") }
        let pending = Request(beats: beats)
        try MPIError.check(MPI_Ibarrier(world, &pending.request), "MPI_Ibarrier")
        try pending.wait()
    }

    public func abort(code: Int32) -> Never {
        MPI_Abort(world, code)
        exit(code)
    }

    /// A non-blocking all-reduce. While it is tested or waited for, the heartbeats that have
    /// arrived are taken in too, so a rank stuck here knows which peers have not arrived.
    final class Request: PendingReduction {
        var request = catdog_mpi_request_null()
        private let beats: BeatChannel?
        init(beats: BeatChannel? = nil) { self.beats = beats }

        func test() throws -> Bool {
            var flag: Int32 = 0
            try MPIError.check(MPI_Test(&request, &flag, catdog_mpi_status_ignore()), "MPI_Test")
            beats?.poll()
            return flag != 0
        }

        func wait() throws {
            guard let beats else {
                try MPIError.check(MPI_Wait(&request, catdog_mpi_status_ignore()), "MPI_Wait")
                return
            }
            var flag: Int32 = 0
            while true {
                try MPIError.check(MPI_Test(&request, &flag, catdog_mpi_status_ignore()), "MPI_Test")
                if flag != 0 { return }
                beats.poll()
            }
        }
    }

    /// The heartbeat: at each step every rank sends its progress (8 bytes) to every peer on a
    /// communicator of its own, and keeps one receive posted per peer. Nothing waits on it:
    /// a send still in flight (a peer that stopped reading) is not repeated, and what arrived is
    /// taken in whenever the rank tests or waits for an all-reduce. Best effort: a failed call
    /// only means less is known when a stall is reported.
    final class BeatChannel {
        private var comm = catdog_mpi_comm_null()
        private let rank: Int, size: Int
        private let table: HeartbeatTable
        private let received: UnsafeMutablePointer<Int64>, sent: UnsafeMutablePointer<Int64>
        private let receiving: UnsafeMutablePointer<MPI_Request?>, sending: UnsafeMutablePointer<MPI_Request?>
        private var lastPoll = Date.distantPast, lastSend = Date.distantPast
        private var current: Int?
        private var open = false
        private static let tag: Int32 = 7

        init(world: MPI_Comm, rank: Int, size: Int, table: HeartbeatTable) {
            self.rank = rank
            self.size = size
            self.table = table
            received = .allocate(capacity: size)
            sent = .allocate(capacity: size)
            received.initialize(repeating: 0, count: size)
            sent.initialize(repeating: 0, count: size)
            receiving = .allocate(capacity: size)
            sending = .allocate(capacity: size)
            receiving.initialize(repeating: catdog_mpi_request_null(), count: size)
            sending.initialize(repeating: catdog_mpi_request_null(), count: size)
            guard MPI_Comm_dup(world, &comm) == catdog_mpi_success() else { return }
            MPI_Comm_set_errhandler(comm, catdog_mpi_errors_return())
            open = true
            for peer in 0..<size where peer != rank { post(peer) }
        }

        deinit {
            received.deallocate(); sent.deallocate(); receiving.deallocate(); sending.deallocate()
        }

        private func post(_ peer: Int) {
            if MPI_Irecv(received + peer, 1, catdog_mpi_int64(), Int32(peer), Self.tag, comm, receiving + peer) != catdog_mpi_success() {
                receiving[peer] = catdog_mpi_request_null()
            }
        }

        func announce(_ progress: Int) {
            table.announced(progress)
            current = progress
            send()
            poll(force: true)
        }

        /// Sends `current` to every peer whose previous heartbeat has gone out.
        private func send() {
            guard open, let current else { return }
            lastSend = Date()
            for peer in 0..<size where peer != rank {
                if sending[peer] != catdog_mpi_request_null() {
                    var flag: Int32 = 0
                    if MPI_Test(sending + peer, &flag, catdog_mpi_status_ignore()) != catdog_mpi_success() || flag == 0 { continue }
                }
                sent[peer] = Int64(current)
                if MPI_Isend(sent + peer, 1, catdog_mpi_int64(), Int32(peer), Self.tag, comm, sending + peer) != catdog_mpi_success() {
                    sending[peer] = catdog_mpi_request_null()
                }
            }
        }

        /// Takes in what has arrived (at most every 10 ms unless forced); while the rank keeps
        /// waiting, repeats its heartbeat every `HeartbeatTable.interval` so that its peers
        /// can tell a rank waiting with them from one gone silent.
        func poll(force: Bool = false) {
            guard open else { return }
            let now = Date()
            guard force || now.timeIntervalSince(lastPoll) >= 0.01 else { return }
            lastPoll = now
            table.polled(at: now)
            if now.timeIntervalSince(lastSend) >= HeartbeatTable.interval { send() }
            for peer in 0..<size where peer != rank {
                while receiving[peer] != catdog_mpi_request_null() {
                    var flag: Int32 = 0
                    guard MPI_Test(receiving + peer, &flag, catdog_mpi_status_ignore()) == catdog_mpi_success(), flag != 0 else { break }
                    table.heard(rank: peer, progress: Int(received[peer]), at: now)
                    post(peer)
                }
            }
        }

        /// Before MPI_Finalize: withdraw the posted receives, finish the sends (small
        /// messages, already buffered by the peers), free the communicator.
        func close() {
            guard open else { return }
            open = false
            for peer in 0..<size where peer != rank {
                if receiving[peer] != catdog_mpi_request_null() {
                    MPI_Cancel(receiving + peer)
                    MPI_Wait(receiving + peer, catdog_mpi_status_ignore())
                }
                if sending[peer] != catdog_mpi_request_null() { MPI_Wait(sending + peer, catdog_mpi_status_ignore()) }
            }
            MPI_Comm_free(&comm)
        }
    }
}
