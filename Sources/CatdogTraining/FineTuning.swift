import CatdogData
import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

/// Transfer learning by fine-tuning the last blocks (the 2017 study's §4 second step, as the
/// Keras guide does it): the frozen part of the backbone runs once per image (across ranks)
/// and its output at the cut is kept in memory; a logistic head trains on the pooled features
/// first; then the blocks after the cut and the head train together from the kept activations,
/// data-parallel with the same all-reduce path as `train`, the backbone at a lower learning rate
/// and every BatchNorm in inference mode. The best epoch by validation loss is kept, and the
/// head-only result counts as epoch 0, so fine-tuning never returns a worse model.
public enum FineTuning {
    public struct Config: Sendable {
        /// Blocks 0..<freezeUntil (and the stem) stay frozen; 16 trains only the head conv.
        public var freezeUntil = 12
        public var epochs = 4
        public var globalBatch = 64
        /// Learning rate of the new head; the unfrozen blocks get `backboneScale` times it.
        public var learningRate: Float = 1e-4
        public var backboneScale: Float = 0.1
        public var weightDecay: Float = 1e-5
        public var warmupEpochs = 0.5
        public var patience = 3
        /// Mirror a training sample's kept activation map left-right with probability 1/2 each
        /// epoch: an ImageNet net trained with mirrored images is close to equivariant, so this
        /// stands in for mirroring the image, without running the frozen part twice.
        public var mirror = true
        public init() {}
    }

    public struct CutError: Error, CustomStringConvertible {
        public var description: String
    }

    public static func run(folder: String, initial: LoadedCheckpoint, config: TrainingConfig, head: FeatureExtraction.HeadConfig,
                           tune: Config, communicator comm: Communicator, log: @escaping (String) -> Void,
                           progress: ((String) -> Void)? = nil, metricsFile: String?) throws -> FeatureExtraction.Result {
        guard let lite = EfficientNetLite(model: config.model) else {
            throw CutError(description: "fine-tuning from kept activations is for the EfficientNet-Lite models, not \(config.model)")
        }
        let entries = lite.blockInputs()
        guard entries.indices.contains(tune.freezeUntil) else {
            throw CutError(description: "freezing until block \(tune.freezeUntil): \(lite.name) has blocks 0 to \(entries.count - 2); use until:0 … until:\(entries.count - 1) (\(entries.count - 1) = only the head trains)")
        }
        guard tune.globalBatch % comm.size == 0 else {
            throw EpochPlan.BatchSizeError(description: "the global batch size \(tune.globalBatch) does not divide among \(comm.size) ranks; use a global batch size that is a multiple of \(comm.size)")
        }
        let network = try initial.makeNetwork()
        let cut = entries[tune.freezeUntil]
        precondition(network.isCut(cut), "\(lite.name) block entry \(cut) is not a cut")
        let x = try FeatureExtraction.extract(folder: folder, network: network, preprocessing: initial.metadata.preprocessing,
                                              config: config, boundaryNode: cut, communicator: comm, log: log, progress: progress)
        let trainedHead = try FeatureExtraction.trainHead(x, head: head, config: config, preprocessing: initial.metadata.preprocessing,
                                                          communicator: comm, log: log, progress: progress,
                                                          metricsFile: comm.rank == 0 ? metricsFile : nil)
        FeatureExtraction.install(trainedHead, into: network)
        let history = trainedHead.history
        let headEpochs = history.count
        log(String(format: "head: val_loss %.4f val_acc %.4f after %d epochs; fine-tuning blocks %d-%d and the head",
                   trainedHead.bestValidationLoss, history.min { $0.val_loss < $1.val_loss }?.val_acc ?? .nan,
                   headEpochs, tune.freezeUntil, lite.blocks - 1))

        // Every BatchNorm in inference mode (its γ and β still train).
        for node in network.nodes { (node.layer as? BatchNorm)?.frozen = true }
        let localBatch = tune.globalBatch / comm.size
        network.reserve(maxBatch: localBatch)
        let last = network.nodes.count - 1
        let headRange = network.parameterRange(ofNode: last)
        let backbone = network.parameterRange(after: cut).lowerBound..<headRange.lowerBound
        var groups = [DataParallelStep.ParameterGroup(range: headRange, optimizer: Adam(count: headRange.count))]
        if !backbone.isEmpty {
            groups.insert(.init(range: backbone, optimizer: Adam(count: backbone.count), learningRateScale: tune.backboneScale), at: 0)
        }
        // The run's epochs go on after the head's, through the one epoch driver.
        var phase = config.transferPhase(globalBatch: tune.globalBatch, epochs: headEpochs + tune.epochs,
                                         learningRate: tune.learningRate, weightDecay: tune.weightDecay, patience: tune.patience)
        phase.validationTTA = nil
        let source = KeptActivations(x, cut: cut, map: network.nodes[cut].shape, mirror: tune.mirror, seed: config.seed,
                                     communicator: comm)
        let trainer = try Trainer(config: phase, communicator: comm, network: network, groups: groups, firstNode: cut,
                                  source: source, preprocessing: initial.metadata.preprocessing)
        let steps = trainer.stepsPerEpoch
        trainer.setSchedule(LearningRateSchedule(baseRate: tune.learningRate, warmupSteps: Int(tune.warmupEpochs * Double(steps)),
                                                 totalSteps: tune.epochs * steps, decay: .cosine))
        trainer.planSeed = config.seed ^ 0xF17E
        trainer.phase = ("fine-tune epoch", headEpochs)
        trainer.epoch = headEpochs
        trainer.history = history
        trainer.elapsedBefore = history.last?.elapsed_s ?? x.seconds
        // The head alone is the result to beat (epoch 0 of fine-tuning).
        let start = try trainer.evaluate()
        trainer.bestValidationLoss = start.loss
        trainer.rememberBest()
        log(String(format: "fine-tuning from val_loss %.4f val_acc %.4f: %d epochs of %d steps, global batch %d, lr %.1e (blocks %.1e)",
                   start.loss, start.accuracy, tune.epochs, steps, tune.globalBatch, tune.learningRate,
                   tune.learningRate * tune.backboneScale))
        let summary = try trainer.fit(metricsFile: comm.rank == 0 ? metricsFile : nil, log: log, progress: progress)
        for node in network.nodes { (node.layer as? BatchNorm)?.frozen = false }
        return FeatureExtraction.Result(network: network, history: summary.history, bestValidationLoss: summary.bestValidationLoss,
                                        extractionSeconds: x.seconds, imagesPerSecond: x.imagesPerSecond,
                                        skippedSummary: x.report.summary)
    }
}

