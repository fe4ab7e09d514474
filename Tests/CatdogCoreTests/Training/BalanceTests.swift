import CatdogData
import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
@testable import CatdogTraining
import Foundation
import XCTest

/// Shares of the global batch by speed (`--balance`), and the ghost batch normalization that
/// keeps a step's mathematics the same whichever rank holds which samples.
final class BalanceTests: XCTestCase {
    // MARK: - The share computation

    /// A small random lab: up to `maxRanks` ranks, their units (up to `maxExtra` more than the
    /// ranks), a cap on a share that leaves every split possible, speeds from 0.05 to 4 groups
    /// a second, and for about half the ranks a fixed cost a step of up to 3 s.
    struct RandomLab {
        let ranks: Int, units: Int, cap: Int
        let speeds: [Double], fixed: [Double]

        init(_ random: inout Random, maxRanks: Int, maxExtra: Int) {
            ranks = 1 + random.below(maxRanks)
            units = ranks + random.below(maxExtra)
            cap = max((units + ranks - 1) / ranks, 1 + random.below(units - ranks + 1))
            let n = ranks
            speeds = (0..<n).map { _ in Double(random.uniform(0.05, 4)) }
            fixed = (0..<n).map { _ in random.below(2) == 0 ? 0 : Double(random.uniform(0, 3)) }
        }
    }

    /// Against every possible split of small cases (random speeds, and for some ranks a fixed
    /// cost a step): the chosen one makes the slowest rank as fast as any split can (within
    /// 1e-12), gives every rank at least one group and at most the cap, and uses every group.
    func testSharesAreTheFastestSplitInWholeGroups() {
        var random = Random(seed: 5)
        for _ in 0..<200 {
            let lab = RandomLab(&random, maxRanks: 3, maxExtra: 10)
            let (ranks, units, cap, speeds, fixed) = (lab.ranks, lab.units, lab.cap, lab.speeds, lab.fixed)
            let shares = BatchShares.split(units: units, speeds: speeds, fixed: fixed, maxUnits: cap)
            XCTAssertEqual(shares.reduce(0, +), units)
            XCTAssertTrue(shares.allSatisfy { (1...cap).contains($0) }, "\(shares) cap \(cap)")
            var best = Double.infinity
            func search(_ prefix: [Int]) {
                if prefix.count == ranks {
                    if prefix.reduce(0, +) == units { best = min(best, BatchShares.stepTime(prefix, speeds: speeds, fixed: fixed)) }
                    return
                }
                for k in 1...cap { search(prefix + [k]) }
            }
            search([])
            XCTAssertEqual(BatchShares.stepTime(shares, speeds: speeds, fixed: fixed), best, accuracy: 1e-12,
                           "\(speeds) fixed \(fixed), \(units) groups, cap \(cap): \(shares)")
        }
        // The case: one rank at half speed, 16 groups: 11 and 5 (a step of 5.5 groups
        // of the fast rank's time against 8 for an even split).
        XCTAssertEqual(BatchShares.split(units: 16, speeds: [2, 1], maxUnits: 15), [11, 5])
        // A rank whose update alone takes 3 groups' time of the other's takes fewer groups.
        XCTAssertEqual(BatchShares.split(units: 8, speeds: [1, 1], fixed: [0, 3], maxUnits: 7), [6, 2])
        // A very slow rank still gets its one group; none gets zero.
        XCTAssertEqual(BatchShares.split(units: 8, speeds: [1, 1e-9, 1], maxUnits: 8), [4, 1, 3])
    }

