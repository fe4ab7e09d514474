import Foundation
import CatdogData
import CatdogEngine

/// Everything that defines a training run; stored in checkpoints.
public struct TrainingConfig: Sendable, Codable, Equatable {
    public var model = ModelZoo.defaultModel
    public var imageSize = 64
    public var epochs = 15
    /// Global batch size: per-rank batch = globalBatch / ranks.
    public var globalBatch = 64
    public var optimizer = OptimizerKind.adam
    /// nil = a per-optimizer default (Keras's, scaled for the global batch).
    public var learningRate: Float?
    public var momentum: Float = 0.9
    public var weightDecay: Float = 0
    public var warmupEpochs: Double = 1
    public var decay = LearningRateSchedule.Decay.cosine
    public var augmentation = Augmentation.all
    public var fit = Resize.Fit.squash
    public var scale = Preprocessing.Scale.unit
    public var validationFraction = 0.1
    /// Stop after this many epochs without a better validation loss (0 = never).
    public var patience = 5
    public var timeBudget: Double?
    /// The run fills `timeBudget`: `epochs` is only an upper bound, the learning-rate schedule
    /// ends when the budget does, and the run is complete then (nil in checkpoints written
    /// before the option = off). Set when `--time-budget` comes without `--epochs`.
    public var fillsBudget: Bool?
    /// The upper bound on epochs of a run that fills its budget.
    public static let budgetEpochCap = 1000
    public var seed: UInt64 = 1
    /// Overlap gradient all-reduce with backward (Horovod/DDP-style buckets).
    public var overlap = true
    /// Gradient bucket size for the overlapped all-reduce, in MiB.
    public var bucketMiB = 4.0
    /// The default bucket with PowerSGD: its last bucket's two rounds and products come after
    /// backward, so a smaller one shortens the wait (docs/across-machines.md measures it).
    public static let powerSGDBucketMiB = 1.0
    /// All-reduce gradients in fp16 (nil in checkpoints written before the option = off).
    public var fp16AllReduce: Bool?
    /// PowerSGD's rank when gradients are compressed with it (nil = off).
    public var powerSGDRank: Int?
    /// PowerSGD's factors cross the network in bf16 (`powersgd:R:bf16`; nil = fp32).
    public var powerSGDBF16: Bool?
    /// Exact fp32 sums in three stages (within each machine, across machines' leaders, back
    /// within each machine) instead of one all-reduce over every rank (nil: flat).
    public var hierarchicalAllReduce: Bool?
    /// Exact fp32 sums in which each rank adds up a part of every bucket in proportion to its
    /// share of the batch (`--allreduce parted`; nil: flat).
    public var partedAllReduce: Bool?
    /// Decay of an exponential moving average of the weights (and BatchNorm statistics) that
    /// validation, the best weights and checkpoints' `model/` use; nil or 0 = off.
    public var ema: Double?
    /// Validation scores the mean of each image's and its mirror image's probabilities, as
    /// `evaluate --tta-flip` and `submit` do (nil in checkpoints written before it = off).
    public var validationTTA: Bool? = true
    /// Progressive resizing: training starts at this input size and grows in steps of
    /// `resizeStep` pixels to `imageSize`, reached at `resizeReach` of the run; validation,
    /// checkpoints and inference stay at `imageSize`. nil = off (models with global pooling).
    public var resizeFrom: Int?
    /// Train at this input size (the largest, with progressive resizing) while validation,
    /// checkpoints and inference use `imageSize`, the same crop of each image at more pixels:
    /// "FixRes" (Touvron et al. 2019; random crops make objects look larger in training than
    /// centred ones do at test time). nil = `imageSize`.
    public var trainSize: Int?
    public static let resizeStep = 16
    public static let resizeReach = 0.75
    /// Compare a checksum of the weights across ranks every this many steps.
    public var checksumEvery = 50
    /// Ghost batch normalization: BatchNorm's statistics over groups of this many samples
    /// instead of each rank's whole slice (nil = off). It keeps a step's mathematics the same
    /// however the global batch is split among ranks, which is what `balance` needs.
    public var ghostBatch: Int?
    /// How the global batch is split among the ranks (`BatchSplit`; nil = even).
    public var balance: String?
    /// Label smoothing ε: the loss's gradient pulls each logit toward the target
    /// y·(1 − ε) + ε/2 instead of y (nil or 0 = off; the reported loss stays the plain logloss).
    public var labelSmoothing: Double?
    /// Validation after every this many epochs, and after the run's last (`--validate-every N`,
    /// Keras's `validation_freq`); nil: auto, see `validates(epoch:fraction:last:)`.
    public var validateEvery: Int?
    /// With auto, a run that fills its budget validates after its first epoch, every
    /// `sparseValidationEvery`-th and every epoch from `denseValidationFraction` of its schedule
    /// on: an evaluation of an unfinished model early in the budget costs the training time
    /// (with mirror TTA at the scoring size, a tenth of a 30-minute run when every epoch
    /// validates), and the best weights come at the end of the schedule.
    public static let sparseValidationEvery = 4
    public static let denseValidationFraction = 0.75

