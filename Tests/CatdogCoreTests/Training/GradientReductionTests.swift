import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import CatdogTraining
import Foundation
import XCTest

/// The reductions of a data-parallel step, on ranks that are threads of this process
/// (`ThreadCommunicator`): exact sums, PowerSGD against them, and the in-process communicator.
final class GradientReductionTests: XCTestCase {
    // MARK: - The in-process communicator

    func testThreadCommunicatorCollectivesMatchSerialResults() throws {
        let results = try ThreadCommunicator.run(ranks: 4) { comm -> ([Float], [UInt8], [Int32], [Double]) in
            var floats = (0..<5).map { Float(comm.rank * 10 + $0) }
            try floats.withUnsafeMutableBufferPointer { try comm.allReduceSum($0.baseAddress!, count: 5) }
            var bytes: [UInt8] = comm.rank == 2 ? [7, 8, 9] : [0, 0, 0]
            try bytes.withUnsafeMutableBytes { try comm.broadcast($0.baseAddress!, bytes: 3, root: 2) }
            // Rank r contributes r + 1 items at offset r(r+1)/2.
            var gathered = [Int32](repeating: -1, count: 10)
            let counts = (0..<4).map { $0 + 1 }, offsets = (0..<4).map { $0 * ($0 + 1) / 2 }
            for i in 0..<counts[comm.rank] { gathered[offsets[comm.rank] + i] = Int32(comm.rank) }
            try gathered.withUnsafeMutableBytes { try comm.allGather($0.baseAddress!, itemBytes: 4, counts: counts, offsets: offsets) }
            var maxima = [Double(comm.rank), -Double(comm.rank)]
            try comm.allReduceMax(&maxima)
            return (floats, bytes, gathered, maxima)
        }
        for (floats, bytes, gathered, maxima) in results {
            XCTAssertEqual(floats, (0..<5).map { Float(60 + 4 * $0) })
            XCTAssertEqual(bytes, [7, 8, 9])
            XCTAssertEqual(gathered, [0, 1, 1, 2, 2, 2, 3, 3, 3, 3])
            XCTAssertEqual(maxima, [3, 0])
        }
    }

    /// Channels 0 and 1 are independent: ranks may start them in different orders (as
    /// PowerSGD's second rounds do) without deadlock or mismatched sums.
    func testThreadCommunicatorChannelsAreIndependent() throws {
        let results = try ThreadCommunicator.run(ranks: 2) { comm -> [Float] in
            var a: [Float] = [Float(comm.rank + 1)], b: [Float] = [Float(10 * (comm.rank + 1))]
            try a.withUnsafeMutableBufferPointer { pa in
                try b.withUnsafeMutableBufferPointer { pb in
                    let first: PendingReduction, second: PendingReduction
                    if comm.rank == 0 {
                        first = try comm.startAllReduceSum(pa.baseAddress!, count: 1, channel: 0)
                        second = try comm.startAllReduceSum(pb.baseAddress!, count: 1, channel: 1)
                    } else {
                        second = try comm.startAllReduceSum(pb.baseAddress!, count: 1, channel: 1)
                        first = try comm.startAllReduceSum(pa.baseAddress!, count: 1, channel: 0)
                    }
                    try second.wait()
                    try first.wait()
                }
            }
            return a + b
        }
        XCTAssertEqual(results, [[3, 30], [3, 30]])
    }

    func testAFailingRankEndsTheOthersWaitInACollective() {
        struct Broken: Error {}
        XCTAssertThrowsError(try ThreadCommunicator.run(ranks: 3) { comm in
            if comm.rank == 1 { throw Broken() }
            try comm.barrier()
        }) { XCTAssertTrue($0 is Broken, "\($0)") }
    }

    // MARK: - PowerSGD

    /// A 3×3 convolution kernel (3·3·8 = 72 rows × 16 columns), its bias, and a small dense
    /// kernel that compresses less than 2× at rank 2 (sent exactly), in two buckets.
    let tensors: [(offset: Int, shape: [Int])] = [(0, [3, 3, 8, 16]), (1152, [16]), (1168, [4, 2])]
    let count = 1176
    var buckets: [Range<Int>] { [1152..<1176, 0..<1152] }

    // MARK: - The hierarchical all-reduce

    /// Runs two updates of `HierarchicalReduction` (or `FP32Reduction` when `flat`) over four
    /// buckets on `ranks` thread ranks grouped in machines of `machineRanks`; each rank's
    /// gradient is random per rank and update. Buckets start in order with tests in between,
    /// as backward does; they are waited for in reverse order, so that waiting on a later
    /// bucket has to carry the earlier ones through their stages. Returns each rank's sums.
    func runHierarchical(ranks: Int, machineRanks: Int?, flat: Bool = false) throws -> [[[Float]]] {
        try runReduction(ranks: ranks, machineRanks: machineRanks) { buckets, comm in
            flat ? FP32Reduction(buckets: buckets, communicator: comm) as GradientReduction
                 : HierarchicalReduction(buckets: buckets, communicator: comm)
        }
    }