    /// The bound of shares of any size up to a cap: every rank between none and the cap
    /// finishes at the same time T (to 1e-9 s), a rank at the cap no later, a rank whose fixed
    /// time is past T computes nothing; the shares sum to the units (to 1e-9), and no split in
    /// whole groups under the same cap beats T. The log's note names what whole groups cost
    /// only when it is at least 3% of the step.
    func testFractionalSharesBoundWholeGroups() {
        var random = Random(seed: 6)
        for _ in 0..<200 {
            let lab = RandomLab(&random, maxRanks: 4, maxExtra: 20)
            let (ranks, units, cap, speeds, fixed) = (lab.ranks, lab.units, lab.cap, lab.speeds, lab.fixed)
            let ideal = BatchShares.fractionalSplit(units: units, speeds: speeds, fixed: fixed, maxUnits: Double(cap))
            XCTAssertEqual(ideal.shares.reduce(0, +), Double(units), accuracy: 1e-9)
            for r in 0..<ranks {
                let finish = fixed[r] + ideal.shares[r] / speeds[r]
                if ideal.shares[r] >= Double(cap) - 1e-9 {
                    XCTAssertLessThanOrEqual(finish, ideal.time + 1e-9, "\(speeds) \(fixed) cap \(cap)")
                } else if ideal.shares[r] > 1e-9 {
                    XCTAssertEqual(finish, ideal.time, accuracy: 1e-9, "\(speeds) \(fixed) cap \(cap)")
                } else {
                    XCTAssertGreaterThanOrEqual(fixed[r], ideal.time - 1e-9)
                }
            }
            let whole = BatchShares.split(units: units, speeds: speeds, fixed: fixed, maxUnits: cap)
            XCTAssertGreaterThanOrEqual(BatchShares.stepTime(whole, speeds: speeds, fixed: fixed), ideal.time - 1e-9)
        }
        // A cap binds: a rank 10× faster than the other may take at most 10 of 16 groups.
        let capped = BatchShares.fractionalSplit(units: 16, speeds: [10, 1], fixed: [0, 0], maxUnits: 10)
        XCTAssertEqual(capped.shares[0], 10, accuracy: 1e-9)
        XCTAssertEqual(capped.time, 6, accuracy: 1e-9)
        // The pair of docs/across-machines.md: 1 ms a step each, 1.73 and 3.18 ms a sample, 16
        // groups of 4: the speeds ask for 41.5/22.5 samples (~72.7 ms), whole groups give 44/20.
        let speeds = [1 / (4 * 0.00173), 1 / (4 * 0.00318)], fixed = [0.001, 0.001]
        let ideal = BatchShares.fractionalSplit(units: 16, speeds: speeds, fixed: fixed)
        XCTAssertEqual(ideal.time, 0.001 + 64 / (1 / 0.00173 + 1 / 0.00318), accuracy: 1e-9)
        let shares = BatchShares.split(units: 16, speeds: speeds, fixed: fixed, maxUnits: 15)
        XCTAssertEqual(shares, [11, 5])
        let note = Balancer.wholeGroupsNote(units: 16, group: 4, speeds: speeds, fixed: fixed, maxUnits: 15,
                                            step: BatchShares.stepTime(shares, speeds: speeds, fixed: fixed))
        XCTAssertEqual(note, "; the speeds ask for 41.5/22.5 samples (a step ~73 ms), whole groups of 4 cost 6% (--ghost-batch sets the group)")
        // Speeds 2:1 split 48 samples exactly (32/16): nothing to say.
        XCTAssertEqual(Balancer.wholeGroupsNote(units: 12, group: 4, speeds: [2, 1], fixed: [0, 0], maxUnits: 11,
                                                step: BatchShares.stepTime([8, 4], speeds: [2, 1], fixed: [0, 0])), "")
    }