    public init() {}

    /// Whether the epoch numbered `epoch` (from 1), ending with `fraction` of the schedule's
    /// updates done, is validated; the run's `last` epoch always is.
    public func validates(epoch: Int, fraction: Double, last: Bool) -> Bool {
        if last { return true }
        if let every = validateEvery { return epoch % max(every, 1) == 0 }
        guard fillsBudget == true else { return true }
        return epoch == 1 || epoch % Self.sparseValidationEvery == 0 || fraction >= Self.denseValidationFraction
    }

    /// The validation schedule in words, for the log; nil when every epoch validates.
    public var validationScheduleDescription: String? {
        if let every = validateEvery {
            return every > 1 ? "validation after every \(every) epochs and after the last" : nil
        }
        guard fillsBudget == true else { return nil }
        return "validation \(Self.budgetValidationSchedule) (--validate-every 1 for every epoch)"
    }

    /// Which epochs `--validate-every auto` validates in a run that fills its time budget, in
    /// words for the log and `--help`.
    public static var budgetValidationSchedule: String {
        "after epoch 1, every \(sparseValidationEvery)th, and every epoch from \(Int(denseValidationFraction * 100))% of the schedule"
    }


    /// The training input size when `fraction` of the run's updates are done: `resizeFrom`
    /// plus whole steps of `resizeStep` toward `imageSize`, which it reaches at `resizeReach`.
    /// With `trainSize`, the growth ends there.
    public func trainingSize(atFraction fraction: Double) -> Int {
        let top = largestTrainingSize
        guard let from = resizeFrom, from < top else { return top }
        let reached = min(max(fraction / Self.resizeReach, 0), 1)
        let steps = Int((Double(top - from) * reached / Double(Self.resizeStep)).rounded(.down))
        return reached >= 1 ? top : min(from + steps * Self.resizeStep, top)
    }

    /// The largest input size training uses: `trainSize`, else `imageSize`.
    public var largestTrainingSize: Int { min(trainSize ?? imageSize, imageSize) }

    /// What an evaluation of `validationImages` should take when a training step at the largest
    /// training size takes `perStep` seconds: forward passes only, at `imageSize`, 0.3 of a
    /// training step per global batch of them (their pixels against the training size's), twice
    /// with mirror TTA. On 2 ranks of a Zen 4 (`resnet`, bf16) 2,000 images at 160 px with TTA
    /// took 8.2–10.8 s, checkpoint included, against 0.30–0.32 s a step at 128 px.
    public func evaluationSeconds(perStep: Double, validationImages: Int) -> Double {
        let batches = (Double(max(validationImages, 0)) / Double(max(globalBatch, 1))).rounded(.up)
        let pixels = pow(Double(imageSize) / Double(max(largestTrainingSize, 1)), 2)
        return perStep * batches * 0.3 * (validationTTA == true ? 2 : 1) * pixels
    }

    /// Training runs at other sizes than `imageSize` (progressive resizing or `trainSize`).
    public var trainsAtOtherSizes: Bool { resizeFrom != nil || trainSize != nil }

    /// How gradients cross the network.
    public var compression: GradientCompression {
        get {
            if let r = powerSGDRank { return .powerSGD(rank: r, bf16: powerSGDBF16 == true) }
            return fp16AllReduce == true ? .fp16 : .none
        }
        set {
            fp16AllReduce = newValue == .fp16 ? true : nil
            powerSGDRank = nil
            powerSGDBF16 = nil
            if case .powerSGD(let r, let bf16) = newValue {
                powerSGDRank = r
                powerSGDBF16 = bf16 ? true : nil
            }
        }
    }