    /// One update of `reduction` on `gradients`: the buckets started in order with a test in
    /// between, as backward does, then waited for in reverse order, so that waiting on a later
    /// bucket has to carry the earlier ones through their stages.
    static func reduce(_ reduction: GradientReduction, _ gradients: inout [Float], update: Int) throws {
        try gradients.withUnsafeMutableBufferPointer { p in
            var pending: [PendingReduction] = []
            for b in reduction.buckets.indices {
                pending.append(try reduction.start(bucket: b, gradients: p.baseAddress!, update: update))
                _ = try pending.first?.test()
            }
            for r in pending.reversed() { try r.wait() }
        }
    }

    /// Two updates of the reduction `make` builds over the four buckets above, started and
    /// waited for as there; `beforeUpdate` may change it between updates.
    func runReduction(ranks: Int, machineRanks: Int? = nil, _ make: @escaping ([Range<Int>], Communicator) -> GradientReduction,
                      beforeUpdate: @escaping (GradientReduction, Int) -> Void = { _, _ in }) throws -> [[[Float]]] {
        let buckets = [700..<1000, 300..<700, 10..<300, 0..<10]
        return try ThreadCommunicator.run(ranks: ranks, machineRanks: machineRanks) { comm in
            let reduction = make(buckets, comm)
            var sums: [[Float]] = []
            for update in 0..<2 {
                beforeUpdate(reduction, update)
                var g = Self.randomGradient(seed: UInt64(100 * update + comm.rank), count: 1000)
                try Self.reduce(reduction, &g, update: update)
                sums.append(g)
            }
            return sums
        }
    }

    /// Machines of 2, 2 and 1 ranks (5 ranks), and of 3 (6 ranks): every rank ends each update
    /// with the same sums, bit for bit (the leaders' sum is broadcast), equal to the exact sum
    /// in double within fp32's rounding (1e-6 relative, 4e-7 absolute on sums of six terms of
    /// at most 1). With every rank a machine of its own it is the flat all-reduce, bit for bit.
    func testHierarchicalSumsAreExactAndTheSameOnEveryRank() throws {
        for (ranks, machine) in [(5, 2), (6, 3)] {
            let results = try runHierarchical(ranks: ranks, machineRanks: machine)
            for update in 0..<2 {
                let gradients = (0..<ranks).map { Self.randomGradient(seed: UInt64(100 * update + $0), count: 1000) }
                for r in 1..<ranks { XCTAssertEqual(results[r][update], results[0][update], "\(ranks) ranks, machines of \(machine): rank \(r), update \(update)") }
                for i in 0..<1000 {
                    let exact = gradients.reduce(0.0) { $0 + Double($1[i]) }
                    XCTAssertEqual(Double(results[0][update][i]), exact, accuracy: 4e-7 + 1e-6 * abs(exact),
                                   "\(ranks) ranks, machines of \(machine): update \(update), value \(i)")
                }
            }
        }
        XCTAssertEqual(try runHierarchical(ranks: 3, machineRanks: nil), try runHierarchical(ranks: 3, machineRanks: nil, flat: true))
    }

    // MARK: - The parted all-reduce

    /// Parts follow the weights (part r ends at count × (w0 + … + wr) / Σw, rounded down),
    /// cover the bucket exactly, and a weight of 0 gives an empty part.
    func testPartsFollowTheWeightsAndCoverTheBucket() {
        XCTAssertEqual(PartedReduction.parts(count: 10, weights: [3, 0, 1]), [7, 0, 3])
        XCTAssertEqual(PartedReduction.parts(count: 1000, weights: [24, 24, 12, 4]), [375, 375, 187, 63])
        XCTAssertEqual(PartedReduction.parts(count: 3, weights: [1, 1, 1, 1]), [0, 1, 1, 1])
        XCTAssertEqual(PartedReduction.parts(count: 0, weights: [2, 1]), [0, 0])
        // The largest a bucket and the weights may be (2^31 - 1 values; weights summing to 2^31)
        // multiply within 64 bits.
        for (count, weights) in [(4_718_592, [44, 20]), (777, [1, 7, 3]), (5, [96, 96, 48, 16]),
                                 (Int(Int32.max), Array(repeating: 1 << 24, count: 128))] {
            let parts = PartedReduction.parts(count: count, weights: weights)
            XCTAssertEqual(parts.reduce(0, +), count)
            XCTAssertTrue(parts.allSatisfy { $0 >= 0 })
            for (part, w) in zip(parts, weights) {
                XCTAssertEqual(Double(part), Double(count * w) / Double(weights.reduce(0, +)), accuracy: 1.0)
            }
        }
    }

