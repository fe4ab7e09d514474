import CatdogData
import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

/// Synchronous data-parallel training: every rank holds the same weights, computes gradients
/// on its slice of the global batch, the gradients are summed across ranks, and every rank
/// applies the same update.
public final class Trainer {
    public let config: TrainingConfig
    public let comm: Communicator
    public let network: Network
    /// The first parameter group's optimizer (the only one when the whole network trains).
    public let optimizer: Optimizer
    /// Where batches come from: images, or activations kept at `firstNode`.
    public let source: BatchSource
    /// How the images became input (stored in checkpoints).
    public let preprocessing: Preprocessing
    /// Forward starts and backward stops at this node (0: the input; fine-tuning: a cut).
    public let firstNode: Int
    /// Seed of the epochs' permutations (the run's seed, unless a phase wants its own).
    public var planSeed: UInt64
    /// What the log calls an epoch, and the first epoch of this phase (a fine-tuning phase
    /// after the head's epochs logs "fine-tune epoch 1/3" for the run's epoch 61).
    public var phase = (name: "epoch", firstEpoch: 0)
    public private(set) var schedule: LearningRateSchedule

    /// Position: completed epochs, steps done in the current epoch, updates in total.
    public var epoch = 0
    public var stepInEpoch = 0
    public var globalStep = 0
    public var history: [EpochMetrics] = []
    public var bestValidationLoss = Double.infinity
    public var epochsWithoutImprovement = 0
    /// Told what a resume would refuse in a checkpoint this trainer is writing (`CheckpointMetadata.problem`,
    /// the check every read makes): a fault of this program, said when it happens rather than
    /// at the resume. It may throw to stop the run (the tests do); the file is written otherwise.
    public var onUnreadableCheckpoint: ((String) throws -> Void)?
    /// The input size the checkpoint's unfinished epoch trained at (progressive resizing).
    public var resumedEpochSize: Int?
    /// Seconds trained before this process started (from a checkpoint).
    public var elapsedBefore = 0.0
    /// What a step costs at each training size, for the time budget's estimate and the ETA
    /// (measured by `train` when the sizes grow under a budget; else pixels).
    public lazy var stepCosts = StepCosts(top: config.largestTrainingSize)
    /// The current epoch's training sums so far (a mid-epoch checkpoint keeps them).
    public var epochTotals = EpochTotals()
    /// When this process's trainer was made (elapsed time = elapsedBefore + since then).
    public let processStart = Date()

    /// Weights and BatchNorm state of the best epoch (early stopping restores them).
    public let bestParameters: FloatBuffer
    public let bestState: FloatBuffer
    /// The moving average of the weights and BatchNorm statistics (`config.ema`; empty when
    /// off). Validation, the best weights and checkpoints' `model/` take it; training goes on
    /// with the live weights.
    public let emaParameters: FloatBuffer
    public let emaState: FloatBuffer

    public var stepsPerEpoch: Int { (source.trainCount + config.globalBatch - 1) / config.globalBatch }

