import CHalf
import CKernels
import CatdogDistributed
import CatdogSupport
import Foundation

/// Rank-r PowerSGD (Vogels, Karimireddy and Jaggi, 2019), as PyTorch DDP's `powerSGD_hook`
/// does it: each weight matrix's gradient M (plus this rank's error feedback) is approximated
/// by P Qᵀ from one step of power iteration, warm-started from the previous update's Q:
///
///     M ← gradient + error;  P ← M Q;  all-reduce P;  orthonormalise P;
///     Q ← Mᵀ P;  all-reduce Q;  gradient ← P Qᵀ;  error ← M − P Qᵀ / ranks
///
/// Only r·(rows + columns) numbers of a rows × columns matrix cross the network (with
/// `bf16Factors`, as bf16: half the bytes; each rank's P and Q rounded to nearest even, their
/// sums rounded after each addition, and the error feedback carrying what the rounding lost,
/// since it is taken against the rounded factors every rank applies). Tensors that
/// compress less than 2× (biases, BatchNorm, the last layer) go exactly, in the P round.
/// Kernels are matrices of (all but the last dimension) × (the last), e.g. a 3×3 convolution's
/// (3·3·in) × out. Before update `startUpdate` every bucket is summed exactly (the learning-rate
/// warmup, as PyTorch's `start_powerSGD_iter` advises).
///
/// The error feedback is per rank, but the factors and its sum over the ranks are linear in the
/// ranks' gradients (Σ_r E_r ← M + E − P Qᵀ), so the result follows the summed gradients alone
/// and depends on the rank count only through rounding, like the exact reductions'. P Qᵀ is
/// computed by the same code from the same all-reduced P and Q on every rank, so every rank
/// applies the same gradient bit for bit. The Q round of a bucket starts when its P round
/// completes, on the communicator's channel 1 (in bucket order), while channel 0 carries the P
/// rounds in the order backward makes them.
public final class PowerSGDReduction: GradientReduction {
    public struct Matrix: Equatable {
        /// Where the tensor lies in the flat parameter buffer.
        public var offset: Int
        public var rows: Int
        public var columns: Int
        /// Where its r × columns factor Q lies in `q`.
        public var q: Int
    }

    struct Plan {
        var range: Range<Int>
        var matrices: [Matrix]
        /// Ranges of the bucket sent exactly, and how many floats they hold.
        var exact: [Range<Int>]
        var exactCount: Int
        /// Where each matrix's r × rows factor P lies in the bucket's P buffer (after the exact values).
        var p: [Int]
        var pCount: Int
        var qRange: Range<Int>
    }

    /// One bucket's arithmetic, in seconds: before its P round (the error feedback added, P =
    /// M Q), between the rounds (P orthonormalised, Q = Mᵀ P) and after the Q round (M = P Qᵀ,
    /// the new error feedback).
    public struct Arithmetic: Equatable, Sendable {
        public var beforeFirst, between, after: Double
        public var total: Double { beforeFirst + between + after }

        public init(beforeFirst: Double = 0, between: Double = 0, after: Double = 0) {
            self.beforeFirst = beforeFirst
            self.between = between
            self.after = after
        }
    }

    /// For the lab emulator: each bucket's arithmetic, measured alone (`measureArithmetic`), to
    /// sleep instead of computing it. Many emulated machines share this computer's cores, where
    /// each bucket's owner would compute on a core of its own machine; the bytes sent are the
    /// same, their values are not the compressed gradients'.
    public var sleptArithmetic: [Arithmetic]?
    /// For the lab emulator: what the slept arithmetic costs the emulated machine's cores.
    var charges: LabEmulator.CoreCharges?

    public let rank: Int
    public let buckets: [Range<Int>]
    public let startUpdate: Int
    /// The Q factors of every compressed matrix, concatenated in parameter order: the same on
    /// every rank (they are all-reduced), kept from update to update (the warm start).
    public let q: FloatBuffer
    /// This rank's error feedback over the buckets' span (index = parameter − `offset`).
    public let error: FloatBuffer
    public let offset: Int
    let plans: [Plan]
    private let pBuffers: [FloatBuffer]
    /// The factors cross the network in bf16: each bucket's P at `pWireAt[bucket]` of `pWire`,
    /// Q at the same index of `qWire` as in `q`.
    public let bf16Factors: Bool
    private let pWire: UnsafeMutablePointer<UInt16>, qWire: UnsafeMutablePointer<UInt16>
    private let pWireAt: [Int]
    /// `catdog_powersgd_orthonormalize`'s doubles: rank × the most rows of a matrix.
    private let orthonormalizing: UnsafeMutablePointer<Double>
    let comm: Communicator
    /// Between machines (inside `HierarchicalReduction`): each bucket is compressed by one rank
    /// of each machine (its `owned` buckets), the factors summed across the machines among those
    /// ranks (a rail), with the machine's error feedback.
    public let betweenMachines: Bool
    /// The buckets this rank compresses (between machines, each bucket's owner on its
    /// machine; flat, all of them). Set before the first update, the same on every update.
    public var owned: [Bool]
    /// The next bucket whose Q round may start (they start in bucket order on every rank).
    private var nextQRound = 0
    public var name: String { "PowerSGD rank \(rank)\(bf16Factors ? " with bf16 factors" : "")" }

