import Foundation

/// What a training step costs at each input size of a run, relative to a step at its largest
/// training size: measured at the start of a run whose sizes grow (`Benchmark` steps at each
/// size), or else its pixels plus a share that does not scale with them.
///
/// Pixels alone underprice the smaller sizes: `resnet`'s steps at 64, 80, 96 and 112 px took
/// 0.28, 0.51, 0.65 and 0.88 of one at 128 px, where their pixels are 0.25, 0.39, 0.56 and 0.77
/// (docs/performance.md, "Step time by input size", with the machine): a step has costs that
/// do not grow with the image, and the last stage's maps (5, 6 and 7 pixels wide) fill
/// Winograd's 4×4 tiles only in part.
public struct StepCosts: Sendable, Equatable {
    /// The share of a step at the largest size that does not scale with pixels, for sizes not
    /// measured (by default).
    public static let fixedShare = 0.1
    /// The most sizes measured; the others are interpolated.
    public static let mostMeasured = 8

    /// The largest training size: its cost is 1.
    public let top: Int
    /// Seconds a step at each measured size (positive and finite; others are dropped).
    public let seconds: [Int: Double]
    /// The share that does not scale with pixels, for sizes not measured (0: pixels alone).
    public let unmeasuredFixedShare: Double

    public init(top: Int, seconds: [Int: Double] = [:], fixedShare: Double = Self.fixedShare) {
        self.top = max(top, 1)
        self.seconds = seconds.filter { $0.key > 0 && $0.value.isFinite && $0.value > 0 }
        self.unmeasuredFixedShare = fixedShare.isFinite ? min(max(fixedShare, 0), 1) : Self.fixedShare
    }

    /// The sizes to measure for `config`: every size its schedule trains at, or at most
    /// `mostMeasured` of them spread evenly from the first to the last.
    public static func sizesToMeasure(_ config: TrainingConfig) -> [Int] {
        let sizes = config.scheduleSizes
        guard sizes.count > mostMeasured else { return sizes }
        return (0..<mostMeasured).map { sizes[$0 * (sizes.count - 1) / (mostMeasured - 1)] }
    }

    private func pixels(_ size: Int) -> Double { Double(size) * Double(size) / (Double(top) * Double(top)) }
    private func model(_ size: Int) -> Double { unmeasuredFixedShare + (1 - unmeasuredFixedShare) * pixels(size) }

    /// A step at `size` against one at `top`: measured when both were; between two measured
    /// sizes, interpolated by pixels; else the pixel model.
    public func relative(_ size: Int) -> Double {
        guard let topSeconds = seconds[top] else { return model(size) }
        if let s = seconds[size] { return s / topSeconds }
        let below = seconds.keys.filter { $0 < size }.max(), above = seconds.keys.filter { $0 > size }.min()
        guard let below, let above else { return model(size) }
        let t = (pixels(size) - pixels(below)) / (pixels(above) - pixels(below))
        return (seconds[below]! + t * (seconds[above]! - seconds[below]!)) / topSeconds
    }
}

/// The steps still to come of a run and what they cost, by the size each epoch trains at.
public struct RemainingSteps: Sendable {
    /// Steps done so far (the run's global step).
    public var step: Int
    /// Steps left in the current epoch, at `currentSize`.
    public var leftInEpoch: Int
    public var stepsPerEpoch: Int
    public var currentSize: Int
    /// Seconds of a step at the largest training size, and of one evaluation.
    public var topStepSeconds: Double
    public var evaluationSeconds: Double
    /// Seconds of one checkpoint (0: not priced): one at each epoch's end and one at the run's,
    /// and with `checkpointEvery` > 0 one at each of its multiples of the global step.
    public var checkpointSeconds: Double
    public var checkpointEvery: Int

    public init(step: Int, leftInEpoch: Int, stepsPerEpoch: Int, currentSize: Int, topStepSeconds: Double, evaluationSeconds: Double,
                checkpointSeconds: Double = 0, checkpointEvery: Int = 0) {
        self.step = step
        self.leftInEpoch = leftInEpoch
        self.stepsPerEpoch = max(stepsPerEpoch, 1)
        self.currentSize = currentSize
        self.topStepSeconds = topStepSeconds
        self.evaluationSeconds = evaluationSeconds
        self.checkpointSeconds = checkpointSeconds.isFinite ? max(checkpointSeconds, 0) : 0
        self.checkpointEvery = max(checkpointEvery, 0)
    }