    /// Windows at different shares separate a rank's per-step overhead from its time a group
    /// (to 1e-9 when exact; noise averages out over the windows); windows all at one share
    /// keep the overhead known from before and give the rest to the groups.
    func testThePassModelSeparatesOverheadFromTimeAGroup() {
        // 5 ms a step + 2 ms a group of 4 samples: 32 samples take 21 ms, 48 take 29 ms.
        let exact = Balancer.passModel([(32, 0.021), (48, 0.029)], group: 4)
        XCTAssertEqual(exact.overhead, 0.005, accuracy: 1e-9)
        XCTAssertEqual(exact.perGroup, 0.002, accuracy: 1e-9)
        var random = Random(seed: 4)
        let noisy = (0..<8).map { i -> (samples: Double, passes: Double) in
            let samples = Double(i < 4 ? 32 : 48)
            return (samples, (0.005 + samples / 4 * 0.002) * Double(random.uniform(0.95, 1.05)))
        }
        XCTAssertEqual(Balancer.passModel(noisy, group: 4).overhead, 0.005, accuracy: 0.004)
        let same = Balancer.passModel([(32, 0.021), (32, 0.023)], group: 4, knownOverhead: 0.005)
        XCTAssertEqual(same.overhead, 0.005)
        XCTAssertEqual(same.perGroup, 0.018 / 8, accuracy: 1e-12)
        XCTAssertEqual(Balancer.passModel([(32, 0.021)], group: 4).overhead, 0)
        // Noise that would make the time fall with the share is not believed.
        XCTAssertEqual(Balancer.passModel([(32, 0.021), (48, 0.020)], group: 4).overhead, 0)
        // Nor a slope the scatter leaves uncertain: ~7 ms a sample with 10% noise over shares
        // of 24 and 28 samples fits 121 ms + 2.3 ms a sample (standard error of the slope 1.0×
        // itself); the known overhead stays, and the groups get the rest of the latest window.
        let scattered: [(samples: Double, passes: Double)] = [(24, 0.180), (28, 0.176), (24, 0.165), (28, 0.200), (24, 0.185), (28, 0.182)]
        let unsure = Balancer.passModel(scattered, group: 4, knownOverhead: 0.004)
        XCTAssertEqual(unsure.overhead, 0.004)
        XCTAssertEqual(unsure.perGroup, (0.182 - 0.004) / 7, accuracy: 1e-12)
        // The same shares without the scatter are believed.
        let clean = scattered.map { (samples: $0.samples, passes: 0.004 + $0.samples * 0.007) }
        XCTAssertEqual(Balancer.passModel(clean, group: 4).overhead, 0.004, accuracy: 1e-9)
    }

    func testBalancerRefusesSplitsThatCannotWork() {
        XCTAssertThrowsError(try Balancer(split: .auto, globalBatch: 64, group: 16, ranks: 8)) {
            XCTAssertTrue("\($0)".contains("holds 4 groups of 16 samples (--ghost-batch) for 8 ranks"), "\($0)")
        }
        XCTAssertThrowsError(try Balancer(split: .weights([2, 1]), globalBatch: 64, group: 4, ranks: 3)) {
            XCTAssertTrue("\($0)".contains("2 weights for 3 ranks"), "\($0)")
        }
        let weighted = try? Balancer(split: .weights([3, 1]), globalBatch: 64, group: 4, ranks: 2)
        XCTAssertEqual(weighted?.shares, [48, 16])
        XCTAssertEqual(try? Balancer(split: .auto, globalBatch: 64, group: 4, ranks: 2).largestPossibleShare, 60)
        XCTAssertEqual(try? Balancer(split: .auto, globalBatch: 64, group: 1, ranks: 8).largestPossibleShare, 32,
                       "at most 4x the even share")
        // A global batch that does not divide among the ranks: `auto` starts as even as whole
        // groups go (a lab of 3 machines at the default 64); `even` cannot, and says what to do.
        XCTAssertEqual(try? Balancer(split: .auto, globalBatch: 64, group: 4, ranks: 3).shares, [24, 20, 20])
        XCTAssertEqual(try? Balancer(split: .weights([1, 1, 1]), globalBatch: 64, group: 4, ranks: 3).shares, [24, 20, 20])
        XCTAssertThrowsError(try Balancer(split: .even, globalBatch: 64, group: nil, ranks: 3)) {
            XCTAssertTrue("\($0)".contains("does not divide among 3 ranks; use a global batch size that is a multiple of 3, or --balance auto"), "\($0)")
        }
        XCTAssertEqual(BatchSplit(parsing: "2,1,0.5"), .weights([2, 1, 0.5]))
        for bad in ["", "fast", "2,,1", "1,-1", "0,1", "nan,1", "1e9,1", "inf"] {
            XCTAssertNil(BatchSplit(parsing: bad), bad)
        }
    }