    /// How the global batch is split among the ranks (even when `balance` does not parse;
    /// `problem` reports that).
    public var batchSplit: BatchSplit { balance.flatMap(BatchSplit.init(parsing:)) ?? .even }

    /// The group size of ghost batch normalization for `ranks` ranks: `ghostBatch`, or with a
    /// balanced split and none given, the largest divisor of the global batch at most an
    /// eighth of the even share (about eight groups a rank to move between ranks), but at
    /// least 4 samples where the even share has them (statistics of fewer are too noisy).
    /// nil: each rank's slice is one group.
    public func normalizationGroup(ranks: Int) -> Int? {
        if let ghostBatch { return ghostBatch }
        guard batchSplit != .even else { return nil }
        let even = globalBatch / max(ranks, 1)
        let target = max(even / 8, min(4, even), 1)
        return stride(from: target, through: 1, by: -1).first { globalBatch % $0 == 0 } ?? 1
    }

    /// The label smoothing in use (0 when off).
    public var smoothing: Float { Float(labelSmoothing ?? 0) }

    /// The EMA decay in use, or nil when off.
    public var emaDecay: Double? { ema.flatMap { $0 > 0 ? $0 : nil } }

    public var resolvedLearningRate: Float {
        learningRate ?? optimizer.defaultLearningRate
    }
}

/// What a run from scratch takes for the options its command line does not set, in one place
/// (`train`, its `--help` and the tests read it from here): one recipe whatever the run's
/// length but for its sizes and cutout (`larger`), and the length of a run that names none. It is the best
/// measured (docs/training.md, docs/results.md): on 2 ranks of an AMD EPYC Zen 5 it reaches 97.30%
/// (loss 0.0735) in its 30 minutes at the larger sizes it takes there, 97.10% (loss 0.0853) at 64 px
/// scored at 80 (105 epochs), 95.70% (loss 0.110) at 64 px throughout, where
/// Adam without its regularisation peaks at 92.90% (loss 0.176) and overfits from epoch ~35. The regularisation needs epochs to pay: at 30 epochs
/// the two are even, at 15 Adam alone does better (93.50% against 91.55%).
public struct Recipe: Sendable, Equatable {
    public var optimizer: OptimizerKind
    /// Decoupled weight decay (with an optimizer that decouples it; else none).
    public var weightDecay: Float
    public var ema: Double?
    public var augmentation: Augmentation
    /// Seconds a run fills when it sets neither `--epochs` nor `--time-budget`.
    public var timeBudget: Double
    /// Sizes for a model with global pooling when the command line names none of
    /// `--image-size`, `--train-size` and `--resize-from`: training at `trainSize`, validation,
    /// checkpoints and inference at `imageSize` (docs/results.md, "Scoring at a larger size").
    public var imageSize: Int
    public var trainSize: Int
    /// What a run that fills its budget takes instead when the budget holds enough epochs on
    /// the machine it runs on: larger sizes, and cutout when it holds more still.
    public var longRun: LongRun?

    /// The long-run tier. Training that starts at `resizeFrom`, grows to `trainSize` and scores
    /// at `imageSize`:
    /// better than the recipe's sizes when it gets enough epochs, worse when it does not
    /// (docs/results.md, "Scoring at a larger size": on 2 ranks, scored at 160, 97.45% and loss
    /// 0.0659 in 40 epochs against 97.10% and 0.0853, but 96.20% and 0.1028 in 20 against
    /// 96.15% and 0.0932 at equal time). Scored at 144 (1.125× the training size, where 64 px
    /// training scores best at 1.25×), four Zen 4 runs of 30–35 epochs each scored a lower
    /// loss than at 160, by 0.0041–0.0097 (docs/results.md, "Scoring the larger sizes").
    public struct LongRun: Sendable, Equatable {
        public var resizeFrom: Int
        public var trainSize: Int
        public var imageSize: Int
        /// The fewest epochs the budget must hold for them: the fewest where they were
        /// measured to win (30; they lost at 20, won at 40).
        public var fromEpochs: Double
        /// The fewest epochs of them the budget must hold for cutout (`cutout`, a square of that
        /// fraction of the side) to join the augmentation. On 2 ranks of a Zen 4 it cost at
        /// ~35 epochs (30 minutes, seeds 1-3: 96.88% ± 0.62, loss 0.0777 ± 0.0079 against
        /// 97.15% ± 0.28, 0.0721 ± 0.0026 without) and paid at 101-109 of ~110-115 estimated
        /// (90 minutes, seeds 1-3: 98.03% ± 0.43, 0.0506 ± 0.0077 against seeds 1-2 without,
        /// 97.90% ± 0.07, 0.0523 ± 0.0016, which overfit in their last quarter); between the two
        /// it was not measured (docs/results.md).
        public var cutoutFromEpochs: Double
        public var cutout: Float