    /// The matrix a tensor of `shape` is compressed as, or nil when rank `r` would not make it
    /// at least 2× smaller.
    public static func matrix(shape: [Int], rank r: Int) -> (rows: Int, columns: Int)? {
        guard shape.count >= 2, let columns = shape.last, columns > 0 else { return nil }
        let rows = shape.dropLast().reduce(1, *)
        guard rows * columns >= 2 * r * (rows + columns) else { return nil }
        return (rows, columns)
    }

    /// `tensors` are the parameter tensors (offset and shape) within the buckets.
    public init(buckets: [Range<Int>], tensors: [(offset: Int, shape: [Int])], rank r: Int, startUpdate: Int,
                seed: UInt64, communicator: Communicator, bf16Factors: Bool = false, betweenMachines: Bool = false) {
        precondition(r >= 1)
        rank = r
        self.betweenMachines = betweenMachines
        owned = Array(repeating: true, count: buckets.count)
        self.bf16Factors = bf16Factors
        self.buckets = buckets
        self.startUpdate = startUpdate
        comm = communicator
        offset = buckets.map(\.lowerBound).min() ?? 0
        let span = (buckets.map(\.upperBound).max() ?? offset) - offset
        var matrices: [Matrix] = []
        var qCount = 0
        for t in tensors.sorted(by: { $0.offset < $1.offset }) {
            guard let (rows, columns) = Self.matrix(shape: t.shape, rank: r),
                  buckets.contains(where: { $0.contains(t.offset) && $0.upperBound >= t.offset + rows * columns }) else { continue }
            matrices.append(Matrix(offset: t.offset, rows: rows, columns: columns, q: qCount))
            qCount += r * columns
        }
        plans = buckets.map { range in
            let inside = matrices.filter { range.contains($0.offset) }
            var exact: [Range<Int>] = []
            var at = range.lowerBound
            var p: [Int] = [], pCount = 0
            for m in inside {
                if m.offset > at { exact.append(at..<m.offset) }
                at = m.offset + m.rows * m.columns
                p.append(pCount)
                pCount += r * m.rows
            }
            if at < range.upperBound { exact.append(at..<range.upperBound) }
            let qRange = inside.isEmpty ? 0..<0 : inside[0].q..<(inside.last!.q + r * inside.last!.columns)
            return Plan(range: range, matrices: inside, exact: exact, exactCount: exact.reduce(0) { $0 + $1.count },
                        p: p, pCount: pCount, qRange: qRange)
        }
        pBuffers = plans.map { FloatBuffer(count: max($0.exactCount + $0.pCount, 1)) }
        var wireAt: [Int] = [], pTotal = 0
        for plan in plans {
            wireAt.append(pTotal)
            pTotal += bf16Factors ? plan.pCount : 0
        }
        pWireAt = wireAt
        pWire = .allocate(capacity: max(pTotal, 1))
        qWire = .allocate(capacity: bf16Factors ? max(qCount, 1) : 1)
        orthonormalizing = .allocate(capacity: max(r * (matrices.map(\.rows).max() ?? 0), 1))
        q = FloatBuffer(count: qCount)
        error = FloatBuffer(count: span)
        error.zero()
        var random = Random(seed: seed, 0x5057_5347)  // "PWSG"
        for i in 0..<qCount { q[i] = random.uniform(-1, 1) }
    }

    deinit {
        pWire.deallocate()
        qWire.deallocate()
        orthonormalizing.deallocate()
    }

    public var matrices: [Matrix] { plans.flatMap(\.matrices) }

    /// The first bucket after `bucket` that this rank compresses and that holds a compressed
    /// matrix (or the bucket count).
    private func compressedAfter(_ bucket: Int) -> Int {
        plans.indices.first { $0 > bucket && owned[$0] && !plans[$0].matrices.isEmpty } ?? plans.count
    }

    /// Before an update's first bucket: the Q rounds start again from the first.
    public func beginUpdate() { nextQRound = compressedAfter(-1) }

    /// Where bucket `bucket`'s factors Q lie in `q`.
    public func factorRange(bucket: Int) -> Range<Int> { plans[bucket].qRange }