    /// The update itself; owns the labels buffer and the gradient buckets. It trains through
    /// `trainingNetwork`.
    public private(set) var stepper: DataParallelStep
    /// Each rank's share of the global batch (`--balance`).
    public let balancer: Balancer
    /// `network` itself, or with progressive resizing the same model at the epoch's input size,
    /// computing with `network`'s parameter, gradient and state buffers. Validation,
    /// checkpoints and the moving average use `network`.
    public private(set) var trainingNetwork: Network
    private let fullSizeStepper: DataParallelStep
    private let convolution: ConvolutionOptions
    /// Timers of the resized networks' steppers that were let go.
    private var retiredSeconds = (compute: 0.0, comm: 0.0)
    /// The input size training batches have now.
    public var trainingSize: Int { trainingNetwork.inputShape.height }
    /// The image loader (decoding one step ahead), when the source is images.
    public var loader: BatchLoader? { (source as? ImageSource)?.loader }
    /// Samples that go through the network at once; the local batch is split into micro-batches
    /// of this size whose gradients add up before the all-reduce.
    public let microBatch: Int
    /// Ends this rank when a step, evaluation or checkpoint waits far longer than expected.
    public var watchdog: StallWatchdog?
    /// Asked between steps: non-zero (the signal) when this rank has been told to stop. Every
    /// rank then finishes the step, they agree, one checkpoint is written and `fit` returns.
    public var stopSignal: () -> Int32 = { 0 }
    /// When set, every rank's phases of the run's first `timeline.steps` updates go there.
    public var timeline: Timeline?
    /// TensorBoard event file (rank 0): scalars per epoch, and the training loss every
    /// `batchEventsEvery` updates.
    public var events: TensorBoardWriter?
    /// PowerSGD's state when gradients are compressed with it (shared by the resized steps).
    public var powerSGD: PowerSGDReduction? { fullSizeStepper.reduction.powerSGD }
    /// Rank 0's copies of every rank's PowerSGD error feedback, gathered for a checkpoint (runs
    /// of at most `RunLimits.checkpointedErrorFeedbackRanks` ranks)…
    var gatheredErrors: [FloatBuffer] = []
    /// …or, in larger runs, their sum.
    var gatheredErrorSum: FloatBuffer?
    public var batchEventsEvery = 10
    /// Bytes of activations (and their gradients) the network reserves.
    public var activationBytes: Int { microBatch * network.activationBytesPerSample }
    private let evaluationLabels: FloatBuffer
    private let dLogits: FloatBuffer
    public var computeSeconds: Double {
        retiredSeconds.compute + fullSizeStepper.computeSeconds + (stepper === fullSizeStepper ? 0 : stepper.computeSeconds)
    }
    public var exposedCommSeconds: Double {
        retiredSeconds.comm + fullSizeStepper.exposedCommSeconds + (stepper === fullSizeStepper ? 0 : stepper.exposedCommSeconds)
    }

    /// More ranks on this machine than it has cores: a rank waiting for the others should
    /// sleep, not spin.
    static func oversubscribed(_ comm: Communicator) -> Bool {
        comm.ranksOnMachine > ProcessInfo.processInfo.activeProcessorCount
    }

    /// Activation memory `microBatch: nil` aims for when nothing is known of the machine.
    public static let defaultActivationBudget = 256 << 20

    /// A twelfth of the memory available to each rank of the machine, within 128 MiB…1 GiB:
    /// the ranks' weights, optimizer state, input buffers and libraries need the rest.
    public static func activationBudget(availableBytes: Int?, ranksOnMachine: Int) -> Int {
        guard let available = availableBytes, available > 0 else { return defaultActivationBudget }
        return min(1 << 30, max(128 << 20, available / max(ranksOnMachine, 1) / 12))
    }

    /// What of `budget` is left for activations once the weights' moving average (`averageBytes`,
    /// 0 without one) is counted in it; never under half of `budget`, so a large model still
    /// gets micro-batches of some size.
    public static func activationBudget(_ budget: Int, less averageBytes: Int) -> Int {
        max(budget - max(averageBytes, 0), budget / 2)
    }

    /// The bytes of the weights' moving average `config` keeps for `network` (its weights and
    /// BatchNorm statistics), 0 without one.
    public static func movingAverageBytes(_ config: TrainingConfig, _ network: Network) -> Int {
        config.emaDecay == nil ? 0 : (network.parameterCount + network.state.count) * MemoryLayout<Float>.size
    }

    /// What grows with the batch beyond the activation budget, refused before anything is
    /// allocated when it would take more than `batchMemoryShare` of this rank's part of the
    /// memory the kernel says is available (MemAvailable over the machine's ranks):
    /// - the input loader's two buffers (the step being trained, the next being prepared), a
    ///   rank's whole share in floats: `--batch-size 65536 --image-size 256` asked one rank
    ///   for 51.5 GB and aborted in the allocation;
    /// - a micro-batch's activations, where it must hold a whole group of ghost batch
    ///   normalization (4,096 samples at a batch of 65,536 with `--balance auto`) or
    ///   `--micro-batch` names more than the budget holds.
    public struct BatchMemoryTooLarge: Error, CustomStringConvertible {
        public let description: String
    }

