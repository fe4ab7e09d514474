import CatdogRun
import Foundation
import XCTest

/// What a step costs at each size, and the time budget's estimate of the steps a run holds
/// when its sizes grow: each epoch priced at the size it will train at, not all at the largest.
final class StepCostsTests: XCTestCase {
    /// 64 px growing by 16 to 128, the recipe's larger sizes.
    var growing: TrainingConfig {
        var c = TrainingConfig()
        c.resizeFrom = 64
        c.trainSize = 128
        c.imageSize = 160
        return c
    }

    /// Seconds a step on the machine the simulations below stand for: 64 px at 0.30 of 128's
    /// time, 80 at 0.55, 96 at 0.70, 112 at 0.85 (not their pixels' 0.25, 0.39, 0.56, 0.77).
    let truth: [Int: Double] = [64: 0.060, 80: 0.110, 96: 0.140, 112: 0.170, 128: 0.200]

    func testRelativeCostsMeasuredInterpolatedOrByPixels() {
        XCTAssertEqual(growing.scheduleSizes, [64, 80, 96, 112, 128])
        var one = TrainingConfig()
        one.imageSize = 80
        one.trainSize = 64
        XCTAssertEqual(one.scheduleSizes, [64])

        let measured = StepCosts(top: 128, seconds: truth)
        for (size, seconds) in truth { XCTAssertEqual(measured.relative(size), seconds / 0.2, accuracy: 1e-12, "\(size) px") }
        // Between two measured sizes, by pixels: 72 px is (72² − 64²)/(80² − 64²) = 0.37 of the way.
        XCTAssertEqual(measured.relative(72), (0.060 + (72.0 * 72 - 4096) / (6400 - 4096) * 0.050) / 0.2, accuracy: 1e-12)
        // Unmeasured, or without the largest size: a tenth fixed, the rest by pixels.
        let none = StepCosts(top: 128)
        XCTAssertEqual(none.relative(64), 0.1 + 0.9 * 0.25, accuracy: 1e-12)
        XCTAssertEqual(none.relative(128), 1, accuracy: 1e-12)
        XCTAssertEqual(StepCosts(top: 128, seconds: [64: 0.06]).relative(64), 0.325, accuracy: 1e-12)
        XCTAssertEqual(measured.relative(48), 0.1 + 0.9 * 48.0 * 48 / 16384, accuracy: 1e-12, "below every measured size")
        // What cannot be a time is dropped.
        let bad = StepCosts(top: 128, seconds: [64: .nan, 80: -1, 96: .infinity, 0: 1, 128: 0.2])
        XCTAssertEqual(bad.seconds, [128: 0.2])
    }

    /// At most eight sizes are measured, the first and the last among them.
    func testSizesToMeasure() {
        XCTAssertEqual(StepCosts.sizesToMeasure(growing), [64, 80, 96, 112, 128])
        var wide = growing
        wide.resizeFrom = 32
        wide.trainSize = 288
        wide.imageSize = 288
        let sizes = StepCosts.sizesToMeasure(wide)
        XCTAssertEqual(wide.scheduleSizes.count, 17)
        XCTAssertEqual(sizes.count, StepCosts.mostMeasured)
        XCTAssertEqual(sizes.first, 32)
        XCTAssertEqual(sizes.last, 288)
        XCTAssertEqual(sizes, sizes.sorted())
        XCTAssertEqual(Set(sizes).count, sizes.count)
        XCTAssertTrue(Set(sizes).isSubset(of: Set(wide.scheduleSizes)))
    }