        /// `augmentation` with cutout added when `epochs` of these sizes reach
        /// `cutoutFromEpochs` and it has none; else `augmentation`.
        public func augmentation(_ augmentation: Augmentation, epochs: Double) -> Augmentation {
            guard epochs >= cutoutFromEpochs, augmentation.cutout == nil else { return augmentation }
            var a = augmentation
            a.cutout = cutout
            return a
        }

        /// A configuration with these sizes (the rest of `config` kept).
        public func applied(to config: TrainingConfig) -> TrainingConfig {
            var c = config
            c.resizeFrom = resizeFrom
            c.trainSize = trainSize
            c.imageSize = imageSize
            return c
        }

        /// Epochs of these sizes that `budget` seconds hold for `config` (the rest of it kept) on
        /// a machine that trains `imagesPerSecond` at `trainSize`, as the run planner prices
        /// them (`RemainingSteps`): each epoch's steps at the size the growth schedule gives it,
        /// costing what `costs` measured against one at `trainSize` (without them, their pixels),
        /// and an evaluation of `validationImages` after each epoch the validation schedule
        /// validates (`TrainingConfig.evaluationSeconds`). 0 when the speed is not a positive
        /// number.
        public func epochs(budget: Double, imagesPerSecond: Double, trainImages: Int, validationImages: Int,
                           config: TrainingConfig, costs: StepCosts? = nil) -> Double {
            guard imagesPerSecond.isFinite, imagesPerSecond > 0, budget.isFinite, budget > 0, trainImages > 0 else { return 0 }
            let grown = applied(to: config)
            let batch = max(grown.globalBatch, 1)
            let perEpoch = (trainImages + batch - 1) / batch
            let perStep = Double(batch) / imagesPerSecond
            let remaining = RemainingSteps(step: 0, leftInEpoch: perEpoch, stepsPerEpoch: perEpoch,
                                           currentSize: grown.trainingSize(atFraction: 0), topStepSeconds: perStep,
                                           evaluationSeconds: grown.evaluationSeconds(perStep: perStep, validationImages: validationImages))
            let total = remaining.affordableTotal(seconds: budget, planned: TrainingConfig.budgetEpochCap * perEpoch, config: grown,
                                                  costs: costs ?? StepCosts(top: trainSize, fixedShare: 0))
            return Double(total) / Double(perEpoch)
        }
    }

    /// AdamW with decay 0.05, the weights' moving average at 0.999, flips, colour, crops and
    /// scale jitter, trained at 64 px and scored at 80, for 30 minutes; a run that fills a
    /// budget holding at least 30 epochs of training from 64 px growing to 128, scored at 144,
    /// takes those sizes instead, and cutout of half the side when it holds at least 100.
    public static let standard = Recipe(optimizer: .adamw, weightDecay: 0.05, ema: 0.999,
                                        augmentation: Augmentation(flip: true, color: true, crop: true, scale: true),
                                        timeBudget: 1800, imageSize: 80, trainSize: 64,
                                        longRun: LongRun(resizeFrom: 64, trainSize: 128, imageSize: 144, fromEpochs: 30,
                                                            cutoutFromEpochs: 100, cutout: Augmentation.defaultCutout))

    /// Whether `model` takes the recipe's sizes: its weights are the same at both (global
    /// pooling), so it can train at one and score at the other.
    public func scoresLarger(_ model: String) -> Bool {
        sameWeights(model, at: [trainSize, imageSize])
    }

    /// Whether `model` can take the larger sizes: the same weights at every size of them.
    public func takesLargerSizes(_ model: String) -> Bool {
        guard let larger = longRun else { return false }
        let sizes = Array(stride(from: larger.resizeFrom, to: larger.trainSize, by: TrainingConfig.resizeStep)) + [larger.trainSize, larger.imageSize]
        return sameWeights(model, at: sizes)
    }

    func sameWeights(_ model: String, at sizes: [Int]) -> Bool {
        let counts = sizes.map { size in (try? ModelZoo.builder(model, imageSize: size).counts()).map { [$0.parameters, $0.state] } }
        guard let first = counts.first, let first else { return false }
        return counts.allSatisfy { $0 == first }
    }

