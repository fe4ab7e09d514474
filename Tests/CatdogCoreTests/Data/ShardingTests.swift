import CatdogData
import CatdogSupport
import XCTest

final class ShardingTests: XCTestCase {
    func testShardsAreDisjointCoverTheEpochAndHaveEqualStepCounts() throws {
        for ranks in [1, 2, 3, 4] {
            for count in [100, 101, 96, 5] {
                let plan = try EpochPlan(sampleCount: count, globalBatch: 12, ranks: ranks, seed: 3, epoch: 2)
                var seen: [Int] = []
                for step in 0..<plan.steps {
                    var stepSamples: [Int] = []
                    for rank in 0..<ranks { stepSamples += plan.samples(step: step, rank: rank) }
                    XCTAssertEqual(stepSamples.count, plan.globalCount(step: step))
                    seen += stepSamples
                }
                XCTAssertEqual(plan.steps, (count + 11) / 12, "every rank runs the same number of steps")
                XCTAssertEqual(seen.sorted(), Array(0..<count), "ranks \(ranks), count \(count): each sample once")
            }
        }
    }

    func testGlobalBatchOfAStepDoesNotDependOnRankCount() throws {
        let one = try EpochPlan(sampleCount: 250, globalBatch: 24, ranks: 1, seed: 9, epoch: 1)
        for ranks in [2, 3, 4, 6] {
            let many = try EpochPlan(sampleCount: 250, globalBatch: 24, ranks: ranks, seed: 9, epoch: 1)
            for step in 0..<one.steps {
                let union = (0..<ranks).flatMap { many.samples(step: step, rank: $0) }
                XCTAssertEqual(union, Array(one.samples(step: step, rank: 0)))
            }
        }
    }

    func testEpochsShuffleDifferentlyAndReproducibly() throws {
        let a = try EpochPlan(sampleCount: 100, globalBatch: 10, ranks: 2, seed: 1, epoch: 0)
        let b = try EpochPlan(sampleCount: 100, globalBatch: 10, ranks: 2, seed: 1, epoch: 1)
        let again = try EpochPlan(sampleCount: 100, globalBatch: 10, ranks: 2, seed: 1, epoch: 1)
        XCTAssertNotEqual(a.order, b.order)
        XCTAssertEqual(b.order, again.order)
    }

    func testBatchThatDoesNotDivideAmongRanksIsAClearError() {
        XCTAssertThrowsError(try EpochPlan(sampleCount: 100, globalBatch: 64, ranks: 3, seed: 1, epoch: 0)) { error in
            XCTAssertTrue("\(error)".contains("does not divide among 3 ranks"), "\(error)")
            XCTAssertTrue("\(error)".contains("multiple of 3"), "\(error)")
        }
    }

    func testASampleIsAugmentedTheSameWhicheverRankHoldsIt() throws {
        let store = ImageStore(count: 3, storedSize: 20, labels: [0, 1, 0])
        var random = Random(seed: 2)
        for i in 0..<(3 * store.bytesPerImage) { store.pixels[i] = UInt8(random.below(256)) }
        let p = Preprocessing(imageSize: 16, cropMargin: 4)
        let a = FloatBuffer(count: 16 * 16 * 3), b = FloatBuffer(count: 16 * 16 * 3)
        var streamA = Augmentation.stream(seed: 5, epoch: 3, sample: 2)
        var streamB = Augmentation.stream(seed: 5, epoch: 3, sample: 2)
        store.writeSample(2, to: a.pointer, preprocessing: p, augmentation: .all, random: &streamA)
        store.writeSample(2, to: b.pointer, preprocessing: p, augmentation: .all, random: &streamB)
        XCTAssertEqual(a.array, b.array)
        var other = Augmentation.stream(seed: 5, epoch: 4, sample: 2)
        store.writeSample(2, to: b.pointer, preprocessing: p, augmentation: .all, random: &other)
        XCTAssertNotEqual(a.array, b.array, "another epoch augments differently")
    }

    func testFlipMirrorsAndColorShiftStaysWithinTwentyLevels() {
        let store = ImageStore(count: 1, storedSize: 8, labels: [0])
        for i in 0..<store.bytesPerImage { store.pixels[i] = UInt8(100 + (i / 3) % 8 * 5) }  // varies along x
        let p = Preprocessing(imageSize: 8, scale: .unit, cropMargin: 0)
        let plain = FloatBuffer(count: 8 * 8 * 3), flipped = FloatBuffer(count: 8 * 8 * 3)
        var r = Random(seed: 0)
        store.writeSample(0, to: plain.pointer, preprocessing: p, augmentation: .none, random: &r)
        var sawFlip = false
        for seed in 0..<10 {
            var stream = Random(seed: UInt64(seed))
            store.writeSample(0, to: flipped.pointer, preprocessing: p, augmentation: Augmentation(flip: true), random: &stream)
            if flipped[0] == plain[7 * 3] && flipped[7 * 3] == plain[0] && flipped[0] != plain[0] { sawFlip = true }
        }
        XCTAssertTrue(sawFlip)
        for seed in 0..<10 {
            var stream = Random(seed: UInt64(seed))
            store.writeSample(0, to: flipped.pointer, preprocessing: p, augmentation: Augmentation(color: true), random: &stream)
            for i in 0..<plain.count { XCTAssertLessThanOrEqual(abs(flipped[i] - plain[i]) * 255, 20.01) }
        }
    }
}