    /// The seconds of the steps still to come equal a step-by-step sum of the sizes the loop
    /// would train at for that total (each epoch at the size of its first step's fraction, never
    /// below the current), plus one evaluation an epoch begun, the current one's included.
    func testSecondsToATotalAreTheStepBySumOfTheSchedule() {
        let costs = StepCosts(top: 128, seconds: truth)
        let perEpoch = 282, evaluation = 7.5
        for (step, left, current) in [(0, 281, 64), (1_000, 127, 80), (5_000, 0, 112), (8_400, 200, 128)] {
            let remaining = RemainingSteps(step: step, leftInEpoch: left, stepsPerEpoch: perEpoch, currentSize: current,
                                           topStepSeconds: 0.2, evaluationSeconds: evaluation)
            for total in [step, step + 1, step + left, step + left + 1, step + 3_000, step + 9_999] {
                var expected = 0.0, evaluations = 1, epochSize = current
                for s in step..<max(total, step) {
                    let intoLater = s - (step + left)
                    if intoLater >= 0, intoLater % perEpoch == 0 {
                        epochSize = max(current, growing.trainingSize(atFraction: Double(s) / Double(total)))
                        evaluations += 1
                    }
                    expected += truth[epochSize]!
                }
                expected += evaluation * Double(evaluations)
                let got = remaining.seconds(toTotal: total, config: growing, costs: costs)
                XCTAssertEqual(got, expected, accuracy: 1e-9 * max(expected, 1), "step \(step), total \(total)")
            }
        }
    }

    /// A run that fills its budget validates after epoch 1, every 4th epoch and every epoch from
    /// 75% of its schedule, and always its last (`TrainingConfig.validates`); `--validate-every
    /// N` every Nth and the last; a run of fixed epochs every epoch. The estimate of the seconds
    /// to come prices only the evaluations the schedule will make: the step-by-step sum above
    /// with each epoch's evaluation counted where the rule says.
    func testTheValidationScheduleAndTheEvaluationsTheEstimatePrices() {
        var budget = growing
        budget.fillsBudget = true
        let validated = (1...40).filter { budget.validates(epoch: $0, fraction: Double($0) / 40, last: $0 == 40) }
        XCTAssertEqual(validated, [1, 4, 8, 12, 16, 20, 24, 28] + Array(30...40))
        var every3 = budget
        every3.validateEvery = 3
        XCTAssertEqual((1...10).filter { every3.validates(epoch: $0, fraction: 0.1 * Double($0), last: $0 == 10) }, [3, 6, 9, 10])
        XCTAssertEqual((1...10).filter { growing.validates(epoch: $0, fraction: 0.1 * Double($0), last: false) }, Array(1...10))
        XCTAssertNil(growing.validationScheduleDescription)
        XCTAssertNotNil(budget.validationScheduleDescription)

        let costs = StepCosts(top: 128, seconds: truth)
        let perEpoch = 100, evaluation = 7.5
        for config in [budget, every3, growing] {
            for (step, left) in [(0, 99), (1_250, 50), (2_900, 100)] {
                let remaining = RemainingSteps(step: step, leftInEpoch: left, stepsPerEpoch: perEpoch, currentSize: 64,
                                               topStepSeconds: 0.2, evaluationSeconds: evaluation)
                for total in [step + left, step + left + 1, 4_000] where total >= step + left {
                    var expected = 0.0, epochSize = 64
                    for s in step..<total {
                        let intoLater = s - (step + left)
                        if intoLater >= 0, intoLater % perEpoch == 0 {
                            epochSize = max(64, config.trainingSize(atFraction: Double(s) / Double(total)))
                        }
                        expected += truth[epochSize]!
                    }
                    // Epoch ends: the current epoch's, then every perEpoch steps, the last at total.
                    var ends = [step + left], end = step + left
                    while end < total { end = min(end + perEpoch, total); ends.append(end) }
                    let evaluations = ends.filter {
                        config.validates(epoch: ($0 + perEpoch - 1) / perEpoch, fraction: Double($0) / Double(total), last: $0 >= total)
                    }.count
                    expected += evaluation * Double(evaluations)
                    let got = remaining.seconds(toTotal: total, config: config, costs: costs)
                    XCTAssertEqual(got, expected, accuracy: 1e-9 * max(expected, 1), "step \(step), total \(total)")
                }
            }
        }
        // Sparse validation leaves more of a budget to train: the same seconds hold more steps.
        let remaining = RemainingSteps(step: 0, leftInEpoch: perEpoch, stepsPerEpoch: perEpoch, currentSize: 64,
                                       topStepSeconds: 0.2, evaluationSeconds: evaluation)
        XCTAssertGreaterThan(remaining.affordableTotal(seconds: 1_800, planned: 100_000, config: budget, costs: costs),
                             remaining.affordableTotal(seconds: 1_800, planned: 100_000, config: growing, costs: costs))
    }