    public static let batchMemoryShare = 0.25

    /// The bytes memory that grows with the batch may take on one rank: `batchMemoryShare` of
    /// its part of `available` (nil, no limit, when that is unknown). `Benchmark` checks its
    /// pass against the same.
    static func batchMemoryLimit(available: Int?, ranksOnMachine: Int) -> Double? {
        guard let available, available > 0 else { return nil }
        return batchMemoryShare * Double(available) / Double(max(ranksOnMachine, 1))
    }

    /// "a quarter of this rank's part (5.5 GiB, 1/4) of the 22.0 GiB this machine has
    /// available", or without the part on a machine of one rank, or "... left under the memory
    /// limit of control group /slurm/job_42" where that set the figure: what the memory refusals cite.
    static func describeShare(_ fraction: String, of available: AvailableMemory, ranksOnMachine: Int) -> String {
        let gib = Double(available.bytes) / 1_073_741_824
        return ranksOnMachine > 1
            ? String(format: "%@ of this rank's part (%.1f GiB, 1/%d) of the %.1f GiB %@", fraction,
                     gib / Double(ranksOnMachine), ranksOnMachine, gib, available.source)
            : String(format: "%@ of the %.1f GiB %@", fraction, gib, available.source)
    }

    static func checkBatchMemory(samples: Int, shape: FeatureShape, globalBatch: Int, micro: Int = 1, activationBytesPerSample: Int = 0,
                                 ranksOnMachine: Int = 1, available: AvailableMemory? = MemoryStatus.available()) throws {
        guard let available, let limit = batchMemoryLimit(available: available.bytes, ranksOnMachine: ranksOnMachine) else { return }
        let share = Trainer.describeShare("a quarter", of: available, ranksOnMachine: ranksOnMachine)
        let inputs = 2 * Double(max(samples, 1)) * Double(shape.count) * Double(MemoryLayout<Float>.size)
        if inputs > limit {
            throw BatchMemoryTooLarge(description: String(
                format: "a rank's share of --batch-size %d holds up to %d images of %dx%d, whose two input buffers (decoded to floats) would take %.1f GiB, more than %@: use a smaller --batch-size or --image-size, or more machines%@",
                globalBatch, samples, shape.height, shape.width, inputs / 1_073_741_824, share, available.raiseLimit))
        }
        let activations = Double(micro) * Double(activationBytesPerSample)
        if activations > limit {
            throw BatchMemoryTooLarge(description: String(
                format: "micro-batches of %d samples (at least one group of ghost batch normalization, or --micro-batch) would take %.1f GiB of activations, more than %@: use a smaller --ghost-batch, --micro-batch or --batch-size%@",
                micro, activations / 1_073_741_824, share, available.raiseLimit))
        }
    }

    /// A model too large for the machine: its weights, their gradients, the optimizer's state
    /// and the moving average would take more than `stateMemoryShare` of this rank's part of
    /// the available memory. `simple` at 1024 px has 537 million parameters (its dense layer
    /// grows with the image): 12 GiB a rank with AdamW, which two ranks on a 24 GiB machine
    /// cannot both hold; they were killed by the kernel's OOM killer.
    public struct ModelMemoryTooLarge: Error, CustomStringConvertible {
        public let description: String
    }

    /// The weights and what is kept beside them take at most three quarters of a rank's part
    /// (the rest: the batch's buffers and activations, each refused beyond `batchMemoryShare`
    /// but sized far below it by default, and the libraries).
    public static let stateMemoryShare = 0.75