    /// The global batch the recipe was measured at.
    public static let referenceBatch = 64
    /// The most warmup epochs a large batch gets.
    public static let largeBatchWarmupEpochs = 3.0
    /// The largest factor the learning rate is scaled by: the batch it was measured at (512)
    /// over the reference; larger batches did worse with more (docs/across-machines.md).
    public static let largeBatchMaxRateScale = 8.0
    /// The large global batch that was measured: what the rate's scale stops at.
    public static var measuredLargeBatch: Int { referenceBatch * Int(largeBatchMaxRateScale) }

    /// What the command line left open, for a global batch B larger than the reference:
    /// min(k, 8) times the peak learning rate for k = B/64 (the linear scaling rule, Goyal et
    /// al. 2017, as far as it was measured), a warmup of min(k, 3) times the usual, and the
    /// moving average's decay to the power k, so that it averages over as many images as at
    /// 64. nil for the reference batch or smaller.
    public static func largeBatch(_ config: TrainingConfig) -> (learningRate: Float, warmupEpochs: Double, ema: Double?)? {
        guard config.globalBatch > referenceBatch else { return nil }
        let k = Double(config.globalBatch) / Double(referenceBatch)
        return (config.resolvedLearningRate * Float(min(k, largeBatchMaxRateScale)), config.warmupEpochs * min(k, largeBatchWarmupEpochs),
                config.emaDecay.map { pow($0, k) })
    }

    /// Below this many images a rank a step the cores compute poorly (docs/across-machines.md:
    /// one machine of 8 cores reached 95% 1.3x sooner at batch 512 than at 64).
    public static let smallRankBatch = 16

    /// What to tell a run that uses the default global batch over so many ranks that each
    /// computes fewer than `smallRankBatch` images a step; nil otherwise.
    public static func smallBatchAdvice(globalBatch: Int, ranks: Int) -> String? {
        guard ranks > 1, globalBatch < measuredLargeBatch, globalBatch / ranks < smallRankBatch else { return nil }
        let each = globalBatch / ranks
        return "note: each rank computes \(each) image\(each == 1 ? "" : "s") a step (the default global batch of \(globalBatch) over " +
            "\(ranks) ranks), too few to keep a core busy; with this many ranks --batch-size \(measuredLargeBatch) (the learning rate, warmup and " +
            "moving average scale with it) reaches a given accuracy sooner, in more epochs, and across machines add " +
            "--compress powersgd:8 (docs/across-machines.md, 'Choosing the batch, the compression and the network')"
    }

    /// `config` with this recipe wherever the command line left a choice open.
    public func apply(to config: inout TrainingConfig, optimizerGiven: Bool, weightDecayGiven: Bool, emaGiven: Bool, augmentationGiven: Bool,
                      learningRateGiven: Bool, warmupGiven: Bool) {
        if !optimizerGiven { config.optimizer = optimizer }
        if !weightDecayGiven { config.weightDecay = config.optimizer.decouplesWeightDecay ? weightDecay : 0 }
        if !emaGiven { config.ema = ema }
        if !augmentationGiven { config.augmentation = augmentation }
        if let large = Recipe.largeBatch(config) {
            if !learningRateGiven { config.learningRate = large.learningRate }
            if !warmupGiven { config.warmupEpochs = large.warmupEpochs }
            if !emaGiven { config.ema = large.ema }
        }
    }
}

/// The ranges every number of a run must lie in, whether it comes from the command line or
/// from a checkpoint's metadata (a file is untrusted): far beyond any real run, and small
/// enough that no arithmetic done with them can overflow (steps × batch, epochs × steps,
/// 1 + epoch). One place, so that the command line and the checkpoint reader cannot drift.
public enum RunLimits {
    public static let epochs = 1...100_000
    public static let globalBatch = 1...65_536
    public static let ranks = 1...65_536
    /// Updates, optimizer iterations, schedule steps, checksum intervals: 2^40.
    public static let steps = 0...(1 << 40)
    public static let patience = 0...100_000
    public static let warmupEpochs = 0.0...100_000
    /// Any finite rate computes (a huge one diverges, and training says so); only NaN and
    /// infinity are refused.
    public static let learningRate = 0.0...1e36
    public static let weightDecay = 0.0...100
    /// Seconds (a time budget, elapsed time): 30 years.
    public static let seconds = 0.0...1e9
    public static let bucketMiB = 0.0...65_536
    /// At 0.5 every target would be one half and nothing would be learnt.
    public static let labelSmoothing = 0.0...0.49
    /// A mean loss per sample: above this a run has diverged (`Diverged.loss` stops training
    /// long before), so a file that stores more is not one of ours.
    public static let loss = 0.0...1e6
    public static let parameters = 1...(1 << 34)
    /// Checkpoints hold PowerSGD's error feedback (as large as the weights, one per rank) for
    /// runs of at most this many ranks; a larger run's hold the sum of its ranks' (one tensor).
    public static let checkpointedErrorFeedbackRanks = 16