/// Activations kept at a cut of the network (fp16, from `FeatureExtraction.extract`) as the
/// epoch driver's batches: a training sample's map is mirrored left-right with probability 1/2,
/// keyed by (seed, epoch, sample); validation maps as they are. Every rank holds all of them.
final class KeptActivations: ExtractedSource {
    let samples: ExtractedSamples
    var x: FeatureExtraction.Extracted { samples.x }
    let cut: Int
    let map: FeatureShape
    let mirror: Bool
    let seed: UInt64

    init(_ x: FeatureExtraction.Extracted, cut: Int, map: FeatureShape, mirror: Bool, seed: UInt64, communicator comm: Communicator) {
        precondition(x.boundary != nil && x.boundaryWidth == map.count)
        samples = ExtractedSamples(x, communicator: comm)
        self.cut = cut
        self.map = map
        self.mirror = mirror
        self.seed = seed
    }

    /// Sample `sample`'s kept map, as floats, at `target`; mirrored left-right if asked.
    func load(_ sample: Int, into target: UnsafeMutablePointer<Float>, mirrored: Bool) {
        let source = x.boundary! + sample * map.count
        guard mirrored else {
            convertFromHalf(source, target, count: map.count)
            return
        }
        let c = map.channels
        for h in 0..<map.height {
            for w in 0..<map.width {
                convertFromHalf(source + (h * map.width + w) * c, target + (h * map.width + map.width - 1 - w) * c, count: c)
            }
        }
    }

    func trainBatch(plan: EpochPlan, step: Int, size: Int, stepper: DataParallelStep) -> (input: UnsafePointer<Float>?, count: Int) {
        let local = plan.samples(step: step, rank: samples.rank)
        let input = stepper.network.activation(cut)
        for (slot, position) in local.enumerated() {
            let sample = samples.train[position]
            var coin = Random(seed: seed, 0x3122, UInt64(plan.epoch), UInt64(sample))
            load(sample, into: input + slot * map.count, mirrored: mirror && coin.below(2) == 1)
            stepper.labels[slot] = Float(x.files[sample].label)
        }
        return (nil, local.count)
    }

    func validationBatch(_ range: Range<Int>, network: Network, node: Int, labels: UnsafeMutablePointer<Float>) -> Int {
        precondition(node == cut)
        let input = network.activation(node)
        for (slot, v) in range.enumerated() {
            let sample = samples.validationSample(v)
            load(sample, into: input + slot * map.count, mirrored: false)
            labels[slot] = Float(x.files[sample].label)
        }
        return range.count
    }
}