    /// Zeroes the error feedback of the buckets this rank does not compress (after a resume has
    /// given every rank its machine's sum).
    public func keepOwnedError() {
        for (plan, mine) in zip(plans, owned) where !mine {
            (error.pointer + (plan.range.lowerBound - offset)).update(repeating: 0, count: plan.range.count)
        }
    }

    public func wireBytes(bucket: Int, update: Int) -> Int {
        let plan = plans[bucket]
        guard update >= startUpdate else { return plan.range.count * 4 }
        return plan.exactCount * 4 + (plan.pCount + plan.qRange.count) * (bf16Factors ? 2 : 4)
    }

    /// Starts the error feedback again at zero (a resume onto another rank count).
    public func resetError() { error.zero() }

    public func start(bucket: Int, gradients: UnsafeMutablePointer<Float>, update: Int) throws -> PendingReduction {
        let plan = plans[bucket]
        precondition(owned[bucket])
        if bucket == 0 { beginUpdate() }
        guard update >= startUpdate, !plan.matrices.isEmpty else {
            return try sum(gradients + plan.range.lowerBound, count: plan.range.count, channel: 0)
        }
        if let slept = sleptArithmetic { emulate(bucket, slept[bucket].beforeFirst) } else { compress(bucket, gradients) }
        guard bf16Factors else {
            let first = try sum(pBuffers[bucket].pointer, count: plan.exactCount + plan.pCount, channel: 0)
            return Work(self, bucket: bucket, gradients: gradients, first: first)
        }
        let exact = try sum(pBuffers[bucket].pointer, count: plan.exactCount, channel: 0)
        let factors = try sumBF16(pWire + pWireAt[bucket], count: plan.pCount, channel: 0)
        return Work(self, bucket: bucket, gradients: gradients, first: Both(exact, factors))
    }

    /// The emulator's stand-in for `seconds` of bucket `bucket`'s arithmetic: a sleep (its
    /// rounds start that much later), charged to the emulated core that computes it.
    private func emulate(_ bucket: Int, _ seconds: Double) {
        charges?.charge(bucket: bucket, seconds: seconds)
        LabEmulator.sleep(until: Date().addingTimeInterval(seconds))
    }

    /// The all-reduces of the rounds: over every rank, or across the machines on this rank's rail.
    private func sum(_ buffer: UnsafeMutablePointer<Float>, count: Int, channel: Int) throws -> PendingReduction {
        betweenMachines ? try comm.startRailAllReduceSum(buffer, count: count, channel: channel)
            : try comm.startAllReduceSum(buffer, count: count, channel: channel)
    }

    private func sumBF16(_ buffer: UnsafeMutablePointer<UInt16>, count: Int, channel: Int) throws -> PendingReduction {
        betweenMachines ? try comm.startRailAllReduceSumBF16(buffer, count: count, channel: channel)
            : try comm.startAllReduceSumBF16(buffer, count: count, channel: channel)
    }

    /// Before the P round: the exact values into the P buffer, the error feedback added to each
    /// matrix and P = M Q.
    func compress(_ bucket: Int, _ gradients: UnsafeMutablePointer<Float>) {
        let plan = plans[bucket]
        let buffer = pBuffers[bucket].pointer
        var at = 0
        for range in plan.exact {
            (buffer + at).update(from: gradients + range.lowerBound, count: range.count)
            at += range.count
        }
        for (m, pAt) in zip(plan.matrices, plan.p) {
            catdog_powersgd_project(gradients + m.offset, error.pointer + (m.offset - offset), q.pointer + m.q,
                                    buffer + plan.exactCount + pAt, m.rows, m.columns, rank)
        }
        if bf16Factors { catdog_float_to_bf16(buffer + plan.exactCount, pWire + pWireAt[bucket], plan.pCount) }
    }

    /// Two reductions in flight as one.
    final class Both: PendingReduction {
        let first: PendingReduction, second: PendingReduction
        init(_ first: PendingReduction, _ second: PendingReduction) {
            self.first = first
            self.second = second
        }
        func test() throws -> Bool {
            let a = try first.test(), b = try second.test()
            return a && b
        }
        func wait() throws {
            try first.wait()
            try second.wait()
        }
    }

    /// One bucket's two rounds.
    final class Work: PendingReduction {
        let owner: PowerSGDReduction
        let bucket: Int
        let gradients: UnsafeMutablePointer<Float>
        var first: PendingReduction?
        var second: PendingReduction?
        var done = false

        init(_ owner: PowerSGDReduction, bucket: Int, gradients: UnsafeMutablePointer<Float>, first: PendingReduction) {
            self.owner = owner
            self.bucket = bucket
            self.gradients = gradients
            self.first = first
        }

        func test() throws -> Bool {
            if done { return true }
            if let f = first {
                guard owner.nextQRound == bucket, try f.test() else { return false }
                first = nil
                second = try owner.secondRound(bucket, gradients)
            }
            guard let s = second, try s.test() else { return false }
            owner.finish(bucket, gradients)
            done = true
            return true
        }