    /// A run of 1,800 s on a machine whose steps cost `truth`: the estimate made after its first
    /// step, from the measured costs, is within one epoch of the steps the run then trains when
    /// it re-estimates after every step (as the loop does) and stops when the next step and the
    /// evaluations it brings no longer fit (`trainsAnotherStep`).
    func testTheFirstEstimateHoldsForTheWholeRun() {
        let budget = 1_800.0, perEpoch = 282, evaluation = 6.0
        let measured = StepCosts(top: 128, seconds: truth)
        func run(_ costs: StepCosts) -> (first: Int, trained: Int, sizes: [Int]) {
            var elapsed = 0.0, step = 0, total = 0, first = 0, size = 64, sizes: [Int] = []
            var timed = 0.0, stepSeconds = 0.0  // steps so far in steps at 128 px by `costs`, and their seconds
            while true {
                let inEpoch = step % perEpoch
                if inEpoch == 0 {
                    let fraction = total > 0 ? Double(step) / Double(total) : 0
                    size = max(size, growing.trainingSize(atFraction: fraction))
                    sizes.append(size)
                }
                elapsed += truth[size]!
                stepSeconds += truth[size]!
                step += 1
                timed += costs.relative(size)
                let top = stepSeconds / timed  // what the loop learns a step at 128 costs
                let remaining = RemainingSteps(step: step, leftInEpoch: perEpoch - inEpoch - 1, stepsPerEpoch: perEpoch,
                                               currentSize: size, topStepSeconds: top, evaluationSeconds: evaluation)
                total = remaining.affordableTotal(seconds: budget - elapsed, planned: 1_000 * perEpoch, config: growing, costs: costs)
                if first == 0 { first = total }
                if !remaining.trainsAnotherStep(seconds: budget - elapsed, config: growing, costs: costs) { break }
                if inEpoch == perEpoch - 1 { elapsed += evaluation }
            }
            return (first, step, sizes)
        }
        let (first, trained, sizes) = run(measured)
        XCTAssertEqual(Double(first), Double(trained), accuracy: Double(perEpoch), "first estimate \(first), trained \(trained)")
        XCTAssertEqual(sizes, sizes.sorted(), "the sizes only grow")
        XCTAssertEqual(sizes.last, 128)
        // The largest size for about the last quarter of the epochs.
        let atTop = Double(sizes.filter { $0 == 128 }.count) / Double(sizes.count)
        XCTAssertEqual(atTop, 0.25, accuracy: 0.06, "\(sizes)")
        // Without measured costs (pixels and a fixed tenth) the first estimate is further off
        // (12,690 steps against 11,280 trained), but within a fifth.
        let (guess, trainedByPixels, _) = run(StepCosts(top: 128))
        XCTAssertEqual(Double(guess), Double(trainedByPixels), accuracy: 0.2 * Double(trainedByPixels))
        XCTAssertGreaterThan(abs(Double(guess - trainedByPixels)), abs(Double(first - trained)))
    }