    /// Bytes a rank holds in buffers of the weights' size (the weights, their gradients, on
    /// rank 0 the best epoch's copy, the optimizer's moments, the moving average, PowerSGD's error feedback:
    /// one buffer, or on rank 0 of a run of up to `RunLimits.checkpointedErrorFeedbackRanks`
    /// ranks every rank's for its checkpoints, else two), and BatchNorm's statistics; what
    /// `train` logs as "weights, gradients and optimizer state".
    public static func stateBytes(_ config: TrainingConfig, parameters: Int, state: Int, ranks: Int, rank: Int) -> Double {
        let errorFeedback = config.powerSGDRank == nil ? 0
            : ranks <= RunLimits.checkpointedErrorFeedbackRanks ? (rank == 0 ? ranks : 1) : 2
        let copies = (rank == 0 ? 3 : 2) + config.optimizer.weightSizedBuffers + (config.emaDecay == nil ? 0 : 1) + errorFeedback
        return Double(MemoryLayout<Float>.size) * (Double(copies) * Double(parameters) + Double(config.emaDecay == nil ? 1 : 2) * Double(state))
    }

    /// Refuses, before anything is allocated, a model whose `stateBytes` exceed
    /// `stateMemoryShare` of this rank's part of `available` (nothing when that is unknown).
    static func checkModelMemory(_ config: TrainingConfig, parameters: Int, state: Int, ranks: Int, rank: Int,
                                 ranksOnMachine: Int, available: AvailableMemory?) throws {
        guard let available, available.bytes > 0 else { return }
        let part = Double(available.bytes) / Double(max(ranksOnMachine, 1))
        let bytes = stateBytes(config, parameters: parameters, state: state, ranks: ranks, rank: rank)
        guard bytes > stateMemoryShare * part else { return }
        let of = Trainer.describeShare("three quarters", of: available, ranksOnMachine: ranksOnMachine)
        let fewer = (ranksOnMachine > 1 ? ", or fewer ranks on this machine" : "") + available.raiseLimit
        throw ModelMemoryTooLarge(description: String(
            format: "model %@ at %dx%d has %d parameters: its weights, gradients and %@ state%@ would take %.1f GiB on rank %d, more than %@: use a smaller --image-size or a model with global pooling (resnet-pool, resnet)%@",
            config.model, config.imageSize, config.imageSize, parameters, config.optimizer.rawValue,
            config.emaDecay == nil ? "" : " with the moving average", bytes / 1_073_741_824, rank, of, fewer))
    }

    /// Micro-batch size for a local batch: as few micro-batches as keep activations and their
    /// gradients within `budget`, of equal size (the last may be smaller by the remainder).
    public static func microBatch(localBatch: Int, bytesPerSample: Int, budget: Int = defaultActivationBudget) -> Int {
        let largest = max(1, min(localBatch, budget / max(bytesPerSample, 1)))
        let passes = (localBatch + largest - 1) / largest
        return max(1, (localBatch + passes - 1) / max(passes, 1))
    }

    /// Micro-batch size when a rank may be given up to `largestShare` samples (shares by
    /// speed) rather than its even `localBatch`: the even share's plan, or passes as large as
    /// the budget holds up to the largest share when that is more, so that a fast rank's share
    /// goes through in one pass where memory allows, not in a full pass and a small remainder.
    public static func microBatch(localBatch: Int, largestShare: Int, bytesPerSample: Int,
                                  budget: Int = defaultActivationBudget) -> Int {
        let even = microBatch(localBatch: localBatch, bytesPerSample: bytesPerSample, budget: budget)
        guard largestShare > localBatch else { return even }
        return max(even, min(largestShare, budget / max(bytesPerSample, 1)))
    }