        func wait() throws {
            if done { return }
            if let f = first {
                precondition(owner.nextQRound == bucket, "PowerSGD buckets are waited for in order")
                try f.wait()
                first = nil
                second = try owner.secondRound(bucket, gradients)
            }
            try second!.wait()
            owner.finish(bucket, gradients)
            done = true
        }
    }

    /// After the P round: the exact values back in place, P orthonormalised, Q ← Mᵀ P and its
    /// all-reduce started.
    func secondRound(_ bucket: Int, _ gradients: UnsafeMutablePointer<Float>) throws -> PendingReduction {
        let plan = plans[bucket]
        if let slept = sleptArithmetic { emulate(bucket, slept[bucket].between) } else { backProject(bucket, gradients) }
        nextQRound = compressedAfter(bucket)
        if bf16Factors { return try sumBF16(qWire + plan.qRange.lowerBound, count: plan.qRange.count, channel: 1) }
        return try sum(q.pointer + plan.qRange.lowerBound, count: plan.qRange.count, channel: 1)
    }

    func backProject(_ bucket: Int, _ gradients: UnsafeMutablePointer<Float>) {
        let plan = plans[bucket]
        let buffer = pBuffers[bucket].pointer
        if bf16Factors { catdog_bf16_to_float(pWire + pWireAt[bucket], buffer + plan.exactCount, plan.pCount) }
        var at = 0
        for range in plan.exact {
            (gradients + range.lowerBound).update(from: buffer + at, count: range.count)
            at += range.count
        }
        for (m, pAt) in zip(plan.matrices, plan.p) {
            let p = buffer + plan.exactCount + pAt, qm = q.pointer + m.q, g = gradients + m.offset
            catdog_powersgd_orthonormalize(p, m.rows, rank, orthonormalizing)
            catdog_powersgd_back_project(g, p, qm, m.rows, m.columns, rank)
        }
        let qs = plan.qRange
        if bf16Factors { catdog_float_to_bf16(q.pointer + qs.lowerBound, qWire + qs.lowerBound, qs.count) }
    }

    /// After the Q round: gradient ← P Qᵀ, error ← M − P Qᵀ / ranks.
    func finish(_ bucket: Int, _ gradients: UnsafeMutablePointer<Float>) {
        if let slept = sleptArithmetic {
            emulate(bucket, slept[bucket].after)
            return
        }
        let plan = plans[bucket]
        let buffer = pBuffers[bucket].pointer
        let share = 1 / Float(betweenMachines ? comm.machineCount : comm.size)
        let qs = plan.qRange
        if bf16Factors { catdog_bf16_to_float(qWire + qs.lowerBound, q.pointer + qs.lowerBound, qs.count) }
        for (m, pAt) in zip(plan.matrices, plan.p) {
            catdog_powersgd_finish(gradients + m.offset, error.pointer + (m.offset - offset), buffer + plan.exactCount + pAt,
                                   q.pointer + m.q, m.rows, m.columns, rank, share)
        }
    }

    /// Each bucket's arithmetic on `gradients` (compressed buckets only; the others have none),
    /// the mean of `repeats` runs. Before each of the three passes over the buckets `evict` runs
    /// (e.g. writing a buffer larger than the caches): in training the error feedback and the
    /// factors come from memory, not from the cache a repeat would leave them in. Changes the
    /// gradients, the factors and the error feedback.
    public func measureArithmetic(gradients: UnsafeMutablePointer<Float>, repeats: Int = 3,
                                  evict: () -> Void = {}) -> [Arithmetic] {
        var times = [Arithmetic](repeating: Arithmetic(), count: plans.count)
        let compressed = plans.indices.filter { !plans[$0].matrices.isEmpty }
        func timed(_ body: () -> Void) -> Double {
            let start = Date()
            body()
            return Date().timeIntervalSince(start) / Double(max(repeats, 1))
        }
        for _ in 0..<max(repeats, 1) {
            evict()
            for b in compressed { times[b].beforeFirst += timed { compress(b, gradients) } }
            evict()
            for b in compressed { times[b].between += timed { backProject(b, gradients) } }
            evict()
            for b in compressed { times[b].after += timed { finish(b, gradients) } }
        }
        return times
    }

    // MARK: - Small dense kernels (fixed order: every rank computes the same bits; the passes over
    // the matrices are catdog_powersgd_project, _back_project and _finish, P is made orthonormal by
    // catdog_powersgd_orthonormalize)

    /// y += a·x
    static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        let av = SIMD8<Float>(repeating: a)
        while i + 8 <= n {
            let yv = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self) + av * UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(y + i).storeBytes(of: yv, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n {
            y[i] += a * x[i]
            i += 1
        }
    }
}