    /// Three thread ranks with weights 3, 0 and 1, changed between the two updates to 1, 1, 1:
    /// every rank ends each update with the same sums, bit for bit those of the flat fp32
    /// all-reduce (both add in rank order), within fp32 rounding of the exact sum.
    func testPartedSumsAreTheFlatSumsWhateverTheWeights() throws {
        let parted = try runReduction(ranks: 3, { PartedReduction(buckets: $0, communicator: $1, weights: [3, 0, 1]) },
                                      beforeUpdate: { reduction, update in if update == 1 { (reduction as! PartedReduction).weights = [1, 1, 1] } })
        let flat = try runReduction(ranks: 3) { FP32Reduction(buckets: $0, communicator: $1) }
        XCTAssertEqual(parted, flat)
        for update in 0..<2 {
            for r in 1..<3 { XCTAssertEqual(parted[r][update], parted[0][update], "rank \(r), update \(update)") }
            let gradients = (0..<3).map { Self.randomGradient(seed: UInt64(100 * update + $0), count: 1000) }
            for i in 0..<1000 {
                let exact = gradients.reduce(0.0) { $0 + Double($1[i]) }
                XCTAssertEqual(Double(parted[0][update][i]), exact, accuracy: 4e-7 + 1e-6 * abs(exact), "update \(update), value \(i)")
            }
        }
        // What a rank sends: the others' parts of its values, then its own part's sum to each.
        _ = try ThreadCommunicator.run(ranks: 3) { comm in
            let reduction = PartedReduction(buckets: [0..<10], communicator: comm, weights: [3, 0, 1])
            XCTAssertEqual(reduction.wireBytes(bucket: 0, update: 0), 4 * [3 + 7 * 2, 10, 7 + 3 * 2][comm.rank])
        }
    }

    /// Runs `steps` updates of PowerSGD rank `rank` on `ranks` thread ranks, rank r's gradient at
    /// update t given by `gradient(r, t)`; returns per rank, per update, the reduced gradient
    /// and the rank's error feedback after it.
    func runPowerSGD(ranks: Int, rank: Int = 2, steps: Int, startUpdate: Int = 0, bf16Factors: Bool = false,
                     buckets given: [Range<Int>]? = nil,
                     gradient: @escaping @Sendable (Int, Int) -> [Float]) throws -> [[(reduced: [Float], error: [Float])]] {
        let tensors = self.tensors, buckets = given ?? self.buckets
        return try ThreadCommunicator.run(ranks: ranks) { comm in
            let reduction = PowerSGDReduction(buckets: buckets, tensors: tensors, rank: rank, startUpdate: startUpdate,
                                              seed: 3, communicator: comm, bf16Factors: bf16Factors)
            var out: [(reduced: [Float], error: [Float])] = []
            for t in 0..<steps {
                var g = gradient(comm.rank, t)
                try g.withUnsafeMutableBufferPointer { p in
                    let pending = try buckets.indices.map { try reduction.start(bucket: $0, gradients: p.baseAddress!, update: t) }
                    for r in pending { try r.wait() }
                }
                out.append((g, reduction.error.array))
            }
            return out
        }
    }

    static func randomGradient(seed: UInt64, count: Int) -> [Float] {
        var random = Random(seed: seed)
        return (0..<count).map { _ in random.uniform(-1, 1) }
    }

    static func exactSum(_ ranks: Int, _ gradient: (Int, Int) -> [Float], update t: Int) -> [Float] {
        (0..<ranks).map { gradient($0, t) }.reduce(into: [Float](repeating: 0, count: gradient(0, t).count)) { sum, g in
            for i in sum.indices { sum[i] += g[i] }
        }
    }

    static func relativeError(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
        let diff = zip(a, b).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
        let norm = b.reduce(0.0) { $0 + Double($1 * $1) }
        return (diff / max(norm, 1e-30)).squareRoot()
    }

    /// When the summed gradient of a matrix has rank ≤ r, one power-iteration step recovers
    /// it: the approximation equals the exact sum to 1e-4 relative, and the bias and the small
    /// kernel (not compressed) equal it to float tolerance (1e-6 relative).
    func testLowRankGradientsAreReducedExactly() throws {
        let count = self.count
        let gradient: @Sendable (Int, Int) -> [Float] = { rank, _ in
            var g = Self.randomGradient(seed: 100 + UInt64(rank), count: count)
            // The kernel: a rank-1 matrix u vᵀ scaled per rank.
            let u = Self.randomGradient(seed: 7, count: 72), v = Self.randomGradient(seed: 8, count: 16)
            for i in 0..<72 { for j in 0..<16 { g[i * 16 + j] = Float(rank + 1) * u[i] * v[j] } }
            return g
        }
        let results = try runPowerSGD(ranks: 4, steps: 1, gradient: gradient)
        let exact = Self.exactSum(4, gradient, update: 0)
        for r in 0..<4 {
            let reduced = results[r][0].reduced
            XCTAssertLessThan(Self.relativeError(reduced[0..<1152], exact[0..<1152]), 1e-4, "rank \(r): the kernel")
            XCTAssertLessThan(Self.relativeError(reduced[1152...], exact[1152...]), 1e-6, "rank \(r): the exact tensors")
            XCTAssertEqual(reduced, results[0][0].reduced, "every rank applies the same bits")
        }
    }