    /// Training from scratch on the images of `data`: the network built from `config` and
    /// initialised by rank 0, one optimizer over all of it.
    /// `available`: the memory available to this rank's machine (or job), read before any rank
    /// allocated for this run (`agreedMemory`); nil: not known, nothing refused for memory.
    public convenience init(config: TrainingConfig, communicator comm: Communicator, data: TrainingData, microBatch: Int? = nil,
                            activationBudget: Int = Trainer.defaultActivationBudget, convolution: ConvolutionOptions = .init(),
                            available: AvailableMemory? = MemoryStatus.available()) throws {
        let counts = try ModelZoo.builder(config.model, imageSize: config.imageSize).counts()
        try Trainer.checkModelMemory(config, parameters: counts.parameters, state: counts.state, ranks: comm.size, rank: comm.rank,
                                     ranksOnMachine: comm.ranksOnMachine, available: available)
        let network = try ModelZoo.build(config.model, imageSize: config.imageSize, convolution: convolution)
        let balancer = try Balancer(split: config.batchSplit, globalBatch: config.globalBatch,
                                    group: config.normalizationGroup(ranks: comm.size), ranks: comm.size)
        let localBatch = config.globalBatch / comm.size
        let group = balancer.group ?? 1
        // A step holds at most every training image, however large the batch (and a micro-batch
        // at least one group of ghost batch normalization).
        let images = max(data.trainSamples.count, 1)
        let largest = min(max(balancer.largestPossibleShare, localBatch, 1), max(images, group))
        let planned = Trainer.activationBudget(activationBudget, less: Trainer.movingAverageBytes(config, network))
        let micro = min(max(microBatch ?? Trainer.microBatch(localBatch: localBatch, largestShare: largest,
                                                             bytesPerSample: network.activationBytesPerSample,
                                                             budget: planned), group), largest)
        let capacity = min(balancer.largestPossibleShare, images)
        try Trainer.checkBatchMemory(samples: capacity, shape: network.inputShape, globalBatch: config.globalBatch, micro: micro,
                                     activationBytesPerSample: network.activationBytesPerSample, ranksOnMachine: comm.ranksOnMachine,
                                     available: available)
        network.reserve(maxBatch: micro)
        let optimizer = config.optimizer.make(count: network.parameterCount, momentum: config.momentum,
                                              tensors: network.parameterSlots.map { $0.offset..<($0.offset + $0.count) })
        let loader = BatchLoader(data: data, config: config, rank: comm.rank, capacity: capacity, sampleFloats: network.inputShape.count)
        try self.init(config: config, communicator: comm, network: network,
                      groups: [.init(range: 0..<network.parameterCount, optimizer: optimizer)], firstNode: 0,
                      source: ImageSource(data: data, loader: loader), preprocessing: data.preprocessing, convolution: convolution)
        // Rank 0 initialises; everyone starts from its weights.
        network.initialize(seed: config.seed)
        try comm.broadcast(network.parameters)
        try comm.broadcast(network.state)
        resetAverage()
    }

    /// The epoch driver over any source: `network` as it is (already reserved for the
    /// micro-batch, its weights the same on every rank), trained in `groups` from `firstNode`.
    public init(config: TrainingConfig, communicator: Communicator, network: Network, groups: [DataParallelStep.ParameterGroup],
                firstNode: Int, source: BatchSource, preprocessing: Preprocessing, convolution: ConvolutionOptions = .init()) throws {
        balancer = try Balancer(split: config.batchSplit, globalBatch: config.globalBatch,
                                group: config.normalizationGroup(ranks: communicator.size), ranks: communicator.size)
        guard balancer.split == .even || source is ImageSource else {
            throw Balancer.SplitError(description: "--balance works when training from images, not on kept activations (fine-tuning)")
        }
        self.config = config
        comm = communicator
        self.network = network
        self.source = source
        self.preprocessing = preprocessing
        self.firstNode = firstNode
        planSeed = config.seed
        let micro = network.maxBatch
        self.microBatch = micro
        evaluationLabels = FloatBuffer(count: micro)
        dLogits = FloatBuffer(count: micro)
        // Only rank 0 keeps the best weights (it writes them into checkpoints); at the end it
        // sends them to the others. Every other rank saves a copy of the weights' memory.
        bestParameters = FloatBuffer(count: comm.rank == 0 ? network.parameterCount : 0)
        bestState = FloatBuffer(count: comm.rank == 0 ? network.state.count : 0)
        let averaging = config.emaDecay != nil
        emaParameters = FloatBuffer(count: averaging ? network.parameterCount : 0)
        emaState = FloatBuffer(count: averaging ? network.state.count : 0)
        let steps = (source.trainCount + config.globalBatch - 1) / config.globalBatch
        schedule = LearningRateSchedule(
            baseRate: config.resolvedLearningRate, warmupSteps: Int(config.warmupEpochs * Double(steps)),
            totalSteps: config.epochs * steps, decay: config.decay)
        stepper = DataParallelStep(network: network, groups: groups, firstNode: firstNode, communicator: communicator,
                                   overlap: config.overlap, bucketBytes: Int(config.bucketMiB * 1_048_576),
                                   compression: config.compression, allReduce: config.allReduceTopology,
                                   compressFrom: schedule.warmupSteps, seed: config.seed,
                                   batchCapacity: balancer.largestPossibleShare)
        optimizer = stepper.optimizer
        stepper.waitsPolitely = Trainer.oversubscribed(comm)
        stepper.labelSmoothing = config.smoothing
        fullSizeStepper = stepper
        trainingNetwork = network
        self.convolution = convolution
        resetAverage()
    }