    /// The samples of each step, their order and their global positions do not depend on the split.
    func testAPlanWithSharesCoversTheSameSamplesInTheSameOrder() throws {
        let even = try EpochPlan(sampleCount: 50, globalBatch: 16, ranks: 2, seed: 3, epoch: 1)
        let balanced = try even.withShares([12, 4])
        for step in 0..<even.steps {
            let a = (0..<2).flatMap { even.samples(step: step, rank: $0) }
            let b = (0..<2).flatMap { balanced.samples(step: step, rank: $0) }
            XCTAssertEqual(a, b, "step \(step)")
            XCTAssertEqual(balanced.firstPosition(step: step, rank: 1), balanced.firstPosition(step: step, rank: 0) + 12)
        }
        XCTAssertThrowsError(try even.withShares([12, 5]))
        XCTAssertThrowsError(try even.withShares([16]))
        // Shares from the start let a batch that does not divide by the rank count split: 64
        // over 3 ranks covers each step's 64 positions once, in order, as one rank would.
        let one = try EpochPlan(sampleCount: 150, globalBatch: 64, ranks: 1, seed: 3, epoch: 0)
        let three = try EpochPlan(sampleCount: 150, globalBatch: 64, ranks: 3, seed: 3, epoch: 0, shares: [24, 20, 20])
        for step in 0..<one.steps {
            XCTAssertEqual((0..<3).flatMap { three.samples(step: step, rank: $0) }, Array(one.samples(step: step, rank: 0)), "step \(step)")
        }
        XCTAssertEqual(try three.following().shares, [24, 20, 20])
        XCTAssertThrowsError(try EpochPlan(sampleCount: 150, globalBatch: 64, ranks: 3, seed: 3, epoch: 0))
        XCTAssertThrowsError(try EpochPlan(sampleCount: 150, globalBatch: 64, ranks: 3, seed: 3, epoch: 0, shares: [24, 20, 21]))
    }

    // MARK: - Ghost batch normalization

    func testGhostBatchNormGradients() throws {
        let h = try LayerHarness(BatchNorm(), inputs: [.init(height: 3, width: 2, channels: 4)], batch: 5)
        h.context.normalizationGroup = 2  // groups of 2, 2 and 1
        h.checkGradients()
    }

    /// Groups of 2 in a batch of 6 normalize exactly as three batches of 2 would (outputs and
    /// input gradients to 1e-6, γ and β gradients summed to 1e-5), and the moving statistics
    /// move once, by (1 − μ) × the weight × the sum of the groups' statistics.
    func testGhostBatchNormIsEachGroupNormalizedAlone() throws {
        let shape = FeatureShape(height: 2, width: 3, channels: 4)
        let ghost = try LayerHarness(BatchNorm(momentum: 0.9), inputs: [shape], batch: 6)
        ghost.context.normalizationGroup = 2
        ghost.context.groupWeight = 0.5
        let startState = ghost.state.array
        var random = Random(seed: 8)
        let upstream = (0..<ghost.output.count).map { _ in random.uniform(-1, 1) }
        ghost.forward()
        ghost.backward(upstream)
        var summedGradients = [Float](repeating: 0, count: ghost.gradients.count)
        var meanSum = [Double](repeating: 0, count: 4), varianceSum = [Double](repeating: 0, count: 4)
        let floats = shape.count * 2
        for g in 0..<3 {
            let alone = try LayerHarness(BatchNorm(momentum: 0.9), inputs: [shape], batch: 2)
            for i in 0..<alone.parameters.count { alone.parameters[i] = ghost.parameters[i] }
            for i in 0..<floats { alone.inputs[0][i] = ghost.inputs[0][g * floats + i] }
            alone.forward()
            alone.backward(Array(upstream[(g * floats)..<((g + 1) * floats)]))
            for i in 0..<floats {
                XCTAssertEqual(ghost.output[g * floats + i], alone.output[i], accuracy: 1e-6)
                XCTAssertEqual(ghost.dInputs[0][g * floats + i], alone.dInputs[0][i], accuracy: 1e-6)
            }
            for i in summedGradients.indices { summedGradients[i] += alone.gradients[i] }
            for ch in 0..<4 {
                let x = stride(from: ch, to: floats, by: 4).map { Double(alone.inputs[0][$0]) }
                let mean = x.reduce(0, +) / Double(x.count)
                meanSum[ch] += mean
                varianceSum[ch] += x.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(x.count)
            }
        }
        for i in summedGradients.indices { XCTAssertEqual(ghost.gradients[i], summedGradients[i], accuracy: 1e-5) }
        for ch in 0..<4 {
            XCTAssertEqual(Double(ghost.state[ch]), 0.9 * Double(startState[ch]) + 0.1 * 0.5 * meanSum[ch], accuracy: 1e-5)
            XCTAssertEqual(Double(ghost.state[4 + ch]), 0.9 * Double(startState[4 + ch]) + 0.1 * 0.5 * varianceSum[ch], accuracy: 1e-5)
        }
    }