    /// With full-rank gradients the rank-2 approximation is coarse, but nothing is lost: after
    /// every update, the reduced gradient plus every rank's error feedback equals the exact
    /// sum plus the error feedback carried in (1e-5 relative); and over 100 updates of the same
    /// gradients the mean applied gradient comes within 10% of the exact one although a single
    /// update is more than 30% off. (The mean's error is the final error feedback over the
    /// update count: it shrinks as 1/updates because the error feedback stays bounded.)
    func testErrorFeedbackCarriesWhatCompressionLeftOut() throws {
        let count = self.count
        let gradient: @Sendable (Int, Int) -> [Float] = { rank, _ in Self.randomGradient(seed: 200 + UInt64(rank), count: count) }
        let steps = 100
        let results = try runPowerSGD(ranks: 3, steps: steps, gradient: gradient)
        let exact = Self.exactSum(3, gradient, update: 0)
        var carried = [Float](repeating: 0, count: 1152)
        var applied = [Double](repeating: 0, count: 1152)
        for t in 0..<steps {
            let reduced = results[0][t].reduced
            var total = [Float](repeating: 0, count: 1152)
            for r in 0..<3 {
                XCTAssertEqual(results[r][t].reduced, reduced, "rank \(r), update \(t): the same bits on every rank")
                for i in 0..<1152 { total[i] += results[r][t].error[i] }
            }
            for i in 0..<1152 { total[i] += reduced[i] }
            let expected = (0..<1152).map { exact[$0] + carried[$0] }
            XCTAssertLessThan(Self.relativeError(total[...], expected[...]), 1e-5, "update \(t)")
            carried = (0..<1152).map { i in (0..<3).reduce(Float(0)) { $0 + results[$1][t].error[i] } }
            for i in 0..<1152 { applied[i] += Double(reduced[i]) / Double(steps) }
            if t == 0 { XCTAssertGreaterThan(Self.relativeError(reduced[0..<1152], exact[0..<1152]), 0.3) }
        }
        XCTAssertLessThan(Self.relativeError(applied.map { Float($0) }[...], exact[0..<1152]), 0.1)
    }

    /// With the factors in bf16 (`powersgd:R:bf16`), in one bucket with the exact tensors: every
    /// rank still applies the same bits, the bias and the small kernel are still summed exactly
    /// (1e-6 relative), nothing is lost (the reduced gradient plus every rank's error feedback
    /// equals the exact sum plus what was carried in, 1e-5 relative: the error feedback holds
    /// what the rounding dropped), each update is within 5% (relative) of what fp32 factors
    /// give, and the factors' bytes are halved.
    func testFactorsInBF16KeepWhatTheRoundingDropsInTheErrorFeedback() throws {
        let count = self.count, one = [0..<count]
        let gradient: @Sendable (Int, Int) -> [Float] = { rank, t in Self.randomGradient(seed: 600 + UInt64(rank * 10 + t), count: count) }
        let steps = 6
        let half = try runPowerSGD(ranks: 3, steps: steps, bf16Factors: true, buckets: one, gradient: gradient)
        let full = try runPowerSGD(ranks: 3, steps: steps, buckets: one, gradient: gradient)
        var carried = [Float](repeating: 0, count: 1152)
        for t in 0..<steps {
            let reduced = half[0][t].reduced, exact = Self.exactSum(3, gradient, update: t)
            for r in 0..<3 { XCTAssertEqual(half[r][t].reduced, reduced, "rank \(r), update \(t): the same bits on every rank") }
            XCTAssertLessThan(Self.relativeError(reduced[1152...], exact[1152...]), 1e-6, "update \(t): the exact tensors")
            var total = Array(reduced[0..<1152])
            for r in 0..<3 { for i in 0..<1152 { total[i] += half[r][t].error[i] } }
            let expected = (0..<1152).map { exact[$0] + carried[$0] }
            XCTAssertLessThan(Self.relativeError(total[...], expected[...]), 1e-5, "update \(t): nothing lost")
            carried = (0..<1152).map { i in (0..<3).reduce(Float(0)) { $0 + half[$1][t].error[i] } }
            XCTAssertLessThan(Self.relativeError(reduced[0..<1152], full[0][t].reduced[0..<1152]), 0.05, "update \(t) against fp32 factors")
            XCTAssertNotEqual(reduced, full[0][t].reduced, "update \(t): the factors were rounded")
        }
        let counts = try ThreadCommunicator.run(ranks: 2) { comm in
            let reduction = PowerSGDReduction(buckets: one, tensors: self.tensors, rank: 2, startUpdate: 0, seed: 3, communicator: comm,
                                              bf16Factors: true)
            return (reduction.wireBytes(bucket: 0, update: 0), reduction.name)
        }
        // Exact: the bias (16) and the small kernel (8); factors: P 2 × 72, Q 2 × 16.
        XCTAssertEqual(counts[0].0, 24 * 4 + (2 * 72 + 2 * 16) * 2)
        XCTAssertEqual(counts[0].1, "PowerSGD rank 2 with bf16 factors")
    }