    /// Starts the moving average at the current weights.
    func resetAverage() {
        guard config.emaDecay != nil else { return }
        emaParameters.copy(from: network.parameters)
        emaState.copy(from: network.state)
    }

    /// Runs `body` with the weights validation scores in the network: the moving average when
    /// there is one (swapped in and back out), else the live weights.
    public func withEvaluatedWeights<T>(_ body: () throws -> T) rethrows -> T {
        guard config.emaDecay != nil else { return try body() }
        WeightAverage.swapContents(network.parameters, emaParameters)
        WeightAverage.swapContents(network.state, emaState)
        defer {
            WeightAverage.swapContents(network.parameters, emaParameters)
            WeightAverage.swapContents(network.state, emaState)
        }
        return try body()
    }

    /// Trains from now on at input size `size` (progressive resizing): through a network of the
    /// same model at that size that shares `network`'s buffers, or `network` itself at the
    /// working size. Identical on every rank.
    public func useTrainingSize(_ size: Int) throws {
        guard size != trainingSize else { return }
        if stepper !== fullSizeStepper {
            retiredSeconds.compute += stepper.computeSeconds
            retiredSeconds.comm += stepper.exposedCommSeconds
        }
        if size == config.imageSize {
            trainingNetwork = network
            stepper = fullSizeStepper
            return
        }
        precondition(firstNode == 0, "progressive resizing trains from the input")
        let resized = try ModelZoo.build(config.model, imageSize: size, convolution: convolution, sharing: network)
        for (full, small) in zip(network.nodes, resized.nodes) {
            if let frozen = (full.layer as? BatchNorm)?.frozen { (small.layer as? BatchNorm)?.frozen = frozen }
        }
        resized.reserve(maxBatch: microBatch)
        trainingNetwork = resized
        stepper = DataParallelStep(network: resized, groups: fullSizeStepper.groups, firstNode: 0, communicator: comm, overlap: config.overlap,
                                   bucketBytes: Int(config.bucketMiB * 1_048_576), batchCapacity: balancer.largestPossibleShare,
                                   sharingReductionWith: fullSizeStepper)
        stepper.waitsPolitely = fullSizeStepper.waitsPolitely
        stepper.labelSmoothing = fullSizeStepper.labelSmoothing
    }

    // MARK: - One step

    public struct StepResult {
        public var lossSum: Double
        public var correct: Double
        public var count: Double
    }