    /// nil when `value` lies in `range`, else "NAME VALUE is outside LOW...HIGH".
    public static func check<T: Comparable>(_ name: String, _ value: T, _ range: ClosedRange<T>) -> String? {
        range.contains(value) ? nil : "\(name) \(value) is outside \(range.lowerBound)...\(range.upperBound)"
    }

    /// The same for a floating-point value, which must also be a number (not NaN or infinite).
    public static func check(_ name: String, _ value: Double, _ range: ClosedRange<Double>) -> String? {
        value.isFinite && range.contains(value) ? nil : "\(name) \(value) is outside \(range.lowerBound)...\(range.upperBound)"
    }

    /// The first problem `checks` find, each run only when those before it passed: a later
    /// check may compute with a number an earlier one bounds (a divisor checked positive, a
    /// range built from a count), as an array of results, all computed at once, could not
    /// (`--ghost-batch 0` divided by zero in the check after the one that refused it).
    public static func firstProblem(_ checks: (() -> String?)...) -> String? {
        for check in checks { if let problem = check() { return problem } }
        return nil
    }
}

extension TrainingConfig {
    /// What is out of range in this configuration, or nil (see `RunLimits`).
    public var problem: String? {
        typealias L = RunLimits
        return RunLimits.firstProblem(
            { L.check("image size", imageSize, 16...CheckpointLimits.maxImageSize) },
            { L.check("epochs", epochs, L.epochs) },
            { L.check("batch size", globalBatch, L.globalBatch) },
            { learningRate.flatMap { $0 > 0 ? L.check("learning rate", Double($0), L.learningRate) : "learning rate \($0) is not positive" } },
            { L.check("momentum", Double(momentum), 0...0.999_999) },
            { L.check("weight decay", Double(weightDecay), L.weightDecay) },
            { L.check("warmup epochs", warmupEpochs, L.warmupEpochs) },
            { L.check("validation fraction", validationFraction, 1e-9...0.999_999_999) },
            { L.check("patience", patience, L.patience) },
            { timeBudget.flatMap { L.check("time budget", $0, 1e-3...L.seconds.upperBound) } },
            { L.check("bucket MiB", bucketMiB, 1e-6...L.bucketMiB.upperBound) },
            { ema.flatMap { L.check("EMA decay", $0, 0...0.999_999_999) } },
            { resizeFrom.flatMap { L.check("resize-from size", $0, 16...imageSize) } },
            { trainSize.flatMap { L.check("training size", $0, 16...imageSize) } },
            { L.check("checksum interval", checksumEvery, 1...L.steps.upperBound) },
            { L.check("colour shift", Double(augmentation.colorShift), 0...255) },
            { augmentation.cutout.flatMap { L.check("cutout size", Double($0), Double(Augmentation.cutoutRange.lowerBound)...Double(Augmentation.cutoutRange.upperBound)) } },
            { powerSGDRank.flatMap { L.check("PowerSGD rank", $0, 1...GradientCompression.maxPowerSGDRank) } },
            { powerSGDBF16 == true && powerSGDRank == nil ? "PowerSGD's factors in bf16 without PowerSGD" : nil },
            { ghostBatch.flatMap { L.check("ghost batch", $0, 1...globalBatch) } },
            { ghostBatch.flatMap { globalBatch % $0 == 0 ? nil : "ghost batch \($0) does not divide the global batch \(globalBatch)" } },
            { labelSmoothing.flatMap { L.check("label smoothing", $0, L.labelSmoothing) } },
            { validateEvery.flatMap { L.check("validation interval", $0, 1...Self.budgetEpochCap) } },
            { balance.flatMap { BatchSplit(parsing: $0) == nil ? "balance \($0.prefix(40)) is not even, auto or weights such as 2,1" : nil } },
            { hierarchicalAllReduce == true && partedAllReduce == true ? "the all-reduce is both hierarchical and parted" : nil },
            { allReduceTopology.takes(compression) ? nil : "the \(allReduceTopology) all-reduce sums exact fp32 gradients, not \(compression)" }
        )
    }
}