    /// PowerSGD on 3 ranks against 1 rank given the sum of their gradients: the factors and
    /// the error feedback are linear in the gradients (P = Σ (M_r + E_r) Q, Q = Σ (M_r + E_r)ᵀ P,
    /// E_r ← M_r + E_r − P Qᵀ / ranks, so Σ_r E_r ← M + E − P Qᵀ), so the reduced gradient follows
    /// the sum alone, to float rounding, update after update.
    func testPowerSGDFollowsTheSumOfTheRanksGradients() throws {
        let count = self.count, steps = 12
        let gradient: @Sendable (Int, Int) -> [Float] = { rank, t in Self.randomGradient(seed: 700 + UInt64(rank * 100 + t), count: count) }
        let three = try runPowerSGD(ranks: 3, steps: steps, gradient: gradient)
        let one = try runPowerSGD(ranks: 1, steps: steps) { _, t in Self.exactSum(3, gradient, update: t) }
        for t in 0..<steps {
            let e = Self.relativeError(three[0][t].reduced[...], one[0][t].reduced[...])
            XCTAssertLessThan(e, 1e-4, "update \(t)")
        }
    }

    /// Before `startUpdate` (the learning-rate warmup) every bucket is summed exactly and no
    /// error feedback builds up.
    func testUpdatesBeforeTheStartAreExact() throws {
        let count = self.count
        let gradient: @Sendable (Int, Int) -> [Float] = { rank, t in Self.randomGradient(seed: 300 + UInt64(rank * 10 + t), count: count) }
        let results = try runPowerSGD(ranks: 2, steps: 3, startUpdate: 2, gradient: gradient)
        for t in 0..<2 {
            let exact = Self.exactSum(2, gradient, update: t)
            XCTAssertLessThan(Self.relativeError(results[0][t].reduced[...], exact[...]), 1e-6, "update \(t)")
            XCTAssertEqual(results[1][t].error.max(), 0)
        }
        XCTAssertGreaterThan(results[1][2].error.map(abs).max()!, 0, "update 2 is compressed")
    }

    /// The lab emulator's PowerSGD: each compressed bucket's arithmetic measured (nothing for a
    /// bucket sent exactly), then slept instead of computed. The same rounds cross the network,
    /// an update takes at least the time slept, and nothing is computed: the gradients stay
    /// as they were and no error feedback builds up.
    func testSleptArithmeticSendsTheSameRoundsWithoutComputing() throws {
        let count = self.count, buckets = self.buckets, tensors = self.tensors
        let gradient = Self.randomGradient(seed: 500, count: count)
        let results = try ThreadCommunicator.run(ranks: 2) { comm in
            let reduction = PowerSGDReduction(buckets: buckets, tensors: tensors, rank: 2, startUpdate: 0, seed: 3, communicator: comm)
            var scratch = gradient
            let measured = scratch.withUnsafeMutableBufferPointer { reduction.measureArithmetic(gradients: $0.baseAddress!) }
            reduction.resetError()
            reduction.sleptArithmetic = measured.map { $0.total > 0 ? .init(beforeFirst: 0.004, between: 0.003, after: 0.002) : $0 }
            var g = gradient
            let start = Date()
            try g.withUnsafeMutableBufferPointer { p in
                let pending = try buckets.indices.map { try reduction.start(bucket: $0, gradients: p.baseAddress!, update: 0) }
                for r in pending { try r.wait() }
            }
            return (measured, Date().timeIntervalSince(start), g, reduction.error.array)
        }
        for (measured, seconds, g, error) in results {
            XCTAssertEqual(measured[0], PowerSGDReduction.Arithmetic(), "bucket 0 (the bias and the small kernel) is sent exactly")
            XCTAssertGreaterThan(measured[1].beforeFirst, 0)
            XCTAssertGreaterThan(measured[1].between, 0)
            XCTAssertGreaterThan(measured[1].after, 0)
            XCTAssertGreaterThanOrEqual(seconds, 0.009, "the slept arithmetic of the compressed bucket")
            XCTAssertEqual(Array(g[0..<1152]), Array(gradient[0..<1152]), "the compressed matrix is not computed")
            XCTAssertEqual(error.map(abs).max(), 0, "no error feedback")
            let exact = Self.exactSum(2, { _, _ in gradient }, update: 0)
            XCTAssertLessThan(Self.relativeError(g[1152...], exact[1152...]), 1e-6, "bucket 0 is still summed exactly")
        }
    }