    /// Forward, loss, backward, all-reduce, update on this rank's part of `plan`'s `step`
    /// (prepared by the loader while the previous step ran).
    public func trainStep(plan: EpochPlan, step: Int) throws -> StepResult {
        let inputStart = Timeline.mark(timeline)
        let batch = source.trainBatch(plan: plan, step: step, size: trainingSize, stepper: stepper)
        timeline?.record("input wait", "input", since: inputStart)
        stepper.timeline = timeline?.recording == true ? timeline : nil
        var context = PassContext(training: true, seed: config.seed, step: globalStep,
                                  firstSample: plan.firstPosition(step: step, rank: comm.rank))
        if let group = balancer.group {
            // Each group's statistics count 1/groups of the step's, times the ranks that average them.
            let groups = (plan.globalCount(step: step) + group - 1) / group
            context.normalizationGroup = group
            context.groupWeight = Double(comm.size) / Double(groups)
        }
        stepper.heartbeat = watchdog == nil ? nil : globalStep + 1
        // Each rank's part of the parted sums follows its share of the batch.
        if let parted = stepper.reduction as? PartedReduction, parted.weights != balancer.shares { parted.weights = balancer.shares }
        // The weights' average follows them in the optimizer's pass; BatchNorm's statistics after.
        let averageDecay = config.emaDecay.map { WeightAverage.decay($0, step: globalStep + 1) }
        let result = try stepper.run(batch: batch.count, input: batch.input, normalizer: plan.globalCount(step: step),
                                     context: context, learningRate: schedule.rate(at: globalStep), weightDecay: config.weightDecay,
                                     update: globalStep, average: averageDecay.map { (emaParameters, $0) })
        globalStep += 1
        if let averageDecay {
            let averaging = Timeline.mark(timeline)
            defer { timeline?.record("moving average", "compute", since: averaging) }
            WeightAverage.update(emaState, toward: network.state, decay: averageDecay)
        }
        return StepResult(lossSum: result.lossSum, correct: Double(result.correct), count: Double(batch.count))
    }

    // MARK: - Evaluation and consistency

    /// Averages BatchNorm moving statistics across ranks (each rank saw its own batches).
    public func averageBatchNormState() throws {
        guard comm.size > 1, network.state.count > 0 else { return }
        // Frozen layers (fine-tuning) keep their statistics bit for bit.
        guard network.hasTrainableBatchNorm else { return }
        let scale = 1 / Float(comm.size)
        for state in [network.state, emaState] where state.count > 0 {
            try comm.allReduceSum(state.pointer, count: state.count)
            for i in 0..<state.count { state.pointer[i] *= scale }
        }
    }

    /// Validation loss and accuracy over every rank's block, reduced: of the moving average
    /// when there is one, and with `config.validationTTA` of the mean of each image's and its
    /// mirror image's probabilities (Kaggle's logloss, p clipped to [1e-15, 1 − 1e-15]).
    public func evaluate() throws -> (loss: Double, accuracy: Double) {
        try withEvaluatedWeights { try evaluateLoadedWeights(stoppable: false, progress: nil)! }
    }

    /// The same, stopped when a stop signal comes: after each pass the ranks agree, in a small
    /// all-reduce, whether any of them was signalled, and all of them return nil together. So a
    /// long evaluation (vgg at 299 px: minutes) does not hold a preempted run's checkpoint back.
    /// `progress` (every rank) gets the images evaluated so far over all ranks, and the total.
    public func evaluateUnlessStopped(progress: ((_ done: Int, _ total: Int) -> Void)? = nil) throws -> (loss: Double, accuracy: Double)? {
        try withEvaluatedWeights { try evaluateLoadedWeights(stoppable: true, progress: progress) }
    }

    private func evaluateLoadedWeights(stoppable: Bool, progress: ((Int, Int) -> Void)?) throws -> (loss: Double, accuracy: Double)? {
        let tta = config.validationTTA == true
        let batch = network.maxBatch
        let count = source.localValidationCount
        var lossSum = 0.0, correct = 0.0
        var start = 0
        let context = PassContext(training: false)
        var evaluated = 0
        while true {
            if start < count {
                let chunk = start..<min(start + batch, count)
                start = chunk.upperBound
                let n = source.validationBatch(chunk, network: network, node: firstNode, labels: evaluationLabels.pointer)
                if n > 0 {
                    let logits = network.forward(batch: n, context: context, from: firstNode)
                    if tta {
                        let plain = (0..<n).map { Double(logits[$0]) }
                        source.mirrorValidationBatch(chunk, written: n, network: network, node: firstNode)
                        let mirrored = network.forward(batch: n, context: context, from: firstNode)
                        for i in 0..<n {
                            let p = BinaryCrossEntropy.mirrorTTAProbability(logit: plain[i], mirroredLogit: Double(mirrored[i]))
                            let label = evaluationLabels.pointer[i] > 0.5
                            lossSum += BinaryCrossEntropy.logLoss(probability: p, dog: label)
                            if (p > 0.5) == label { correct += 1 }
                        }
                    } else {
                        let result = BinaryCrossEntropy.forwardBackward(logits: logits, labels: evaluationLabels.pointer, count: n,
                                                                        normalizer: 1, dLogits: dLogits.pointer)
                        lossSum += result.lossSum
                        correct += Double(result.correct)
                    }
                    evaluated += n
                }
            }
            guard stoppable else {
                if start < count { continue }
                break
            }
            // Every rank takes part in every round, with a pass or without one, until no rank
            // has images left: [asked to stop, images left, images done], over all ranks.
            var round = [stopSignal() != 0 ? 1.0 : 0, Double(count - start), Double(start)]
            try comm.allReduceSum(&round)
            if round[0] > 0 { return nil }
            progress?(Int(round[2]), Int(round[1] + round[2]))
            if round[1] == 0 { break }
        }
        var totals = [lossSum, correct, Double(evaluated)]
        try comm.allReduceSum(&totals)
        guard totals[2] > 0 else { return (.nan, .nan) }
        return (totals[0] / totals[2], totals[1] / totals[2])
    }