    // MARK: - The same training whichever rank holds which groups

    /// `resnet` at 32 px with its ReLUs linear (`resnetWithoutKinks`), global batch 16 in ghost
    /// batches of 4, one update of SGD on the same data: one rank, two ranks even (8/8), and two
    /// ranks at 12/4 and 4/12 (the 12 going through micro-batches of 8 and 4). What the update
    /// changed in the weights, and the BatchNorm moving statistics averaged over the ranks, agree
    /// to 1e-4 of their size (float summation order: 1.3e-7 to 6.7e-6 measured on one Zen 4 with
    /// our AVX-512 kernels, with CATDOG_KERNELS=avx2 OPENBLAS_CORETYPE=Haswell and with
    /// CATDOG_KERNELS=baseline). Without ghost batches the even and the 12/4 split differ by 0.31
    /// of the change (so the test can fail). Later updates are not compared: on random data these
    /// small nets amplify any rounding difference several hundredfold an update, whatever the
    /// split (passes of 8 against 16 on one rank differ by 1% after three).
    func testAStepComputesTheSameWhicheverRankHoldsWhichGroups() throws {
        let start = try trainSteps(ranks: 1, shares: [16], group: 4, updates: 0)
        let reference = try trainSteps(ranks: 1, shares: [16], group: 4)
        XCTAssertNotEqual(reference.parameters, start.parameters, "the update changed the weights")
        for shares in [[8, 8], [12, 4], [4, 12]] {
            let other = try trainSteps(ranks: 2, shares: shares, group: 4)
            XCTAssertLessThan(Self.relativeDifference(reference.parameters, other.parameters, from: start.parameters), 1e-4,
                              "weights, split \(shares)")
            XCTAssertLessThan(Self.relativeDifference(reference.state, other.state, from: start.state), 1e-4,
                              "BatchNorm statistics, split \(shares)")
        }
        let evenPlain = try trainSteps(ranks: 2, shares: [8, 8], group: nil)
        let unevenPlain = try trainSteps(ranks: 2, shares: [12, 4], group: nil)
        XCTAssertGreaterThan(Self.relativeDifference(evenPlain.parameters, unevenPlain.parameters, from: start.parameters), 1e-2,
                             "without ghost batches, BatchNorm over each rank's slice changes with the split")
    }

    /// |(a − start) − (b − start)| / |a − start|, in double.
    static func relativeDifference(_ a: [Float], _ b: [Float], from start: [Float]) -> Double {
        var difference = 0.0, change = 0.0
        for i in a.indices {
            difference += Double(a[i] - b[i]) * Double(a[i] - b[i])
            change += Double(a[i] - start[i]) * Double(a[i] - start[i])
        }
        return (difference / max(change, 1e-30)).squareRoot()
    }