    /// A budget ends within itself, its last evaluation and checkpoints included, and never with an epoch
    /// begun for fewer steps than its evaluation costs. Simulated over budgets half a second
    /// apart (every alignment of the budget's end with an epoch's), each step re-deciding as
    /// the loop does: a run whose budget ended just after an epoch's evaluation began another
    /// epoch for one step and evaluated again, 6 s over a 600 s budget.
    func testABudgetEndsWithinItselfAndBeginsNoEpochItCannotFill() {
        var config = TrainingConfig()
        config.imageSize = 64
        config.trainSize = 64
        let stepSeconds = 0.2, evaluation = 7.5, perEpoch = 100
        let costs = StepCosts(top: 64, seconds: [64: stepSeconds])
        let worth = Int((evaluation / stepSeconds).rounded(.up))  // 38 steps train as long as an evaluation takes
        // Checkpoints unpriced, then priced: one at each epoch's end and the run's, and with
        // --checkpoint-every one each 30 steps inside an epoch (as the loop writes them).
        for (checkpoint, every) in [(0.0, 0), (1.3, 0), (1.3, 30)] {
            var partialEnds = 0
            // (Budgets off the 0.1 s grid the prices add up on: no ties decided by rounding.)
            for budget in stride(from: 600.01, to: 660, by: 0.5) {
                var elapsed = 0.0, step = 0, lastEpochSteps = 0
                while true {
                    elapsed += stepSeconds
                    step += 1
                    lastEpochSteps = (step - 1) % perEpoch + 1
                    let remaining = RemainingSteps(step: step, leftInEpoch: perEpoch - lastEpochSteps, stepsPerEpoch: perEpoch,
                                                   currentSize: 64, topStepSeconds: stepSeconds, evaluationSeconds: evaluation,
                                                   checkpointSeconds: checkpoint, checkpointEvery: every)
                    if !remaining.trainsAnotherStep(seconds: budget - elapsed, config: config, costs: costs) { break }
                    if lastEpochSteps == perEpoch { elapsed += evaluation + checkpoint }
                    if every > 0, step % every == 0, lastEpochSteps < perEpoch { elapsed += checkpoint }
                }
                elapsed += evaluation + 2 * checkpoint  // the run's last evaluation, its epoch's checkpoint and the run's
                let label = "budget \(budget), checkpoints of \(checkpoint) s every \(every) steps"
                XCTAssertLessThanOrEqual(elapsed, budget + 1e-9, label)
                // What it leaves unused is less than an epoch begun could have filled.
                XCTAssertGreaterThan(elapsed, budget - (Double(worth) * stepSeconds + 2 * evaluation + 4 * checkpoint), label)
                if lastEpochSteps < perEpoch {
                    partialEnds += 1
                    XCTAssertGreaterThanOrEqual(lastEpochSteps, worth, "\(label): an epoch of \(lastEpochSteps) steps")
                }
            }
            XCTAssertGreaterThan(partialEnds, 0, "no budget ended inside an epoch: the sweep tests nothing of that")
        }
        // The rule itself: after an epoch's last step the next needs both evaluations and the
        // epoch's worth of steps; inside an epoch, one step and the last evaluation.
        let ending = RemainingSteps(step: 200, leftInEpoch: 0, stepsPerEpoch: perEpoch, currentSize: 64,
                                    topStepSeconds: stepSeconds, evaluationSeconds: evaluation)
        let epochEnd = 2 * evaluation + Double(worth) * stepSeconds
        XCTAssertTrue(ending.trainsAnotherStep(seconds: epochEnd + 1e-6, config: config, costs: costs))
        XCTAssertFalse(ending.trainsAnotherStep(seconds: epochEnd - 1e-6, config: config, costs: costs))
        var inside = ending
        inside.leftInEpoch = 10
        XCTAssertTrue(inside.trainsAnotherStep(seconds: evaluation + stepSeconds + 1e-6, config: config, costs: costs))
        XCTAssertFalse(inside.trainsAnotherStep(seconds: evaluation + stepSeconds - 1e-6, config: config, costs: costs))
        // With checkpoints priced, inside an epoch: the epoch's and the run's.
        inside.checkpointSeconds = 2
        XCTAssertTrue(inside.trainsAnotherStep(seconds: evaluation + stepSeconds + 4 + 1e-6, config: config, costs: costs))
        XCTAssertFalse(inside.trainsAnotherStep(seconds: evaluation + stepSeconds + 4 - 1e-6, config: config, costs: costs))
        // Without a speed it trains on only while one step's price (nothing) and the evaluations fit.
        var unknown = ending
        unknown.topStepSeconds = 0
        XCTAssertTrue(unknown.trainsAnotherStep(seconds: 2 * evaluation, config: config, costs: costs))
    }