    /// A checksum of the trainable weights (`checksum`). (BatchNorm moving statistics are
    /// per-rank between averagings, so they are not part of it.)
    public func weightsChecksum() -> UInt64 {
        Self.checksum(network.parameters.pointer, count: network.parameters.count)
    }

    /// FNV-1a (64-bit) over the bit patterns of `count` floats, in four chains (each takes every
    /// fourth float) folded together with the count at the end. Byte by byte in one chain it
    /// took about 7 ms for resnet's 7.8 MB of weights every `checksumEvery` steps, all ranks
    /// waiting; four chains of whole words take a sixteenth of the dependent steps.
    static func checksum(_ p: UnsafePointer<Float>, count n: Int) -> UInt64 {
        let prime: UInt64 = 0x100_0000_01B3
        var h0: UInt64 = 0xCBF2_9CE4_8422_2325, h1 = h0, h2 = h0, h3 = h0
        var i = 0
        while i + 4 <= n {
            h0 = (h0 ^ UInt64(p[i].bitPattern)) &* prime
            h1 = (h1 ^ UInt64(p[i + 1].bitPattern)) &* prime
            h2 = (h2 ^ UInt64(p[i + 2].bitPattern)) &* prime
            h3 = (h3 ^ UInt64(p[i + 3].bitPattern)) &* prime
            i += 4
        }
        while i < n {
            h0 = (h0 ^ UInt64(p[i].bitPattern)) &* prime
            i += 1
        }
        var hash = h0
        for part in [h1, h2, h3, UInt64(n)] { hash = (hash ^ part) &* prime }
        return hash
    }

    public struct DivergedWeights: Error, CustomStringConvertible {
        public var step: Int
        public var description: String {
            "the ranks' weights differ at step \(step) (checksums disagree): a rank computed a different update; stopping"
        }
    }

    public func checkWeightsAgree() throws {
        let sum = weightsChecksum()
        let (low, high) = try comm.allReduceMinMax(sum)
        if low != high { throw DivergedWeights(step: globalStep) }
    }

    /// Stretches or shrinks the schedule to `totalSteps` (time budgets), identically on all ranks.
    public func setSchedule(_ schedule: LearningRateSchedule) { self.schedule = schedule }

    public func setScheduleTotalSteps(_ totalSteps: Int) {
        schedule.totalSteps = max(totalSteps, schedule.warmupSteps + 1)
    }

    /// Keeps the weights the last evaluation scored (rank 0).
    public func rememberBest() {
        guard comm.rank == 0 else { return }
        withEvaluatedWeights {
            bestParameters.copy(from: network.parameters)
            bestState.copy(from: network.state)
        }
    }

    /// Every rank takes rank 0's best weights (collective).
    public func restoreBest() throws {
        if comm.rank == 0 {
            network.parameters.copy(from: bestParameters)
            network.state.copy(from: bestState)
        }
        try comm.broadcast(network.parameters)
        try comm.broadcast(network.state)
    }
}