    /// `resnet` at 32 px with every ReLU made linear: the same layers, BatchNorm, residual adds
    /// and products, but a gradient that is continuous in the activations. With ReLU, a
    /// pre-activation within a last bit of 0 takes the other side of the kink under another
    /// summation order, and its unit's whole gradient appears or vanishes: on random data one
    /// such unit (add_2's, channel 6, 99.8% of the difference in batchnorm_6.beta) moved the
    /// update of the layers below it by 5e-3, with OpenBLAS's Haswell kernels taking
    /// Winograd's products (CATDOG_KERNELS=avx2 OPENBLAS_CORETYPE=Haswell, as on an AVX2-only
    /// machine), while AVX-512 and OpenBLAS's Cooperlake kernels happened to keep it on one side.
    static func resnetWithoutKinks() throws -> Network {
        var b = NetworkBuilder(input: .init(height: 32, width: 32, channels: 3))
        ModelZoo.resnet(&b, activation: .linear)
        return try b.build()
    }

    /// Trains `resnetWithoutKinks` (`resnet` 32 px, linear activations) on fixed random images for `updates` updates with the given split;
    /// returns rank 0's weights and the ranks' averaged moving statistics.
    func trainSteps(ranks: Int, shares: [Int], group: Int?, updates: Int = 1) throws -> (parameters: [Float], state: [Float]) {
        let results = try ThreadCommunicator.run(ranks: ranks) { comm -> ([Float], [Float]) in
            let network = try Self.resnetWithoutKinks()
            network.reserve(maxBatch: 8)
            network.initialize(seed: 2)
            let step = DataParallelStep(network: network, optimizer: SGD(count: network.parameterCount, momentum: 0.9), communicator: comm,
                                        overlap: true, bucketBytes: 1 << 20, batchCapacity: 16)
            let floats = network.inputShape.count
            let offset = shares[..<comm.rank].reduce(0, +), mine = shares[comm.rank]
            let input = FloatBuffer(count: 16 * floats)
            for update in 0..<updates {
                var random = Random(seed: 40 + UInt64(update))
                let images = (0..<(16 * floats)).map { _ in random.uniform(-1, 1) }
                for i in 0..<(mine * floats) { input[i] = images[offset * floats + i] }
                for i in 0..<mine { step.labels[i] = Float((offset + i) % 3 == 0 ? 1 : 0) }
                var context = PassContext(training: true, seed: 1, step: update, firstSample: update * 16 + offset)
                if let group {
                    context.normalizationGroup = group
                    context.groupWeight = Double(comm.size) / Double(16 / group)
                }
                _ = try step.run(batch: mine, input: UnsafePointer(input.pointer), normalizer: 16, context: context,
                                 learningRate: 0.01, weightDecay: 0, update: update)
            }
            try comm.allReduceSum(network.state.pointer, count: network.state.count)
            for i in 0..<network.state.count { network.state[i] /= Float(comm.size) }
            return (network.parameters.array, network.state.array)
        }
        return (results[0].0, results[0].1)
    }
}

/// `train --balance` end to end, through mpirun.
final class BalanceCommandTests: XCTestCase {
    func arguments(_ data: String, _ checkpoints: String, extra: [String]) -> [String] {
        ["train", "--data", data, "--checkpoint-dir", checkpoints, "--model", "resnet", "--image-size", "32",
         "--epochs", "2", "--batch-size", "24", "--patience", "0", "--checkpoint-every", "3", "--keep", "20"] + extra
    }