    /// Seconds from `step` to `total` steps when the run has `total` steps: each later epoch at
    /// the size the schedule gives its first step for that total (never smaller than the
    /// current), and an evaluation at the end of the current epoch and of each later one begun
    /// that the validation schedule validates (`TrainingConfig.validates`; the last always), and
    /// the checkpoints: one at each of those epochs' ends, one at the run's end, and one at each
    /// multiple of `checkpointEvery` from `step` on (counted at an epoch's end too: a little over).
    public func seconds(toTotal total: Int, config: TrainingConfig, costs: StepCosts) -> Double {
        var sum = Double(min(leftInEpoch, max(total - step, 0))) * costs.relative(currentSize)
        var start = step + leftInEpoch, evaluations = 0, epochEnds = 1
        func evaluated(endingAt end: Int) -> Bool {
            config.validates(epoch: (end + stepsPerEpoch - 1) / stepsPerEpoch, fraction: Double(end) / Double(max(total, 1)),
                             last: end >= total)
        }
        if evaluated(endingAt: start) { evaluations += 1 }
        while start < total {
            let size = max(currentSize, config.trainingSize(atFraction: Double(start) / Double(total)))
            sum += Double(min(stepsPerEpoch, total - start)) * costs.relative(size)
            start += stepsPerEpoch
            epochEnds += 1
            if evaluated(endingAt: min(start, total)) { evaluations += 1 }
        }
        var checkpoints = epochEnds + 1
        // Multiples in [step, total): the loop writes step's own after deciding on the next.
        if checkpointEvery > 0, total > step { checkpoints += (total - 1) / checkpointEvery - (max(step, 1) - 1) / checkpointEvery }
        return sum * topStepSeconds + evaluationSeconds * Double(evaluations) + checkpointSeconds * Double(checkpoints)
    }

    /// Whether a run with `seconds` of its budget left trains another step, `step` being the
    /// one just trained: when the step and the evaluations and checkpoints it brings fit (the
    /// run's last, and when `step` ended its epoch, that epoch's; `seconds(toTotal:)`). An
    /// epoch is begun only if it can train at least as long as its evaluation takes: a run whose
    /// budget ended just after an epoch's evaluation began another epoch for one step and
    /// evaluated again.
    public func trainsAnotherStep(seconds budget: Double, config: TrainingConfig, costs: StepCosts) -> Bool {
        var steps = 1
        if leftInEpoch == 0 {
            let perStep = topStepSeconds * costs.relative(currentSize)
            if perStep > 0, perStep.isFinite, evaluationSeconds.isFinite {
                steps = min(stepsPerEpoch, max(1, Int(min((evaluationSeconds / perStep).rounded(.up), 1e9))))
            }
        }
        return seconds(toTotal: step + steps, config: config, costs: costs) <= budget
    }

    /// The most total steps, at most `step + planned`, whose remaining steps fit in `seconds`
    /// (`step` when none does). A longer run trains more of its steps at smaller sizes, so the
    /// cost of a total dips (by up to ~2%) where a longer run moves an epoch to a smaller size,
    /// and rises between: a bisection finds a total that fits with the next one not, and the
    /// totals of the `dipScanEpochs` epochs after it are then tried one by one, the largest that
    /// fits taken (a dip there can hold half an epoch more).
    public func affordableTotal(seconds budget: Double, planned: Int, config: TrainingConfig, costs: StepCosts) -> Int {
        let most = step + max(planned, 0)
        guard budget > 0, topStepSeconds.isFinite, topStepSeconds > 0 else { return step }
        func fits(_ total: Int) -> Bool { seconds(toTotal: total, config: config, costs: costs) <= budget }
        if fits(most) { return most }
        var low = step, high = most  // seconds(low) fits, seconds(high) does not
        while high - low > 1 {
            let mid = low + (high - low) / 2
            if fits(mid) { low = mid } else { high = mid }
        }
        let scanEnd = min(most - 1, low + Self.dipScanEpochs * stepsPerEpoch)
        if scanEnd > low, let later = (low + 1...scanEnd).last(where: fits) { return later }
        return low
    }

    /// How many epochs past the bisection's answer `affordableTotal` looks for a dip that fits.
    public static let dipScanEpochs = 2
}

extension TrainingConfig {
    /// Every size the schedule trains at, smallest first: `resizeFrom` in steps of
    /// `resizeStep`, then the largest; the largest alone for a run at one size.
    public var scheduleSizes: [Int] {
        let top = largestTrainingSize
        guard let from = resizeFrom, from < top else { return [top] }
        return Array(stride(from: from, to: top, by: Self.resizeStep)) + [top]
    }
}
