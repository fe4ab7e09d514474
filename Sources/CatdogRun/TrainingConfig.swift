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
    /// All-reduce gradients in fp16 (nil in checkpoints written before the option = off).
    public var fp16AllReduce: Bool?
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
    public static let resizeStep = 16
    public static let resizeReach = 0.75
    /// Compare a checksum of the weights across ranks every this many steps.
    public var checksumEvery = 50

    public init() {}

    /// The budget recipe: what a run that fills its `--time-budget` takes for the options the
    /// user did not give (measured in the README's recipe table).
    public static let budgetOptimizer = OptimizerKind.adamw
    public static let budgetWeightDecay: Float = 0.05
    public static let budgetEMA = 0.999
    public static let budgetAugmentation = Augmentation(flip: true, color: true, crop: true, scale: true)

    /// The training input size when `fraction` of the run's updates are done: `resizeFrom`
    /// plus whole steps of `resizeStep` toward `imageSize`, which it reaches at `resizeReach`.
    public func trainingSize(atFraction fraction: Double) -> Int {
        guard let from = resizeFrom, from < imageSize else { return imageSize }
        let reached = min(max(fraction / Self.resizeReach, 0), 1)
        let steps = Int((Double(imageSize - from) * reached / Double(Self.resizeStep)).rounded(.down))
        return reached >= 1 ? imageSize : min(from + steps * Self.resizeStep, imageSize)
    }

    /// The EMA decay in use, or nil when off.
    public var emaDecay: Double? { ema.flatMap { $0 > 0 ? $0 : nil } }

    public var resolvedLearningRate: Float {
        learningRate ?? optimizer.defaultLearningRate
    }
}