    /// A split by weights is fixed, so a run resumes bit for bit: 2 ranks at 16/8 samples in
    /// groups of 4, straight and resumed from update 3, end with identical weights, optimizer
    /// moments and BatchNorm statistics. The same run split evenly (same groups) ends with
    /// validation losses within 0.02 of it and accuracies within one of the 12 validation images
    /// (float summation order, amplified over 10 updates of Adam, moves predictions that are
    /// near 1/2 this early: the in-process test pins one update to 1e-4).
    func testAWeightedSplitResumesBitExactlyAndMatchesTheEvenSplit() throws {
        let data = try sharedSubset(self, perClass: 60)
        let split = ["--balance", "2,1", "--ghost-batch", "4"]
        let straight = try temporaryFolder(self)
        var result = try CLI.run(arguments(data, straight, extra: split), ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("batch split 2,1: shares 16/8 of 24 to start with; BatchNorm over groups of 4 samples"), result.stdout)
        let resumed = try temporaryFolder(self)
        result = try CLI.run(arguments(data, resumed, extra: split + ["--resume", straight + "/ckpt-e0000-s00000003.safetensors.zst"]), ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        let a = try LoadedCheckpoint(path: straight + "/last.safetensors.zst")
        let b = try LoadedCheckpoint(path: resumed + "/last.safetensors.zst")
        try assertSameTensorsAndHistory(a, b)

        let even = try temporaryFolder(self)
        result = try CLI.run(arguments(data, even, extra: ["--balance", "even", "--ghost-batch", "4"]), ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        let c = try LoadedCheckpoint(path: even + "/last.safetensors.zst")
        for (x, y) in zip(a.metadata.history, c.metadata.history) {
            XCTAssertEqual(x.val_loss, y.val_loss, accuracy: 0.02, "epoch \(x.epoch)")
            XCTAssertEqual(x.val_acc, y.val_acc, accuracy: 1.0 / 12 + 1e-9, "epoch \(x.epoch)")
        }
    }

    /// `auto` says how it starts; splits that cannot work are one-line errors that say what to do.
    func testAutoSaysHowItStartsAndImpossibleSplitsAreRefused() throws {
        let data = try sharedSubset(self, perClass: 30)
        var result = try CLI.run(arguments(data, try temporaryFolder(self), extra: ["--balance", "auto", "--epochs", "1"]), ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("batch split auto: shares 12/12 of 24 to start with; BatchNorm over groups of 4 samples"), result.stdout)
        // 3 ranks and a global batch of 20: `auto` trains it (groups of 4: 8/8/4), `even` says what to do.
        result = try CLI.run(arguments(data, try temporaryFolder(self), extra: ["--balance", "auto", "--epochs", "1", "--batch-size", "20"]), ranks: 3)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("batch split auto: shares 8/8/4 of 20 to start with"), result.stdout)
        XCTAssertTrue(result.stdout.contains("global batch 20 = shares of 3 ranks"), result.stdout)
        result = try CLI.run(arguments(data, try temporaryFolder(self), extra: ["--epochs", "1", "--batch-size", "20"]), ranks: 3)
        XCTAssertNotEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("multiple of 3"), result.output)
        let refused: [([String], String)] = [
            (["--balance", "1,2,3"], "--balance gives 3 weights for 2 ranks"),
            (["--balance", "fast"], "--balance fast is not `even`, `auto` or weights"),
            (["--balance", "1,0"], "is not `even`, `auto` or weights"),
            (["--ghost-batch", "5"], "ghost batch 5 does not divide the global batch 24"),
            (["--ghost-batch", "0"], "ghost batch 0 is outside 1...24"),  // divided by zero in the check after it
            (["--balance", "auto", "--ghost-batch", "24"], "holds 1 groups of 24 samples (--ghost-batch) for 2 ranks"),
        ]
        for (extra, message) in refused {
            result = try CLI.run(arguments(data, try temporaryFolder(self), extra: extra), ranks: 2)
            XCTAssertNotEqual(result.status, 0, "\(extra): \(result.output)")
            XCTAssertTrue(result.output.contains(message), "\(extra): \(result.output)")
            XCTAssertFalse(["Fatal error", "Stack dump", "runtime failure"].contains { result.output.contains($0) }, "\(extra): \(result.output)")
        }
    }
}
