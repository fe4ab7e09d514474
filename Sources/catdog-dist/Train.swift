import ArgumentParser
import CatdogCheckpoint
import CatdogData
import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import CatdogTraining
import Foundation

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model, one process or data-parallel under mpirun.",
        discussion: """
            Run alone (`catdog-dist train --data train/ --checkpoint-dir ck`) or as N ranks \
            (`mpirun -np N catdog-dist train ...`, also across machines with --hostfile). \
            --batch-size is the global batch: each rank takes batch/N of it, so results do not \
            depend on N. Each rank decodes and augments only its slice of every batch, one step \
            ahead on a helper thread (--cache none), or copies it from decoded images held once \
            per machine in shared memory (--cache node); --cache auto picks by size and says why. \
            Large inputs (e.g. --model vgg --image-size 299) go through the network in \
            micro-batches whose gradients add up (--micro-batch), so memory per rank stays bounded.

            Transfer learning (--model efficientnet-lite0, -lite1 or -lite2 --init-from FILE from \
            `catdog-dist import`): the frozen backbone runs once over the images (1/N per rank) and a \
            logistic head trains on the pooled features; with --freeze until:N, blocks N… and the head then fine-tune \
            together for --epochs (default 4) at --lr (default 1e-4; the blocks at \
            --backbone-lr-scale times it), BatchNorm in inference mode; with flip in --augment \
            (the default) the kept activation maps are mirrored at random.

            Stopping: SIGTERM, SIGINT (Ctrl-C) or SIGUSR1 make every rank finish its step (or \
            evaluation pass: an evaluation is cut short and redone on resume) and write one checkpoint, then exit 128 + the signal; `--resume auto` continues bit-exactly. Under mpirun \
            send SIGUSR1 to mpirun (it forwards it at once; its own SIGTERM and Ctrl-C handling give the \
            ranks only a second). A second signal 2 s or more later stops at once.

            Examples:
              catdog-dist train --data ../shared/data/dogs-vs-cats/train --checkpoint-dir ck
              mpirun -np 2 catdog-dist train --data train/ --model vgg --epochs 30 --checkpoint-dir ck
              mpirun -np 2 catdog-dist train --data train/ --model efficientnet-lite0 --init-from lite0.safetensors.zst --checkpoint-dir ck-lite0
            """)

    @Option(help: "Training folder: Kaggle names (cat.1.jpg, dog.2.jpg) or subfolders cats/ and dogs/.")
    var data: String

    @OptionGroup var shape: ModelOptions

    @Option(help: "Total epochs of the run, counting those done before a resume (as Keras's fit(epochs=N)). Default: a run from scratch with neither --epochs nor --time-budget fills \(Int(Recipe.standard.timeBudget / 60)) minutes (--time-budget \(Int(Recipe.standard.timeBudget))); transfer learning: the head \(FeatureExtraction.HeadConfig().epochs), fine-tuning \(FineTuning.Config().epochs).")
    var epochs: Int?

    @Option(help: "Optimizer: \(OptimizerKind.allCases.map(\.rawValue).joined(separator: ", ")) (adamw: Adam with decoupled weight decay; lamb: adamw with a per-tensor trust ratio, for large batches). (default: \(Recipe.standard.optimizer.rawValue); transfer learning: adam)")
    var optimizer: OptimizerKind?

    @Option(help: "Peak learning rate (default: \(OptimizerKind.adamw.defaultLearningRate) for \(OptimizerKind.allCases.filter { $0 != .sgd }.map(\.rawValue).joined(separator: "/")), \(OptimizerKind.sgd.defaultLearningRate) for sgd, times min(B/\(Recipe.referenceBatch), \(Int(Recipe.largeBatchMaxRateScale))) for a global batch B above \(Recipe.referenceBatch); transfer learning: the head \(FeatureExtraction.HeadConfig().learningRate), fine-tuning \(FineTuning.Config().learningRate)).")
    var lr: Float?

    @Option(help: "Momentum for sgd. (default: \(TrainingConfig().momentum))")
    var momentum: Float?

    @Option(help: "Weight decay λ on kernels: with adamw the kernels shrink by lr·λ each step; with the others λ·w joins their gradients (L2). (default: \(Recipe.standard.weightDecay) with adamw or lamb, else 0; transfer learning: the head \(FeatureExtraction.HeadConfig().weightDecay))")
    var weightDecay: Float?

    @Option(help: "Warmup in epochs: the learning rate rises linearly over it. (default: \(TrainingConfig().warmupEpochs), times min(B/\(Recipe.referenceBatch), \(Int(Recipe.largeBatchWarmupEpochs))) for a global batch B above \(Recipe.referenceBatch))")
    var warmupEpochs: Double?

    @Option(help: "Learning-rate decay after warmup: cosine, step or constant. (default: \(TrainingConfig().decay.rawValue))")
    var decay: LearningRateSchedule.Decay?

    @Option(help: "Augmentation: a list of flip, color, crop, scale (random zoom 0.9-1.4x and aspect 3:4-4:3 of the crop), cutout:F (a square of F times the input's side, at a random place, set to grey; `cutout` is cutout:\(Augmentation.defaultCutout); it pays in runs long enough to overfit); all (flip, color, crop), or none. (default: \(Recipe.standard.augmentation.description), and cutout:\(Recipe.standard.longRun!.cutout) too in a run that fills a budget holding at least \(Int(Recipe.standard.longRun!.cutoutFromEpochs)) epochs of the larger sizes (see --train-size), e.g. --time-budget 5400 on 2 cores of a Zen 4; the log says)")
    var augment: String?

    @Option(help: "How a non-square image becomes square: squash or crop (centre). (default: \(TrainingConfig().fit.rawValue))")
    var fit: Resize.Fit?

    @Option(help: "Pixel scaling: unit ([0,1]), symmetric ([-1,1], Keras 'tf' mode). (default: \(TrainingConfig().scale.rawValue))")
    var pixels: Preprocessing.Scale?

    @Option(help: """
        Validate, keep as best, and write into checkpoints an exponential moving average of the \
        weights with this decay per update (e.g. 0.999); training continues from the live weights. \
        0 = off. (default: \(Recipe.standard.ema.map { "\($0)" } ?? "off"), to the power B/\(Recipe.referenceBatch) for a global batch B above \(Recipe.referenceBatch), the same horizon in images; transfer learning: off)
        """)
    var ema: Double?

    @Option(help: """
        Label smoothing ε: the loss pulls a dog's probability toward 1 − ε/2 and a cat's toward \
        ε/2 instead of 1 and 0 (e.g. 0.1); the training loss printed stays the plain logloss. For \
        runs from scratch and --freeze none. (default: 0, off)
        """)
    var labelSmoothing: Double?

    @Option(help: "Validation scores each image as the mean of its and its mirror image's probabilities (flip), as `evaluate --tta-flip` and `submit` do, or the image alone (none); the best epoch is chosen by it. (default: flip)")
    var valTta: ValidationTTA?

    @Option(help: """
        Progressive resizing: train the first epochs at this input size, growing in steps of \
        \(TrainingConfig.resizeStep) px to --image-size by \(Int(TrainingConfig.resizeReach * 100))% of the run (e.g. --resize-from 64 \
        --image-size 128); validation, checkpoints and inference use --image-size. For models \
        whose weights do not depend on the input size (the resnets, efficientnet-lite0). Under a time \
        budget the run first times a few synthetic steps at each size (seconds), so that its \
        estimate of the epochs the budget holds prices each epoch at its own size. (default: off)
        """)
    var resizeFrom: Int?

    @Option(help: """
        Train at this input size, and validate, checkpoint and predict at --image-size: the same \
        crop of each image at more pixels, which suits a network trained on random crops (objects \
        look larger in them; "FixRes"). E.g. --train-size 64 --image-size 80. With --resize-from, \
        the growth ends at this size. For models with global pooling (the resnets). (default: a run \
        from scratch of a resnet that names none of --image-size, --train-size and --resize-from \
        trains at \(Recipe.standard.trainSize) and scores at \(Recipe.standard.imageSize), or, when it fills a budget \
        that holds at least \(Int(Recipe.standard.longRun!.fromEpochs)) epochs of them on this machine (a few steps measure \
        its speed at the start; the log says), from \(Recipe.standard.longRun!.resizeFrom) growing to \
        \(Recipe.standard.longRun!.trainSize) and scores at \(Recipe.standard.longRun!.imageSize); else --image-size)
        """)
    var trainSize: Int?

    @Option(help: "Fraction of each class held out for validation. (default: \(TrainingConfig().validationFraction))")
    var valFraction: Double?

    @Option(help: ArgumentHelp("Validate after every Nth epoch and after the last (Keras's validation_freq), or auto: every epoch, but in a run that fills its time budget \(TrainingConfig.budgetValidationSchedule) on (validating an unfinished model early costs training time: at the scoring size with mirror TTA, a tenth of a 30-minute run). --patience counts epochs, and stops only after a validation. (default: auto)", valueName: "auto|N"))
    var validateEvery: String?

    @Option(help: "Stop after this many epochs without a lower validation loss (0 = never); the best weights are kept. (default: \(TrainingConfig().patience) with --epochs, 0 in a run that fills its time budget; transfer learning: the head \(FeatureExtraction.HeadConfig().patience), fine-tuning \(FineTuning.Config().patience))")
    var patience: Int?

    @Option(help: "End training cleanly after this many seconds; the learning-rate schedule fits itself to it. Without --epochs the run fills the budget: as many epochs as fit, the schedule ending with the budget, no early stopping unless --patience is given. The recipe is the same whatever the length, but for its sizes and cutout: a budget that holds enough epochs takes larger sizes (see --train-size), one that holds many of them cutout too (see --augment). (default: \(Int(Recipe.standard.timeBudget)) when --epochs is not given either; transfer learning: none)")
    var timeBudget: Double?

    @Option(help: "Random seed: initial weights, split, data order, augmentation, dropout. (default: \(TrainingConfig().seed))")
    var seed: UInt64?

    @Option(help: "Folder for metrics.jsonl and checkpoints (created if missing).")
    var checkpointDir: String

    @Option(help: "Also checkpoint every this many steps (0 = only at epoch ends).")
    var checkpointEvery = 0

    @Option(help: "Number of numbered checkpoints to keep (best and last are kept besides).")
    var keep = 3

    @Option(help: "Continue from a checkpoint: `auto` (the newest in --checkpoint-dir that verifies, or start fresh) or a file path.")
    var resume: String?

    @Flag(help: "Start a fresh run in a --checkpoint-dir that holds another run, deleting its checkpoints and metrics.")
    var overwrite = false

    @Option(help: "Start from these ImageNet weights: the file `catdog-dist import` wrote (transfer learning). (default --model: the network the file holds)")
    var initFrom: String?

    @Option(help: """
        Transfer learning (efficientnet-liteN): `backbone` trains a new head on the frozen \
        ImageNet backbone's features; `until:N` then fine-tunes blocks N to the last (Lite0 has \
        blocks 0-15, Lite1 0-20, Lite2 0-20) with the \
        head, from activations kept in memory; `none` fine-tunes the whole network on streamed \
        images (BatchNorm in inference mode), resumable like any run.
        """)
    var freeze = FreezeSpec.backbone

    @Flag(inversion: .prefixedNo, help: """
        Transfer learning with the frozen backbone: divide the head's logits by a temperature \
        fitted on the validation images when that lowers their loss with each half's temperature \
        fitted on the other half (the log says by how much).
        """)
    var calibrate = true

    @Option(help: "Fine-tuning: the unfrozen blocks' learning rate as a fraction of the head's (--lr).")
    var backboneLrScale = FineTuning.Config().backboneScale

    @Option(help: """
        Where pixels come from: `none` streams (each rank decodes its slice of every batch from \
        the files: memory does not grow with the data set); `node` decodes every image once into \
        memory shared by the ranks of each machine; `auto` takes `node` when that needs at most a \
        tenth of the memory available, else streams.
        """)
    var cache: TrainingData.Cache = .auto

    @Option(help: """
        Samples per forward/backward pass; the rank's slice of the batch is split into micro-batches \
        whose gradients add up before the all-reduce (gradient accumulation). Default: as few as keep \
        activations within a twelfth of the memory available per rank on the machine (128 MiB to \
        1 GiB). BatchNorm normalizes each micro-batch by its own statistics.
        """)
    var microBatch: Int?

    @Option(help: """
        Seconds a rank may wait beyond the expected time of a step (the slowest so far), an \
        evaluation or a checkpoint before it decides a peer, host or link is gone, says where it \
        was, and ends (exit 75) so that the job stops instead of hanging; it warns at half. 0 turns \
        it off. Runs under mpirun only.
        """)
    var stallTimeout: Double = 30

    @Option(help: """
        Write where every rank's time goes (input wait, forward, backward, each gradient bucket's \
        all-reduce, the exposed wait, optimizer, checkpoints, evaluation) as Chrome trace-event JSON \
        to this file, one track per rank: open it in chrome://tracing or ui.perfetto.dev. It covers \
        the first --timeline-steps updates of the run.
        """)
    var timeline: String?

    @Option(help: "Updates the --timeline covers, from the start (or the resume) of the run.")
    var timelineSteps = 100

    @Option(help: """
        How each global batch is split among the ranks: `even` (B/N each), `auto` (each rank's \
        share follows its measured compute speed, estimated after \(Balancer.firstWindow + 1) steps and \
        again every \(Balancer.window): \
        for labs of unequal machines), or weights, one a rank in rank order (`2,1,1`). With \
        `auto` or weights, BatchNorm normalizes groups of --ghost-batch samples and shares are \
        whole groups, so a step computes the same (up to float rounding) whichever rank holds \
        which samples; a rank takes at most \(Balancer.largestShareFactor)x the even share, and the \
        global batch need not divide by the rank count. (default: even)
        """)
    var balance: String?

    @Option(help: """
        Ghost batch normalization: BatchNorm's statistics over groups of this many samples \
        instead of each rank's whole slice; must divide --batch-size. Smaller groups let \
        --balance split finer; groups of 2 cost validation loss (docs/across-machines.md). \
        (default: off with --balance even; with auto or weights, the largest divisor of \
        --batch-size at most an eighth of the even share, or 4 when that is less)
        """)
    var ghostBatch: Int?

    @OptionGroup var compute: ComputeOptions
    @OptionGroup var allReduce: AllReduceOptions
    @OptionGroup var faults: FaultOptions

    var model: String { shape.model }

    mutating func validate() throws {
        // Without --model, the file `import` wrote names the network.
        if shape.givenModel == nil, let initFrom {
            let held: String
            // The header alone: the run reads and verifies the whole file once it starts.
            do { held = try LoadedCheckpoint.model(path: initFrom) } catch { throw ValidationError("--init-from: \(error)") }
            guard EfficientNetLite(model: held) != nil else {
                throw ValidationError("--init-from \(initFrom) holds \(held), not ImageNet weights that `catdog-dist import` wrote (efficientnet-lite0, -lite1 or -lite2): to continue a run use --resume")
            }
            shape.givenModel = held
        }
        if let epochs, epochs <= 0 { throw ValidationError("--epochs must be positive") }
        guard keep > 0 else { throw ValidationError("--keep must be positive") }
        guard checkpointEvery >= 0 else { throw ValidationError("--checkpoint-every must be 0 or positive") }
        if let valFraction, !(valFraction > 0 && valFraction < 1) { throw ValidationError("--val-fraction must be in (0, 1)") }
        if let lr, !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be a positive number") }
        if let momentum, !(momentum >= 0 && momentum < 1) { throw ValidationError("--momentum must be in [0, 1)") }
        if let weightDecay, !(weightDecay >= 0 && weightDecay.isFinite) { throw ValidationError("--weight-decay must be 0 or a positive number") }
        if let warmupEpochs, !(warmupEpochs >= 0 && warmupEpochs.isFinite) { throw ValidationError("--warmup-epochs must be 0 or a positive number") }
        if let patience, patience < 0 { throw ValidationError("--patience must be 0 (never stop early) or positive") }
        _ = try validationEvery()
        if let timeBudget, !(timeBudget > 0 && timeBudget.isFinite) { throw ValidationError("--time-budget must be a positive number of seconds") }
        if let trainSize {
            guard trainSize >= 16, trainSize < shape.imageSize else {
                throw ValidationError("--train-size must be at least 16 and smaller than --image-size (\(shape.imageSize)), e.g. --train-size 64 --image-size 80")
            }
        }
        if resizeFrom != nil || trainSize != nil {
            let top = trainSize ?? shape.imageSize
            let option = resizeFrom != nil ? "--resize-from" : "--train-size"
            if let resizeFrom {
                guard resizeFrom >= 16, resizeFrom < top else {
                    throw ValidationError("--resize-from must be at least 16 and smaller than \(trainSize != nil ? "--train-size" : "--image-size") (\(top))")
                }
            }
            let full = try? ModelZoo.builder(model, imageSize: shape.imageSize).counts()
            for size in Array(Swift.stride(from: resizeFrom ?? top, to: top, by: TrainingConfig.resizeStep)) + [top] {
                let counts = try? ModelZoo.builder(model, imageSize: size).counts()
                guard let counts, let full, counts == full else {
                    throw ValidationError("\(option): \(model) has other weights at \(size)x\(size) than at \(shape.imageSize)x\(shape.imageSize); training at another size than --image-size needs a model with global pooling (resnet)")
                }
            }
        }
        if let ema, !(ema >= 0 && ema < 1) { throw ValidationError("--ema must be in [0, 1): e.g. 0.999, or 0 for off") }
        if let labelSmoothing {
            guard RunLimits.labelSmoothing.contains(labelSmoothing) else {
                throw ValidationError("--label-smoothing must be from 0 (off) to \(RunLimits.labelSmoothing.upperBound): e.g. 0.1")
            }
            guard lite == nil || freeze == .none else {
                throw ValidationError("--label-smoothing is for runs from scratch and --freeze none; the head on frozen features is fitted to the plain labels (and calibrated)")
            }
        }
        if let microBatch, !RunLimits.globalBatch.contains(microBatch) {
            throw ValidationError("--micro-batch must be between 1 and \(RunLimits.globalBatch.upperBound)")
        }
        guard stallTimeout >= 0, stallTimeout <= 1e6 else { throw ValidationError("--stall-timeout must be 0 (off) or a number of seconds up to 1000000") }
        guard backboneLrScale >= 0, backboneLrScale <= 1e3 else { throw ValidationError("--backbone-lr-scale must be a number from 0 to 1000") }
        guard (1...100_000).contains(timelineSteps) else { throw ValidationError("--timeline-steps must be between 1 and 100000") }
        guard keep <= 100_000, checkpointEvery <= RunLimits.steps.upperBound else {
            throw ValidationError("--keep (at most 100000) or --checkpoint-every (at most 2^40) is too large")
        }
        // Every number of the run's configuration, by the ranges a checkpoint's are read with.
        if let problem = try makeConfig().problem { throw ValidationError("an option is out of range: \(problem)") }
        _ = try augmentation()
        if let lite, case .until(let n) = freeze, n > lite.blocks {
            throw ValidationError("--freeze until:\(n) is past \(model)'s blocks 0-\(lite.blocks - 1): use until:N with N from 0 to \(lite.blocks) (\(lite.blocks) = only the head convolution trains)")
        }
        if lite == nil, freeze != .backbone || initFrom != nil {
            throw ValidationError("--freeze and --init-from are for transfer learning with --model efficientnet-lite0, -lite1 or -lite2 (see `catdog-dist import`); \(model) trains from scratch")
        }

    }

    func augmentation() throws -> Augmentation? {
        guard let augment else { return nil }
        do { return try Augmentation(parsing: augment) } catch { throw ValidationError("\(error)") }
    }

    /// `--validate-every`: N epochs, or nil for auto (or when not given).
    func validationEvery() throws -> Int? {
        guard let validateEvery, validateEvery != "auto" else { return nil }
        guard let every = Int(validateEvery), (1...TrainingConfig.budgetEpochCap).contains(every) else {
            throw ValidationError("--validate-every must be auto or a whole number of epochs from 1 to \(TrainingConfig.budgetEpochCap), got '\(validateEvery)'")
        }
        return every
    }

    /// The library's defaults, with what the user set on the command line.
    func makeConfig() throws -> TrainingConfig {
        var c = TrainingConfig()
        c.model = model
        c.imageSize = shape.imageSize
        if let epochs { c.epochs = epochs }
        c.globalBatch = shape.batchSize
        if let optimizer { c.optimizer = optimizer }
        c.learningRate = lr
        if let momentum { c.momentum = momentum }
        if let weightDecay { c.weightDecay = weightDecay }
        if let warmupEpochs { c.warmupEpochs = warmupEpochs }
        if let decay { c.decay = decay }
        if let augmentation = try augmentation() { c.augmentation = augmentation }
        if let fit { c.fit = fit }
        if let pixels { c.scale = pixels }
        if let valFraction { c.validationFraction = valFraction }
        if let patience { c.patience = patience }
        c.validateEvery = try validationEvery()
        if let ema { c.ema = ema > 0 ? ema : nil }
        if let labelSmoothing { c.labelSmoothing = labelSmoothing > 0 ? labelSmoothing : nil }
        c.resizeFrom = resizeFrom
        c.trainSize = trainSize
        // The recipe's sizes (trained at 64, scored at 80) where the command line names none;
        // `recipeSizes` may take the larger ones for a run that fills its budget.
        if lite == nil, shape.givenImageSize == nil, trainSize == nil, resizeFrom == nil, Recipe.standard.scoresLarger(model) {
            c.imageSize = Recipe.standard.imageSize
            c.trainSize = Recipe.standard.trainSize
        }
        c.validationTTA = (valTta ?? .flip) == .flip
        // The recipe, for what the user did not set, and its length when none is named
        // (transfer learning has its own defaults).
        c.timeBudget = timeBudget ?? (lite == nil && epochs == nil ? Recipe.standard.timeBudget : nil)
        if c.timeBudget != nil, epochs == nil {
            c.fillsBudget = true
            c.epochs = TrainingConfig.budgetEpochCap
            if patience == nil { c.patience = 0 }
        }
        if lite == nil {
            Recipe.standard.apply(to: &c, optimizerGiven: optimizer != nil, weightDecayGiven: weightDecay != nil,
                                  emaGiven: ema != nil, augmentationGiven: augment != nil,
                                  learningRateGiven: lr != nil, warmupGiven: warmupEpochs != nil)
        }
        if let seed { c.seed = seed }
        c.overlap = allReduce.overlap
        c.bucketMiB = allReduce.bucketMib
        if let compression = allReduce.givenCompression { c.compression = compression }
        if let topology = allReduce.givenTopology { c.allReduceTopology = topology }
        if let split = try batchSplit() { c.balance = split == .even ? nil : split.description }
        c.ghostBatch = ghostBatch
        return c
    }

    func batchSplit() throws -> BatchSplit? {
        guard let balance else { return nil }
        guard let split = BatchSplit(parsing: balance) else {
            throw ValidationError("--balance \(balance.prefix(40)) is not `even`, `auto` or weights such as `2,1,1` (positive numbers, one a rank)")
        }
        return split
    }

    func run() throws {
        if lite != nil, freeze != .none || resume != nil && initFrom == nil { return try runTransfer() }
        try runDistributed(faults: faults, machineRanks: allReduce.machineRanks) { comm in
            let log = RankLog(comm)
            // From here on SIGTERM, SIGINT and SIGUSR1 ask for a checkpoint and a clean stop.
            do { try StopSignals.install(announce: comm.rank == 0) } catch {
                log.info("warning: cannot catch stop signals (\(error)); SIGTERM will end the run without a checkpoint")
            }
            try compute.apply()
            let folder = try RunFolder.claim(checkpointDir, keep: keep, resuming: resume != nil, overwrite: overwrite,
                                             slurmJob: ProcessInfo.processInfo.environment["SLURM_JOB_ID"], communicator: comm, log: log.info)
            defer { withExtendedLifetime(folder) {} }
            try checkTimelinePath(comm)
            let store = folder.store
            var config = try makeConfig()
            var preprocessing: Preprocessing?
            // --freeze none: all of the EfficientNet-Lite fine-tunes from its ImageNet weights, on
            // streamed images at its own input size and scaling, BatchNorm in inference mode.
            var initial: LoadedCheckpoint?
            if lite != nil, let initFrom {
                initial = try importedModel(initFrom)
                fineTuneAll(from: initial!, config: &config)
                preprocessing = initial!.metadata.preprocessing
            }
            var checkpoint = try folder.resumePoint(resume, communicator: comm, log: log.info)
            var changedSchedule = false
            if let checkpoint {
                let m = checkpoint.metadata
                let resumed = try resumedConfig(m.config)
                config = resumed.config
                changedSchedule = resumed.schedule
                for change in resumed.applied { log.info("resuming with \(change)") }
                preprocessing = m.preprocessing
                if m.finished, config.fillsBudget == true || config.epochs <= m.epoch {
                    log.info("\(checkpoint.path) is a finished run (\(m.epoch) epochs, best val_loss \(m.bestValidationLoss.map { String(format: "%.4f", $0) } ?? "-")); nothing to do. Pass a larger --epochs to train on.")
                    return
                }
            }
            // bf16 by default for a network trained from scratch, where every rank has it.
            let precision = try compute.agreedPrecision(default: .auto, model: config.model, comm: comm)
            let convolution = compute.convolutionOptions(precision: precision.precision)
            var costs: StepCosts?
            if checkpoint == nil, leavesSizesOpen(config) { (config, costs) = try recipeSizes(for: config, convolution: convolution, comm: comm, log: log) }
            if costs == nil, config.timeBudget != nil, config.scheduleSizes.count > 1 {
                costs = measuredStepCosts(config, convolution: convolution, comm: comm, log: log).costs
            }
            let data = try loadData(config: config, preprocessing: preprocessing, comm: comm, log: log)
            let (budget, available) = try Trainer.agreedMemory(communicator: comm)
            let trainer = try Trainer(config: config, communicator: comm, data: data, microBatch: microBatch, activationBudget: budget,
                                      convolution: convolution, available: available)
            trainer.stopSignal = faults.stopSignal(rank: comm.rank, trainer: trainer)
            if let costs { trainer.stepCosts = costs }
            if let timeline { trainer.timeline = try Timeline(path: timeline, steps: timelineSteps, communicator: comm) }
            trainer.watchdog = watchdog(comm)
            trainer.onUnreadableCheckpoint = unreadableCheckpointHandler(warn: log.info)
            if lite != nil {
                for node in trainer.network.nodes { (node.layer as? BatchNorm)?.frozen = true }
                if let initial, checkpoint == nil {
                    try initial.loadWeights(into: trainer.network, prefix: "model/", statePrefix: "state/")
                    log.info("fine-tuning all of \(model) from \(initial.path) (BatchNorm in inference mode; its scale and shift train)")
                }
            }
            if let checkpoint {
                try restore(trainer, from: checkpoint, config: config, changedSchedule: changedSchedule, comm: comm, log: log)
            }
            checkpoint = nil  // the file's bytes are in the trainer now
            if comm.rank == 0 { trainer.events = openEvents(config: config, comm: comm, resumedAt: trainer.epoch, log: log) }
            describeRun(trainer, config: config, precision: precision, comm: comm, activationBudget: budget, log: log)
            let group = trainer.balancer.group
            let batchNorm = RunStart.BatchNormSamples(group: group,
                                                      atMost: group ?? min(trainer.microBatch, config.globalBatch / comm.size))
            try folder.recordStart(epoch: trainer.epoch, step: trainer.globalStep, precision: precision.precision, batchNorm: batchNorm,
                                   communicator: comm, log: log.info)
            let (summary, checkpointMilliseconds) = try fit(trainer, folder: folder, comm: comm, log: log)
            try finish(summary, trainer: trainer, store: store, checkpointMilliseconds: checkpointMilliseconds, config: config,
                       comm: comm, log: log)
        }
    }

    /// A run from scratch that fills its budget, names none of the sizes and trains a model
    /// that can take the recipe's larger ones.
    func leavesSizesOpen(_ config: TrainingConfig) -> Bool {
        lite == nil && shape.givenImageSize == nil && trainSize == nil && resizeFrom == nil && config.fillsBudget == true
            && Recipe.standard.takesLargerSizes(config.model)
    }

    /// The recipe's larger sizes when this machine trains enough epochs of them in the budget,
    /// else `config`'s, and what a step of each larger size costs when they are taken. The
    /// speed is measured before any image is decoded (`measuredStepCosts`); rank 0's figures
    /// decide for all, and the log says what it measured and chose. The run's checkpoints keep
    /// the sizes, so a resume does not choose again.
    func recipeSizes(for config: TrainingConfig, convolution: ConvolutionOptions, comm: Communicator,
                     log: RankLog) throws -> (TrainingConfig, StepCosts?) {
        guard let larger = Recipe.standard.longRun, let budget = config.timeBudget,
              let files = try? DataFolder.labeledFiles(in: data), !files.isEmpty else { return (config, nil) }  // loadData reports a bad folder
        let validation = DataFolder.split(files, validationFraction: config.validationFraction, seed: config.seed).validation.count
        let grownConfig = larger.applied(to: config)
        let (costs, rate, failure) = measuredStepCosts(grownConfig, convolution: convolution, comm: comm, log: nil)
        let standard = "\(config.trainSize ?? config.imageSize) px, scored at \(config.imageSize)"
        let grown = "\(larger.resizeFrom) px growing to \(larger.trainSize), scored at \(larger.imageSize)"
        let choose = "name --image-size, --train-size or --resize-from to choose"
        guard let costs else {
            log.info("sizes: training at \(standard): could not measure this machine's speed (\(failure)); \(choose)")
            return (config, nil)
        }
        let epochs = larger.epochs(budget: budget, imagesPerSecond: rate, trainImages: files.count - validation,
                                   validationImages: validation, config: config, costs: costs)
        let takes = epochs >= larger.fromEpochs
        let measured = String(format: "at %.0f images/s at %dx%d (measured just now, with the smaller sizes' steps at %@ of its time) the %.0f s budget holds ~%.0f epochs",
                              rate, larger.trainSize, larger.trainSize, describeCosts(costs), budget, epochs)
        let least = Int(larger.fromEpochs)
        log.info(takes ? "sizes: training from \(grown): \(measured) of them, and \(least) or more pay for them (else \(standard)); \(choose)"
                       : "sizes: training at \(standard): \(measured) of \(grown), fewer than the \(least) that pay for them; \(choose)")
        guard takes else { return (config, nil) }
        // Cutout, where the command line names no augmentation, in a budget long enough to overfit.
        guard augment == nil else { return (grownConfig, costs) }
        var chosen = grownConfig
        chosen.augmentation = larger.augmentation(grownConfig.augmentation, epochs: epochs)
        let cutoutLeast = Int(larger.cutoutFromEpochs), held = String(format: "~%.0f epochs of the larger sizes", epochs)
        log.info(chosen.augmentation.cutout != nil
                 ? "augment: \(chosen.augmentation.description): \(held), and \(cutoutLeast) or more pay for cutout; name --augment to choose"
                 : "augment: \(chosen.augmentation.description), without cutout: \(held), fewer than the \(cutoutLeast) where it pays; name --augment to choose")
        return (chosen, costs)
    }

    /// What a step costs at each size `config`'s schedule trains at (`StepCosts.sizesToMeasure`):
    /// a few steps of synthetic images on every rank at each size, twice, the all-reduce included
    /// (about ten seconds for 64 to 128 px on 2 ranks), rank 0's seconds for all; with the images
    /// a second at the largest size. nil and why when a size could not be measured; then the
    /// estimates price steps by their pixels. With `log`, says what it measured.
    func measuredStepCosts(_ config: TrainingConfig, convolution: ConvolutionOptions, comm: Communicator,
                           log: RankLog?) -> (costs: StepCosts?, rate: Double, failure: String) {
        // At most 32 images a rank: the synthetic steps run without micro-batches.
        let perRank = max(1, min(config.globalBatch / comm.size, 32))
        let sizes = StepCosts.sizesToMeasure(config)
        var seconds = [Double](repeating: .infinity, count: sizes.count), failure = "no speed measured"
        do {
            // Two rounds, the second from the largest size down, and each size's faster one
            // kept: a step slowed by something else (the first steps of the process, a busy
            // moment of the machine) would otherwise move the estimate by a tenth.
            for i in Array(sizes.indices) + sizes.indices.reversed() {
                let size = sizes[i]
                let rate = try Benchmark.run(model: config.model, imageSize: size, globalBatch: perRank * comm.size, steps: 4, warmupSteps: 1,
                                             overlap: config.overlap, bucketMiB: config.bucketMiB, compression: config.compression,
                                             allReduce: config.allReduceTopology, convolution: convolution,
                                             update: BenchmarkUpdate(optimizer: config.optimizer, momentum: config.momentum,
                                                                     weightDecay: config.weightDecay, ema: config.emaDecay),
                                             communicator: comm).images_per_s
                seconds[i] = min(seconds[i], rate > 0 ? Double(perRank * comm.size) / rate : 0)
            }
        } catch { failure = "\(error)"; seconds = seconds.map { _ in 0 } }
        do {
            try seconds.withUnsafeMutableBytes { try comm.broadcast($0.baseAddress!, bytes: $0.count, root: 0) }
        } catch { failure = "\(error)"; seconds = [] }
        let top = config.largestTrainingSize
        guard seconds.count == sizes.count, seconds.allSatisfy({ $0.isFinite && $0 > 0 }), let topSeconds = seconds.last else {
            log?.info("step costs: could not measure them (\(failure)); the time budget's estimate prices a step by its pixels")
            return (nil, 0, failure)
        }
        let costs = StepCosts(top: top, seconds: Dictionary(uniqueKeysWithValues: zip(sizes, seconds)))
        log?.info("step costs (measured just now): \(describeCosts(costs)) of a step at \(top)x\(top) (\(String(format: "%.0f", topSeconds * 1000)) ms); the time budget's estimate of the epochs it holds takes them")
        return (costs, Double(perRank * comm.size) / topSeconds, failure)
    }

    /// "64 px 0.31, 80 px 0.52, …": the measured sizes below the largest and their relative cost.
    func describeCosts(_ costs: StepCosts) -> String {
        costs.seconds.keys.sorted().filter { $0 != costs.top }
            .map { String(format: "%d px %.2f", $0, costs.relative($0)) }.joined(separator: ", ")
    }

    /// The images of --data, checked or decoded into the node cache, with the log's account of
    /// them (files that cannot be used are listed in the run folder's skipped-files.log).
    func loadData(config: TrainingConfig, preprocessing: Preprocessing?, comm: Communicator, log: RankLog) throws -> TrainingData {
        let data = try TrainingData(folder: self.data, config: config, communicator: comm, cache: cache,
                                    preprocessing: preprocessing) { log.info($0) }
        log.info("data: \(data.trainSamples.count) training and \(data.validationCount) validation images from \(self.data), \(data.cache == nil ? "checked" : "decoded") in \(String(format: "%.1f", data.decodeSeconds)) s; \(data.choice)")
        if let summary = data.skippedSummary {
            let details = (checkpointDir as NSString).appendingPathComponent("skipped-files.log")
            if comm.rank == 0 { try (data.skippedDetails.joined(separator: "\n") + "\n").write(toFile: details, atomically: true, encoding: .utf8) }
            log.info("\(summary) (details in \(details))")
        }
        return data
    }

    /// Trains to the end (or a stop signal) with the live progress line, rank 0 writing each
    /// checkpoint the loop asks for; the summary and each checkpoint's milliseconds.
    func fit(_ trainer: Trainer, folder: RunFolder, comm: Communicator, log: RankLog) throws -> (FitSummary, [Double]) {
        let progress = ProgressLine()
        defer { progress.clear() }
        var checkpointMilliseconds: [Double] = []
        let summary = try trainer.fit(
            metricsFile: folder.metricsPath,
            checkpointEvery: checkpointEvery,
            log: { progress.clear(); log.info($0) },
            progress: { progress.update($0) }
        ) { trainer, reason in
            guard comm.rank == 0 else { return }
            let started = Date()
            var best = false, finished = false
            switch reason {
            case .epochEnd(let improved): best = improved
            case .everySteps, .stopped: break
            case .finished(let complete): finished = complete
            }
            try trainer.withCheckpointParts(finished: finished) { _, parts in
                try folder.store.write(parts: parts, epoch: trainer.epoch, step: trainer.globalStep, best: best)
            }
            checkpointMilliseconds.append(Date().timeIntervalSince(started) * 1000)
        }
        return (summary, checkpointMilliseconds)
    }

    /// A checkpoint this run is writing that a resume would refuse is a fault of this program:
    /// a warning, once (the run goes on; the checkpoints before it still resume), or with
    /// CATDOG_CHECKPOINT_CHECK=strict (as the tests run) an error that stops the run.
    func unreadableCheckpointHandler(strict: Bool = ProcessInfo.processInfo.environment["CATDOG_CHECKPOINT_CHECK"] == "strict",
                                     warn: @escaping (String) -> Void) -> (String) throws -> Void {
        var warned = false
        return { problem in
            let text = "the checkpoint being written would not resume (\(problem)): a fault of catdog-dist; please report it with this log"
            if strict { throw UnreadableCheckpoint(text: text) }
            guard !warned else { return }
            warned = true
            warn("warning: \(text); training goes on, and the checkpoints before it still resume (--resume FILE)")
        }
    }

    struct UnreadableCheckpoint: Error, CustomStringConvertible {
        var text: String
        var description: String { text }
    }

    /// How the run ended, on every rank's log: a stop signal's checkpoint (then a resumable
    /// exit), or why it finished, the input pipeline's share, peak memory, time and checkpoints.
    func finish(_ summary: FitSummary, trainer: Trainer, store: CheckpointStore, checkpointMilliseconds: [Double],
                config: TrainingConfig, comm: Communicator, log: RankLog) throws {
        if case .signal(let signal) = summary.stop {
            let what = signal == 0 ? "a stop signal to another rank" : StopSignals.name(signal)
            let position = trainer.stepInEpoch == trainer.stepsPerEpoch
                ? "after the last step of epoch \(trainer.epoch + 1) (update \(trainer.globalStep)), before the end of the epoch (its evaluation and checkpoint)"
                : "at epoch \(trainer.epoch + 1), step \(trainer.stepInEpoch) of the epoch (update \(trainer.globalStep))"
            log.info("stopped by \(what) \(position); its checkpoint is \(store.lastPath): continue with --resume auto")
            throw ResumableStop(signal: signal == 0 ? SIGTERM : signal)
        }
        let how = switch summary.stop {
        case .epochs: "finished \(config.epochs) epochs"
        case .earlyStopping: "stopped early"
        case .timeBudget: config.fillsBudget == true ? "finished: the time budget is spent and the schedule with it"
            : "time budget spent (resume with --resume auto to continue)"
        case .signal: ""
        }
        let meanMs = checkpointMilliseconds.isEmpty ? 0 : checkpointMilliseconds.reduce(0, +) / Double(checkpointMilliseconds.count)
        var peak = [Double(MemoryStatus.peakResidentBytes() ?? 0)]
        try comm.allReduceMax(&peak)
        let source = trainer.source
        let prepared = source.preparedSamples > 0
            ? String(format: " (%d samples, %.0f a second)", source.preparedSamples, Double(source.preparedSamples) / max(source.prepareSeconds, 1e-9))
            : ""
        log.info(String(format: "input: rank 0's helper thread prepared batches in %.1f s of CPU", source.prepareSeconds) + prepared
                 + String(format: "; training waited %.1f s for them; peak memory (RSS) of the largest rank %.0f MiB",
                          source.waitSeconds, peak[0] / 1_048_576))
        log.info("\(how) in \(formatDuration(summary.seconds)); best val_loss \(String(format: "%.4f", summary.bestValidationLoss)); compute \(String(format: "%.1f", trainer.computeSeconds)) s, exposed all-reduce \(String(format: "%.1f", trainer.exposedCommSeconds)) s; \(checkpointMilliseconds.count) checkpoints, \(String(format: "%.0f", meanMs)) ms each; \(FileManager.default.fileExists(atPath: store.bestPath) ? "best weights in \(store.bestPath)" : "no best weights written (no validation loss)")")
    }

    /// `--freeze none` from `import`'s file: its input size and scaling, and fine-tuning's
    /// defaults for what the command line left open.
    func fineTuneAll(from loaded: LoadedCheckpoint, config: inout TrainingConfig) {
        config.imageSize = loaded.metadata.imageSize
        config.fit = loaded.metadata.preprocessing.fit
        config.scale = loaded.metadata.preprocessing.scale
        let tune = FineTuning.Config()
        if lr == nil { config.learningRate = tune.learningRate }
        if epochs == nil { config.epochs = tune.epochs }
        if patience == nil { config.patience = tune.patience }
        if weightDecay == nil { config.weightDecay = tune.weightDecay }
        if augment == nil { config.augmentation = Augmentation(flip: true, color: true) }
    }

    /// The stall watchdog of a run of several ranks (`--stall-timeout`), naming a silent peer
    /// from the heartbeats when there are any; nil alone or with the timeout off.
    func watchdog(_ comm: Communicator) -> StallWatchdog? {
        guard comm.size > 1, stallTimeout > 0 else { return nil }
        var peers: (@Sendable () -> String)?
        var silence: (@Sendable (Double, Int?) -> String?)?
        if let heartbeats = comm.heartbeats {
            peers = { heartbeats.report() }
            silence = { longerThan, except in
                heartbeats.silentPeer(longerThan: longerThan, except: except).map {
                    String(format: "rank %d on %@ has been silent for %.0f s", $0.peer.rank, $0.peer.host, $0.silence)
                }
            }
        }
        return StallWatchdog(timeout: stallTimeout, describe: "rank \(comm.rank) of \(comm.size) on \(comm.hostName)",
                             peers: peers, silence: silence,
                             stopSignal: { let signal = StopSignals.wait(upTo: $0); return signal == 0 ? nil : StopSignals.name(signal) })
    }

    /// The trainer at the resume point; the schedule from here on when --lr, --warmup-epochs or
    /// --decay were given on the resume.
    func restore(_ trainer: Trainer, from checkpoint: RunFolder.ResumePoint, config: TrainingConfig, changedSchedule: Bool,
                 comm: Communicator, log: RankLog) throws {
        try trainer.restore(metadata: checkpoint.metadata, path: checkpoint.path, from: checkpoint.checkpoint) { log.info($0) }
        if changedSchedule {
            var schedule = trainer.schedule
            schedule.baseRate = config.resolvedLearningRate
            schedule.warmupSteps = Int(config.warmupEpochs * Double(trainer.stepsPerEpoch))
            schedule.decay = config.decay
            trainer.setSchedule(schedule)
        }
        let m = checkpoint.metadata
        let elastic = m.ranks == comm.size ? "" : "; written by \(m.ranks) ranks, continuing on \(comm.size) with the same global batch \(config.globalBatch)"
        let position = m.stepInEpoch == trainer.stepsPerEpoch
            ? "after the last step of epoch \(m.epoch + 1) (update \(m.step)), which ends first (its evaluation and checkpoint)"
            : "epoch \(m.epoch + 1), step \(m.stepInEpoch) of the epoch (update \(m.step))"
        log.info("resumed from \(checkpoint.path): \(position)\(elastic)")
    }

    /// Rank 0's TensorBoard event file in the checkpoint folder, opened with the run's
    /// configuration as text (a resumed run adds a file; TensorBoard shows them as one run).
    func openEvents(config: TrainingConfig, comm: Communicator, resumedAt epoch: Int, log: RankLog) -> TensorBoardWriter? {
        do {
            let events = try TensorBoardWriter(directory: checkpointDir, hostName: comm.hostName)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let json = (try? encoder.encode(config)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            var hosts: [String: Int] = [:]
            for host in comm.hostNames { hosts[host, default: 0] += 1 }
            let placement = hosts.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value))" }.joined(separator: ", ")
            let text = """
                \(epoch == 0 ? "Started" : "Resumed after epoch \(epoch)") on \(comm.size) rank(s): \(placement); \
                global batch \(config.globalBatch) = \(comm.size) × \(config.globalBatch / comm.size).

                    \(CommandLine.arguments.joined(separator: " "))

                ```
                \(json)
                ```
                """
            try events.text("run", text, step: epoch)
            log.info("TensorBoard: tensorboard --logdir \(checkpointDir) (events in \((events.path as NSString).lastPathComponent))")
            return events
        } catch {
            log.info("warning: cannot write TensorBoard events in \(checkpointDir) (\(describe(error))); training goes on without them")
            return nil
        }
    }

    /// The run's set-up as the log's opening lines: model and recipe, the batch split,
    /// gradient compression, and memory per rank.
    func describeRun(_ trainer: Trainer, config: TrainingConfig, precision: (precision: Precision, why: String), comm: Communicator,
                     activationBudget: Int, log: RankLog) {
        log.info("model \(config.model) at \(config.imageSize)x\(config.imageSize)\(config.trainSize.map { ", trained at \($0)x\($0)" } ?? ""): \(trainer.network.parameterCount) parameters; \(config.optimizer.rawValue) lr \(config.resolvedLearningRate)\(config.weightDecay > 0 ? " weight decay \(config.weightDecay)" : ""), global batch \(config.globalBatch) = \(config.globalBatch % comm.size == 0 ? "\(comm.size) x \(config.globalBatch / comm.size)" : "shares of \(comm.size) ranks"); \(trainer.stepsPerEpoch) steps per epoch; augment \(config.augmentation.description); validation \(config.validationTTA == true ? "with flip TTA" : "without TTA")\(config.emaDecay.map { " of the weights' moving average (EMA \($0))" } ?? "")\(config.validationScheduleDescription.map { ", \($0)" } ?? "")\(config.labelSmoothing.map { "; label smoothing \($0)" } ?? ""); convolutions' products in \(precision.precision.rawValue) (\(precision.why))")
        if shape.givenBatchSize == nil, trainer.globalStep == 0, let advice = Recipe.smallBatchAdvice(globalBatch: config.globalBatch, ranks: comm.size) {
            log.info(advice)
        }
        let balancer = trainer.balancer
        if balancer.split != .even || balancer.group != nil {
            log.info("batch split \(balancer.split): shares \(balancer.shares.map(String.init).joined(separator: "/")) of \(config.globalBatch) to start with\(balancer.group.map { "; BatchNorm over groups of \($0) samples (ghost batch normalization)" } ?? "")\(balancer.split == .auto ? "; estimated from the ranks' speeds after \(Balancer.firstWindow + 1) steps, then every \(Balancer.window)" : "")")
        }
        let localBatch = min(config.globalBatch / comm.size, trainer.source.trainCount)  // a step holds at most every image
        let perStep = (localBatch + trainer.microBatch - 1) / trainer.microBatch
        if config.compression != .none {
            let reduction = trainer.stepper.reduction
            let compressed = (reduction as? HierarchicalReduction)?.machineWireBytes(update: Int.max)
                ?? reduction.buckets.indices.reduce(0) { $0 + reduction.wireBytes(bucket: $1, update: Int.max) }
            let from = reduction.powerSGD.map { $0.startUpdate > 0 ? " from update \($0.startUpdate) (exact during the warmup)" : "" } ?? ""
            log.info(String(format: "gradients: %@%@, %.2f MB a step%@ into the all-reduces instead of %.2f MB (%.1fx fewer)",
                            reduction.name, from, Double(compressed) / 1e6, reduction is HierarchicalReduction ? " a machine" : "",
                            Double(trainer.network.parameterCount * 4) / 1e6,
                            Double(trainer.network.parameterCount * 4) / Double(max(compressed, 1))))
        }
        if trainer.stepper.reduction is PowerSGDReduction, comm.machineCount > 1, comm.machineSize > 1 {
            log.info("hint: PowerSGD over \(comm.size) ranks on \(comm.machineCount) machines: --allreduce hierarchical compresses between the machines only (each machine's ranks sum through shared memory and take its buckets in turn; \(comm.machineCount) ranks, not \(comm.size), in each factor all-reduce), as benchmarks/lab-scaling measures it")
        }
        if let hierarchical = trainer.stepper.reduction as? HierarchicalReduction, hierarchical.across == nil {
            log.info("gradients: exact fp32 sums machine by machine (--allreduce hierarchical): \(comm.machineCount) machine(s); the ranks of each sum into its first, those all-reduce across the network and share the sum")
        }
        if trainer.stepper.reduction is PartedReduction {
            log.info("gradients: exact fp32 sums parted by share (--allreduce parted): each rank adds up the part of every bucket that its share of the batch gives it, and sends that part's sum to the others")
        }
        let averageBytes = Trainer.movingAverageBytes(config, trainer.network)
        let stateMiB = Int(Trainer.stateBytes(config, parameters: trainer.network.parameterCount, state: trainer.network.state.count,
                                              ranks: comm.size, rank: comm.rank)) >> 20
        log.info("memory per rank: activations \(trainer.activationBytes >> 20) MiB for micro-batches of \(trainer.microBatch)\(perStep > 1 ? " (\(perStep) per step, gradients summed)" : "") within a budget of \(Trainer.activationBudget(activationBudget, less: averageBytes) >> 20) MiB\(averageBytes > 0 ? " (\(activationBudget >> 20) MiB less the moving average's \(averageBytes >> 20))" : ""); weights, gradients and optimizer state \(stateMiB) MiB")
    }

    /// Rank 0 writes the `--timeline`, so its machine must be able to, before any work.
    func checkTimelinePath(_ comm: Communicator) throws {
        guard comm.rank == 0, let timeline else { return }
        do { try checkOutputPath(timeline, runOutput: true) } catch let error as OutputError {
            throw OutputError(path: error.path, problem: "\(error.problem) (--timeline)")
        }
    }

    /// A resumed run keeps its checkpoint's configuration. An option given on this command line
    /// that differs from it is applied where the run can go on with it (its length, the learning
    /// rate and its schedule, regularisation, augmentation, validation, the all-reduce), and
    /// refused where it cannot (what the weights' shapes, the data split, the data order or the
    /// optimizer's and EMA's state depend on): never dropped without a word.
    func resumedConfig(_ saved: TrainingConfig) throws -> (config: TrainingConfig, applied: [String], schedule: Bool) {
        func keep<T: Equatable>(_ option: String, _ given: T?, _ kept: T) throws {
            guard let given, given != kept else { return }
            throw ValidationError("""
                \(option) \(given) differs from the resumed run's \(kept), which a resume keeps (the weights, the \
                data split or order, or the optimizer's state depend on it): leave it out, or start a new run in another --checkpoint-dir
                """)
        }
        try keep("--model", shape.givenModel, saved.model)
        try keep("--image-size", shape.givenImageSize, saved.imageSize)
        try keep("--batch-size", shape.givenBatchSize, saved.globalBatch)
        try keep("--seed", seed, saved.seed)
        try keep("--val-fraction", valFraction, saved.validationFraction)
        try keep("--fit", fit, saved.fit)
        try keep("--pixels", pixels, saved.scale)
        try keep("--optimizer", optimizer, saved.optimizer)
        try keep("--ema", ema.map { $0 > 0 ? $0 : 0 }, saved.emaDecay ?? 0)
        try keep("--resize-from", resizeFrom, saved.resizeFrom ?? 0)
        try keep("--train-size", trainSize, saved.trainSize ?? saved.imageSize)
        var c = saved
        var applied: [String] = []
        func apply<T: Equatable>(_ option: String, _ given: T?, _ field: WritableKeyPath<TrainingConfig, T>) {
            guard let given, given != c[keyPath: field] else { return }
            applied.append("\(option) \(given) (the run had \(c[keyPath: field]))")
            c[keyPath: field] = given
        }
        // An explicit --epochs turns a budget-filling run into an ordinary one.
        if let epochs { c.fillsBudget = nil; apply("--epochs", epochs, \.epochs) }
        if let timeBudget, timeBudget != c.timeBudget {
            applied.append("--time-budget \(timeBudget) (the run had \(c.timeBudget.map { "\($0)" } ?? "none"))")
            c.timeBudget = timeBudget
        }
        if let lr, lr != c.resolvedLearningRate {
            applied.append("--lr \(lr) (the run had \(c.resolvedLearningRate))")
            c.learningRate = lr
        }
        apply("--warmup-epochs", warmupEpochs, \.warmupEpochs)
        apply("--decay", decay, \.decay)
        let schedule = applied.contains { $0.hasPrefix("--lr ") || $0.hasPrefix("--warmup-epochs ") || $0.hasPrefix("--decay ") }
        apply("--momentum", momentum, \.momentum)
        apply("--weight-decay", weightDecay, \.weightDecay)
        apply("--augment", try augmentation(), \.augmentation)
        if let labelSmoothing, labelSmoothing != (c.labelSmoothing ?? 0) {
            applied.append("--label-smoothing \(labelSmoothing) (the run had \(c.labelSmoothing ?? 0))")
            c.labelSmoothing = labelSmoothing > 0 ? labelSmoothing : nil
        }
        apply("--patience", patience, \.patience)
        if validateEvery != nil {
            let every = try validationEvery()
            if every != c.validateEvery {
                applied.append("--validate-every \(every.map(String.init) ?? "auto")")
                c.validateEvery = every
            }
        }
        if let valTta, (valTta == .flip) != (c.validationTTA == true) {
            applied.append("--val-tta \(valTta.rawValue)")
            c.validationTTA = valTta == .flip
        }
        apply("--bucket-mib", allReduce.givenBucketMib, \.bucketMiB)
        apply("--overlap", allReduce.givenOverlap, \.overlap)
        if let compression = allReduce.givenCompression, compression != c.compression {
            applied.append("--compress \(compression) (the run had \(c.compression))")
            c.compression = compression
        }
        if let topology = allReduce.givenTopology, topology != c.allReduceTopology {
            applied.append("--allreduce \(topology.rawValue)")
            c.allReduceTopology = topology
        }
        // Who computes which samples: the run goes on with any split and any groups.
        if let split = try batchSplit(), split != c.batchSplit {
            applied.append("--balance \(split) (the run had \(c.batchSplit))")
            c.balance = split == .even ? nil : split.description
        }
        if let ghostBatch, ghostBatch != c.ghostBatch {
            applied.append("--ghost-batch \(ghostBatch) (the run had \(c.ghostBatch.map(String.init) ?? "none"))")
            c.ghostBatch = ghostBatch
        }
        if let problem = c.problem { throw ValidationError("an option is out of range: \(problem)") }
        return (c, applied, schedule)
    }

    /// The model that `--model` names (an EfficientNet-Lite) is the one `import` wrote in `path`.
    func importedModel(_ path: String) throws -> LoadedCheckpoint {
        let loaded = try LoadedCheckpoint(path: path)
        guard loaded.metadata.model == model else {
            throw CheckpointError(path: path, problem: "holds model \(loaded.metadata.model), not \(model): pass --model \(loaded.metadata.model) or the file `catdog-dist import` wrote from \(model)'s weights")
        }
        return loaded
    }

    /// The EfficientNet-Lite that `--model` names (transfer learning), if it names one.
    var lite: EfficientNetLite? { EfficientNetLite(model: model) }

    /// An EfficientNet-Lite from ImageNet weights: features of the frozen backbone, then a head.
    func runTransfer() throws {
        guard let initFrom, let lite else {
            let short = model.replacingOccurrences(of: "efficientnet-", with: "")
            printError("\(model) starts from ImageNet weights: run `catdog-dist import PTH --out \(short).safetensors.zst` (see docs/transfer-learning.md) and pass --init-from \(short).safetensors.zst")
            throw ExitCode(1)
        }
        let freezeUntil: Int? = switch freeze {
        case .until(let n): n
        case .backbone, .none: nil
        }
        try runDistributed(faults: faults) { comm in
            try compute.apply()
            let log = RankLog(comm)
            let initial = try importedModel(initFrom)
            let folder = try RunFolder.claim(checkpointDir, keep: keep, resuming: resume != nil, overwrite: overwrite,
                                             slurmJob: ProcessInfo.processInfo.environment["SLURM_JOB_ID"], communicator: comm, log: log.info)
            defer { withExtendedLifetime(folder) {} }
            // The backbone and the head compute in fp32 (--precision auto takes bf16 only from scratch).
            try folder.recordStart(epoch: 0, step: 0, precision: .fp32, communicator: comm, log: log.info)
            var config = initial.metadata.config
            if let seed { config.seed = seed }
            if let valFraction { config.validationFraction = valFraction }
            // The head scores validation with mirror TTA as asked (from mirrored images'
            // features); fine-tuning from kept activations scores the images alone.
            config.validationTTA = (valTta ?? .flip) == .flip && freeze == .backbone ? true : nil
            config.ema = nil
            var head = FeatureExtraction.HeadConfig()
            if let epochs { head.epochs = epochs }
            if let lr { head.learningRate = lr }
            if let patience { head.patience = patience }
            if let weightDecay { head.weightDecay = weightDecay }
            head.calibrate = calibrate
            config.epochs = head.epochs
            let progress = ProgressLine()
            let metricsFile = folder.metricsPath
            let result: FeatureExtraction.Result
            if let freezeUntil {
                var tune = FineTuning.Config()
                tune.freezeUntil = freezeUntil
                tune.globalBatch = shape.batchSize
                tune.backboneScale = backboneLrScale
                if let epochs { tune.epochs = epochs }
                if let lr { tune.learningRate = lr }
                if let patience { tune.patience = patience }
                if let weightDecay { tune.weightDecay = weightDecay }
                if let augmentation = try augmentation() { tune.mirror = augmentation.flip }
                head = FeatureExtraction.HeadConfig()
                config.epochs = tune.epochs
                config.globalBatch = shape.batchSize
                log.info("transfer learning: \(lite.name) at \(config.imageSize)x\(config.imageSize) from \(initFrom): head, then fine-tuning blocks \(freezeUntil)-\(lite.blocks - 1) with it")
                result = try FineTuning.run(
                    folder: data, initial: initial, config: config, head: head, tune: tune, communicator: comm,
                    log: { progress.clear(); log.info($0) }, progress: { progress.update($0) }, metricsFile: metricsFile)
            } else {
                log.info("transfer learning: \(lite.name) at \(config.imageSize)x\(config.imageSize) from \(initFrom), frozen backbone, logistic head")
                result = try FeatureExtraction.run(
                    folder: data, initial: initial, config: config, head: head, communicator: comm,
                    log: { progress.clear(); log.info($0) }, progress: { progress.update($0) }, metricsFile: metricsFile)
            }
            progress.clear()
            if let summary = result.skippedSummary { log.info(summary) }
            if comm.rank == 0 {
                let bytes = try FeatureExtraction.checkpointBytes(result, config: config, preprocessing: initial.metadata.preprocessing,
                                                                  ranks: comm.size)
                try folder.store.write(bytes, epoch: result.history.count, step: 0, best: true)
            }
            let best = result.history.min { $0.val_loss < $1.val_loss }
            log.info(String(format: "best val_loss %.4f val_acc %.4f; features %.1f s (%.1f images/s); model in %@", result.bestValidationLoss,
                            best?.val_acc ?? .nan, result.extractionSeconds, result.imagesPerSecond,
                            (checkpointDir as NSString).appendingPathComponent("best.safetensors.zst")))
        }
    }
}