/// How exact fp32 gradients are summed (`--allreduce`).
public enum AllReduceTopology: String, CaseIterable, Sendable {
    /// One all-reduce over every rank (Open MPI's).
    case flat
    /// Within each machine, across the machines' first ranks, back within each machine.
    case hierarchical
    /// Each rank sums a part of every bucket by its share of the batch and sends it to the others.
    case parted

    /// Whether gradients compressed so can be summed this way: flat all of them, hierarchical
    /// also PowerSGD (between the machines' leaders), parted only exact fp32 sums.
    public func takes(_ compression: GradientCompression) -> Bool {
        switch (self, compression) {
        case (.flat, _), (_, .none), (.hierarchical, .powerSGD): return true
        default: return false
        }
    }
}

extension TrainingConfig {
    /// The all-reduce the run's checkpoints record (in two fields, so that older ones still read).
    public var allReduceTopology: AllReduceTopology {
        get { hierarchicalAllReduce == true ? .hierarchical : partedAllReduce == true ? .parted : .flat }
        set {
            hierarchicalAllReduce = newValue == .hierarchical ? true : nil
            partedAllReduce = newValue == .parted ? true : nil
        }
    }
}

/// Sizes a checkpoint may name (the command line accepts the same).
public enum CheckpointLimits {
    public static let maxImageSize = 1024
}

/// What `--compress` asks for.
public enum GradientCompression: Equatable, Sendable, CustomStringConvertible {
    case none
    case fp16
    /// Rank-`rank` PowerSGD (Vogels et al. 2019), exact fp32 during the learning-rate warmup;
    /// with `bf16`, its factors P and Q cross the network in bf16 (half the bytes).
    case powerSGD(rank: Int, bf16: Bool = false)

    public static let maxPowerSGDRank = 64

    /// `none`, `fp16`, `powersgd:R` or `powersgd:R:bf16`; nil for anything else.
    public init?(parsing text: String) {
        switch text.lowercased() {
        case "none", "fp32": self = .none
        case "fp16": self = .fp16
        default:
            let parts = text.lowercased().split(separator: ":", omittingEmptySubsequences: false)
            guard (2...3).contains(parts.count), parts[0] == "powersgd", let r = Int(parts[1]), (1...Self.maxPowerSGDRank).contains(r),
                  parts.count == 2 || parts[2] == "bf16" else { return nil }
            self = .powerSGD(rank: r, bf16: parts.count == 3)
        }
    }

    public var description: String {
        switch self {
        case .none: "none"
        case .fp16: "fp16"
        case .powerSGD(let r, let bf16): "powersgd:\(r)\(bf16 ? ":bf16" : "")"
        }
    }
}

/// What `--balance` asks for: how each global batch is split among the ranks.
public enum BatchSplit: Equatable, Sendable, CustomStringConvertible {
    /// B/N samples each.
    case even
    /// Shares by each rank's measured speed, re-estimated as training goes.
    case auto
    /// Shares in proportion to these weights, one a rank (`--balance 2,1,1`).
    case weights([Double])

    /// Weights lie in this range (a ratio of a million between ranks is beyond any lab).
    public static let weightRange = 1e-3...1e6

    /// `even`, `auto` or comma-separated positive weights; nil for anything else (or more
    /// weights than `RunLimits.ranks` allows).
    public init?(parsing text: String) {
        switch text.lowercased() {
        case "even": self = .even
        case "auto": self = .auto
        default:
            guard text.utf8.count <= 16 * RunLimits.ranks.upperBound else { return nil }
            let parts = text.split(separator: ",", omittingEmptySubsequences: false)
            let weights = parts.compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard weights.count == parts.count, RunLimits.ranks.contains(weights.count),
                  weights.allSatisfy({ $0.isFinite && Self.weightRange.contains($0) }) else { return nil }
            self = .weights(weights)
        }
    }

    public var description: String {
        switch self {
        case .even: "even"
        case .auto: "auto"
        case .weights(let w): w.map { $0 == $0.rounded() ? String(Int($0)) : String($0) }.joined(separator: ",")
        }
    }
}