    /// PowerSGD between machines (`--allreduce hierarchical`), 8 updates of random gradients,
    /// the buckets started in order and waited for in reverse (as `runReduction`), against the
    /// flat PowerSGD of as many ranks: 4 ranks in machines of 2 (two rails: bucket 0, sent
    /// exactly, is summed across the machines by ranks 0 and 2, bucket 1, the compressed kernel,
    /// by ranks 1 and 3), 5 ranks in machines of 2, 2 and 1 (one rail: the leaders take both),
    /// and 8 in machines of 3, 3 and 2 (two rails: ranks 1, 4 and 7 take the kernel, the third
    /// ranks of the larger machines nothing). Every rank applies the same bits and keeps the same Q; each update is the flat
    /// one's within 1e-4 (relative L2: both follow the summed gradients and differ only in
    /// rounding); only the kernel's owners hold error feedback, and theirs sums to the flat
    /// ranks' within 1e-4; a machine's ranks together send what a flat rank sends. One machine
    /// of 2 ranks compresses as 2 flat ranks do (1e-4), so that the machine count changes only
    /// rounding.
    func testPowerSGDBetweenMachinesFollowsTheFlatOne() throws {
        let count = self.count, tensors = self.tensors, buckets = self.buckets, steps = 8
        let gradient: @Sendable (Int, Int) -> [Float] = { rank, t in Self.randomGradient(seed: 900 + UInt64(rank * 100 + t), count: count) }
        typealias Run = (reduced: [[Float]], error: [Float], q: [Float], wire: Int)
        func run(ranks: Int, machineRanks: Int?) throws -> [Run] {
            try ThreadCommunicator.run(ranks: ranks, machineRanks: machineRanks) { comm in
                let powerSGD = PowerSGDReduction(buckets: buckets, tensors: tensors, rank: 2, startUpdate: 0, seed: 3,
                                                 communicator: comm, betweenMachines: machineRanks != nil)
                let reduction: GradientReduction = machineRanks == nil ? powerSGD
                    : HierarchicalReduction(buckets: buckets, communicator: comm, across: powerSGD)
                XCTAssertTrue(reduction.powerSGD === powerSGD)
                var reduced: [[Float]] = []
                for t in 0..<steps {
                    var g = gradient(comm.rank, t)
                    try Self.reduce(reduction, &g, update: t)
                    reduced.append(g)
                }
                return (reduced, powerSGD.error.array, powerSGD.q.array, buckets.indices.reduce(0) { $0 + reduction.wireBytes(bucket: $1, update: 1) })
            }
        }
        let sum = { (runs: [Run]) in runs.reduce(into: [Float](repeating: 0, count: 1152)) { s, run in for i in s.indices { s[i] += run.error[i] } } }
        for (ranks, machine, kernelOwners) in [(4, 2, [1, 3]), (5, 2, [0, 2, 4]), (8, 3, [1, 4, 7])] {
            let between = try run(ranks: ranks, machineRanks: machine), flat = try run(ranks: ranks, machineRanks: nil)
            let what = "\(ranks) ranks in machines of \(machine)"
            for t in 0..<steps {
                for r in 1..<ranks { XCTAssertEqual(between[r].reduced[t], between[0].reduced[t], "\(what), rank \(r), update \(t): the same bits on every rank") }
                XCTAssertLessThan(Self.relativeError(between[0].reduced[t][...], flat[0].reduced[t][...]), 1e-4, "\(what), update \(t): against flat")
            }
            for r in 1..<ranks { XCTAssertEqual(between[r].q, between[0].q, "\(what), rank \(r): the same Q on every rank") }
            XCTAssertGreaterThan(Self.relativeError(between[0].reduced[0][0..<1152], Self.exactSum(ranks, gradient, update: 0)[0..<1152]), 0.1,
                                 "\(what): the kernel was compressed")
            for r in 0..<ranks {
                let largest = between[r].error.map(abs).max()!
                if kernelOwners.contains(r) { XCTAssertGreaterThan(largest, 0, "\(what): rank \(r) compresses the kernel") }
                else { XCTAssertEqual(largest, 0, "\(what): rank \(r) compresses nothing, so keeps no error feedback") }
            }
            XCTAssertLessThan(Self.relativeError(sum(between)[...], sum(flat)[...]), 1e-4, "\(what): the machines' error feedback against the ranks'")
            let machines = stride(from: 0, to: ranks, by: machine).map { between[$0..<min($0 + machine, ranks)].reduce(0) { $0 + $1.wire } }
            XCTAssertEqual(machines, .init(repeating: flat[0].wire, count: machines.count), "\(what): bytes a machine sends")
        }

        let one = try run(ranks: 2, machineRanks: 2), two = try run(ranks: 2, machineRanks: nil)
        for t in 0..<steps {
            XCTAssertEqual(one[1].reduced[t], one[0].reduced[t], "one machine, update \(t): the same bits on both ranks")
            XCTAssertLessThan(Self.relativeError(one[1].reduced[t][...], two[0].reduced[t][...]), 1e-4, "one machine, update \(t)")
        }
        XCTAssertEqual(one[0].wire + one[1].wire, two[0].wire, "the owners' rounds, though they cross no network")
    }

    /// A machine's sum outside the gradient reductions (`machineAllReduceSum`, as a resume folds
    /// PowerSGD's error feedback between machines): every rank of each machine ends with its
    /// machine's sum, and `--inject-fault` does not count it, so its reduction N stays the
    /// step's Nth gradient reduction.
    func testAMachineSumGivesEveryRankItsMachinesSumAndIsNoGradientReduction() throws {
        let sums = try ThreadCommunicator.run(ranks: 5, machineRanks: 2) { base in
            let comm = FaultInjectingCommunicator(wrapping: base, plan: .init(rank: 0, reduction: 0))
            var values: [Float] = [Float(base.rank + 1), 10 * Float(base.rank + 1)]
            try comm.machineAllReduceSum(&values, count: 2)
            var gradient: [Float] = [1]
            let injected: Bool
            do {
                _ = try comm.startMachineReduceSum(&gradient, count: 1, root: 0)
                injected = false
            } catch is FaultInjectingCommunicator.InjectedFault {
                injected = true
            }
            return (values, injected)
        }
        XCTAssertEqual(sums.map(\.0), [[3, 30], [3, 30], [7, 70], [7, 70], [5, 50]])
        XCTAssertEqual(sums.map(\.1), [true, false, false, false, false], "the first gradient reduction is still reduction 0")
    }