    /// No budget left, or no speed, affords nothing; a budget larger than the planned epochs
    /// affords them all.
    func testAffordableTotalAtTheEdges() {
        let costs = StepCosts(top: 128, seconds: truth)
        let remaining = RemainingSteps(step: 500, leftInEpoch: 50, stepsPerEpoch: 100, currentSize: 80,
                                       topStepSeconds: 0.2, evaluationSeconds: 5)
        XCTAssertEqual(remaining.affordableTotal(seconds: 0, planned: 1_000, config: growing, costs: costs), 500)
        XCTAssertEqual(remaining.affordableTotal(seconds: -5, planned: 1_000, config: growing, costs: costs), 500)
        XCTAssertEqual(remaining.affordableTotal(seconds: 1e9, planned: 1_000, config: growing, costs: costs), 1_500)
        var slow = remaining
        slow.topStepSeconds = .nan
        XCTAssertEqual(slow.affordableTotal(seconds: 1e9, planned: 1_000, config: growing, costs: costs), 500)
        // Whatever it returns fits; a step more does not (the cost of a total grows with it here).
        for budget in [10.0, 60, 200, 333] {
            let total = remaining.affordableTotal(seconds: budget, planned: 1_000, config: growing, costs: costs)
            XCTAssertLessThanOrEqual(remaining.seconds(toTotal: total, config: growing, costs: costs), budget)
            if total < 1_500 { XCTAssertGreaterThan(remaining.seconds(toTotal: total + 1, config: growing, costs: costs), budget) }
        }
    }

    /// Where a longer run moves an epoch to a smaller size, the cost of a total dips; the
    /// answer is the largest total that fits, found by trying every total from the start of a
    /// run, for budgets every 5 seconds across the range (a whole run at this speed is ~4,000 s).
    func testAffordableTotalIsTheLargestThatFitsWhereTheCostDips() {
        let costs = StepCosts(top: 128, seconds: truth)
        let remaining = RemainingSteps(step: 0, leftInEpoch: 100, stepsPerEpoch: 100, currentSize: 64,
                                       topStepSeconds: 0.2, evaluationSeconds: 5)
        let planned = 5_000
        let cost = (0...planned).map { remaining.seconds(toTotal: $0, config: growing, costs: costs) }
        let dips = (1...planned).filter { cost[$0] < cost[$0 - 1] }.count
        XCTAssertGreaterThan(dips, 0, "the schedule has no dip to test")
        var missedByBisection = 0
        for budget in stride(from: 5.0, through: cost[planned] + 10, by: 5) {
            let largest = cost.lastIndex(where: { $0 <= budget }) ?? 0
            let got = remaining.affordableTotal(seconds: budget, planned: planned, config: growing, costs: costs)
            XCTAssertEqual(got, largest, "budget \(budget) s")
            // A bare bisection: a total that fits with the next not; how often the dips beat it.
            var low = 0, high = planned
            if cost[high] <= budget { low = high }
            while high - low > 1 { let mid = (low + high) / 2; if cost[mid] <= budget { low = mid } else { high = mid } }
            if low < largest { missedByBisection += 1 }
        }
        XCTAssertGreaterThan(missedByBisection, 0, "no budget where a bisection alone stops short: the test shows nothing")
    }
}