    /// On the real model the default recipe trains (resnet at 64 px, 4 MiB buckets), rank 4
    /// sends at least 10× fewer bytes than fp32 — and says which tensors go exactly.
    func testPowerSGDCutsResNetTrafficTenfold() throws {
        let network = try ModelZoo.build("resnet", imageSize: 64)
        let comm = LocalCommunicator()
        let step = DataParallelStep(network: network, optimizer: Adam(count: network.parameterCount), communicator: comm,
                                    overlap: true, bucketBytes: 4 << 20, compression: .powerSGD(rank: 4))
        let reduction = try XCTUnwrap(step.reduction as? PowerSGDReduction)
        let sent = reduction.buckets.indices.reduce(0) { $0 + reduction.wireBytes(bucket: $1, update: 0) }
        let dense = network.parameterCount * 4
        XCTAssertGreaterThanOrEqual(Double(dense) / Double(sent), 10, "\(dense) bytes of fp32 gradients, \(sent) sent")
        XCTAssertEqual(reduction.wireBytes(bucket: 0, update: -1), reduction.buckets[0].count * 4)
        let covered = reduction.matrices.reduce(0) { $0 + $1.rows * $1.columns }
        XCTAssertGreaterThan(Double(covered) / Double(network.parameterCount), 0.9, "the kernels hold most parameters")
    }

    func testCompressionOptionParses() {
        XCTAssertEqual(GradientCompression(parsing: "powersgd:4"), .powerSGD(rank: 4))
        XCTAssertEqual(GradientCompression(parsing: "PowerSGD:16:BF16"), .powerSGD(rank: 16, bf16: true))
        XCTAssertEqual(GradientCompression.powerSGD(rank: 16, bf16: true).description, "powersgd:16:bf16")
        XCTAssertEqual(GradientCompression(parsing: "fp16"), .fp16)
        XCTAssertEqual(GradientCompression(parsing: "none"), GradientCompression.none)
        var config = TrainingConfig()
        config.compression = .powerSGD(rank: 8, bf16: true)
        XCTAssertEqual(config.compression, .powerSGD(rank: 8, bf16: true), "kept in the config a checkpoint records")
        config.compression = .powerSGD(rank: 8)
        XCTAssertNil(config.powerSGDBF16)
        for bad in ["powersgd", "powersgd:0", "powersgd:65", "powersgd:x", "zip", "powersgd:4:1", "powersgd:4:fp16", "powersgd:4:bf16:x",
                    "powersgd::bf16"] {
            XCTAssertNil(GradientCompression(parsing: bad), bad)
        }
    }
}

/// The lab emulator on ranks that are threads: it refuses a profile of another model, sleeps at
/// least the profile's compute each step, and reports what its reduction sends.
final class LabEmulatorTests: XCTestCase {
    func profile(model: String, imageSize: Int, batch: Int, layerMilliseconds: Double) throws -> BenchmarkResult {
        let network = try ModelZoo.build(model, imageSize: imageSize)
        let layers: [[String: Any]] = network.nodes.dropFirst().map {
            ["name": $0.name, "summary": "", "forward_ms": layerMilliseconds / 3, "backward_ms": layerMilliseconds * 2 / 3]
        }
        let machine = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(MachineDescription.current()))
        let json: [String: Any] = [
            "model": model, "image_size": imageSize, "batch_size": batch, "ranks": 1, "steps": 1, "overlap": true,
            "fp16_allreduce": false, "compression": "none", "wire_mb": 0, "convolution": "auto", "images_per_s": 0,
            "gflops": 0, "step_ms": layerMilliseconds * Double(layers.count), "comm_fraction": 0, "allreduce_ms": 0,
            "gradient_mb": 0, "layers": layers, "machine": machine, "blas_core": "", "kernels": ""]
        return try JSONDecoder().decode(BenchmarkResult.self, from: try JSONSerialization.data(withJSONObject: json))
    }

    func testEmulatedStepTakesAtLeastTheProfiledComputeAndReportsTheBytes() throws {
        let p = try profile(model: "simple", imageSize: 32, batch: 4, layerMilliseconds: 1)
        let results = try ThreadCommunicator.run(ranks: 2) { comm in
            var reported: [String] = []
            let r = try LabEmulator.run(profile: p, coresPerMachine: 4, steps: 3, warmupSteps: 1, bucketMiB: 1,
                                        compression: .powerSGD(rank: 2), communicator: comm) { reported.append("\($0)/\($1)") }
            return (r, reported)
        }
        XCTAssertEqual(results[0].1, ["1/4", "2/4", "3/4", "4/4"], "the emulator's progress counts each warm-up and timed step once")
        let r = results[0].0
        XCTAssertEqual(r.machines, 2)
        XCTAssertEqual(r.global_batch, 2 * 4 * 4)
        XCTAssertGreaterThanOrEqual(r.compute_ms, p.step_ms * 0.99 - 1e-9, "compute is the profile's step")
        XCTAssertGreaterThanOrEqual(r.step_ms, r.compute_ms * 0.99, "a step cannot be shorter than the compute it sleeps")
        let dense = Double(try ModelZoo.build("simple", imageSize: 32).parameterCount * 4) / 1e6
        XCTAssertLessThan(r.wire_mb, dense / 5, "PowerSGD rank 2 sends a fraction of the fp32 gradients")
        XCTAssertGreaterThan(r.wire_mb, 0)
        XCTAssertGreaterThan(r.compression_arithmetic_ms, 0, "PowerSGD's arithmetic is measured and slept")
        let delay = try XCTUnwrap(r.arithmetic_delay_ms)
        XCTAssertGreaterThan(delay, 0, "the buckets compressed while backward ran delay it")
        XCTAssertLessThanOrEqual(delay, r.compression_arithmetic_ms * 1.01, "by at most the arithmetic")
    }

    /// An emulated machine's cores: bucket b's arithmetic is charged to core b mod cores while
    /// backward runs, not after; backward ends with the most charged core. One core carries
    /// it all; four share it.
    func testArithmeticIsChargedToTheCoreThatComputesItWhileBackwardRuns() {
        for (cores, most) in [(1, 0.0105), (4, 0.004)] {
            let charges = LabEmulator.CoreCharges(cores: cores)
            for (bucket, seconds) in [(0, 0.001), (1, 0.002), (2, 0.0005), (3, 0.004), (4, 0.003)] { charges.charge(bucket: bucket, seconds: seconds) }
            charges.backwardRunning = false
            charges.charge(bucket: 3, seconds: 1)
            XCTAssertEqual(charges.most, most, accuracy: 1e-12, "\(cores) cores")
            charges.reset()
            XCTAssertEqual(charges.most, 0)
        }
    }

    func testAProfileOfAnotherModelIsRefused() throws {
        let p = try profile(model: "simple", imageSize: 32, batch: 4, layerMilliseconds: 1)
        var measuredOnTwo = p
        measuredOnTwo.ranks = 2
        XCTAssertThrowsError(try LabEmulator.run(profile: measuredOnTwo, coresPerMachine: 1, steps: 1, warmupSteps: 0, bucketMiB: 1,
                                                 compression: .none, communicator: LocalCommunicator())) {
            XCTAssertTrue("\($0)".contains("measured on 2 ranks"), "\($0)")
        }
        var other = p
        other.model = "vgg"
        XCTAssertThrowsError(try LabEmulator.run(profile: other, coresPerMachine: 1, steps: 1, warmupSteps: 0, bucketMiB: 1,
                                                 compression: .none, communicator: LocalCommunicator())) {
            XCTAssertTrue("\($0)".contains("not those of vgg"), "\($0)")
        }
    }

    /// The profile is a file: its times become sleeps and its sizes allocations, so every one
    /// is range-checked before anything is built or slept.
    func testAProfileWithImpossibleNumbersIsRefusedBeforeAnythingRuns() throws {
        let p = try profile(model: "simple", imageSize: 32, batch: 4, layerMilliseconds: 1)
        var cases: [(String, BenchmarkResult)] = []
        for (name, value) in [("NaN", Double.nan), ("infinite", .infinity), ("negative", -1), ("huge", 1e300)] {
            var step = p
            step.step_ms = value
            cases.append(("step_ms \(name)", step))
            var layer = p
            layer.layers[layer.layers.count / 2].backward_ms = value
            cases.append(("a layer's backward_ms \(name)", layer))
            var forward = p
            forward.layers[0].forward_ms = value
            cases.append(("a layer's forward_ms \(name)", forward))
        }
        for (name, batch) in [("zero", 0), ("negative", -4), ("huge", 1 << 40)] {
            var q = p
            q.batch_size = batch
            cases.append(("batch_size \(name)", q))
        }
        for (name, size) in [("tiny", 1), ("huge", 1 << 30), ("negative", -32)] {
            var q = p
            q.image_size = size
            cases.append(("image_size \(name)", q))
        }
        var unknown = p
        unknown.model = "no-such-model"
        cases.append(("an unknown model", unknown))
        for (name, hostile) in cases {
            let started = Date()
            XCTAssertThrowsError(try LabEmulator.run(profile: hostile, coresPerMachine: 2, steps: 1, warmupSteps: 0, bucketMiB: 1,
                                                     compression: .none, communicator: LocalCommunicator()), name) {
                XCTAssertTrue("\($0)".hasPrefix("the profile's"), "\(name): \($0)")
                XCTAssertFalse("\($0)".contains("\n"), "\(name): one line: \($0)")
            }
            XCTAssertLessThan(Date().timeIntervalSince(started), 5, "\(name) is refused at once, not slept through")
        }
    }
}
