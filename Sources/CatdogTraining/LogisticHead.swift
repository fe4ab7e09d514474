import CatdogData
import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport

extension FeatureExtraction {
    /// The logistic head on the pooled features: a network of one dense layer (the features of
    /// an image in, one logit out), its per-epoch metrics and its best validation loss.
    public struct Head {
        public let network: Network
        public var history: [EpochMetrics]
        public var bestValidationLoss: Double

        /// A head of `weights` (one per feature) and `bias`.
        public init(weights: [Float], bias: Float, history: [EpochMetrics] = [], bestValidationLoss: Double = .infinity) throws {
            var builder = NetworkBuilder(input: .init(height: 1, width: 1, channels: weights.count))
            _ = builder.add(Dense(1))
            network = try builder.build()
            network.parameters.pointer.update(from: weights, count: weights.count)
            network.parameters[weights.count] = bias  // the bias follows the kernel
            self.history = history
            self.bestValidationLoss = bestValidationLoss
        }

        public var weights: [Float] { Array(UnsafeBufferPointer(start: network.parameters.pointer, count: network.parameterCount - 1)) }
        public var bias: Float { network.parameters[network.parameterCount - 1] }

        /// Multiplies the weights and the bias, so every logit, by `factor`.
        func scale(by factor: Float) {
            for i in 0..<network.parameterCount { network.parameters[i] *= factor }
        }

        /// The head's logit of each row (every row `width` features), in batches of what the
        /// network holds.
        func logits(_ rows: [UnsafePointer<Float>]) -> [Double] {
            if network.maxBatch == 0 { network.reserveForInference(maxBatch: 256) }
            let width = network.inputShape.count
            var result: [Double] = []
            result.reserveCapacity(rows.count)
            var start = 0
            while start < rows.count {
                let chunk = start..<min(start + network.maxBatch, rows.count)
                for (slot, row) in rows[chunk].enumerated() { (network.input + slot * width).update(from: row, count: width) }
                let logits = network.forward(batch: chunk.count, context: PassContext(training: false))
                result += (0..<chunk.count).map { Double(logits[$0]) }
                start = chunk.upperBound
            }
            return result
        }
    }

    /// Trains a logistic head on the pooled features with the one epoch driver (`Trainer.fit`),
    /// data-parallel like every run: Adam at a constant rate on the mean loss plus L2 weight
    /// decay on the weights, the training rows in each epoch's permutation, validation as the
    /// run's (with mirror TTA when `x` holds the mirrored images' features), and the weights of
    /// the best validation loss kept (early stopping after `head.patience` epochs).
    /// Appends each epoch to `metricsFile` when given (rank 0 passes it, the others nil).
    public static func trainHead(_ x: Extracted, head: HeadConfig, config: TrainingConfig, preprocessing: Preprocessing,
                                 communicator comm: Communicator, log: @escaping (String) -> Void,
                                 progress: ((String) -> Void)? = nil, metricsFile: String?) throws -> Head {
        var trained = try Head(weights: [Float](repeating: 0, count: x.width), bias: 0)
        let network = trained.network
        // The head's batch, rounded up to a multiple of the ranks.
        let globalBatch = (head.batch + comm.size - 1) / comm.size * comm.size
        network.reserve(maxBatch: globalBatch / comm.size)
        var phase = config.transferPhase(globalBatch: globalBatch, epochs: head.epochs, learningRate: head.learningRate,
                                         weightDecay: head.weightDecay, patience: head.patience)
        phase.optimizer = .adam
        phase.decay = .constant
        phase.warmupEpochs = 0
        phase.validationTTA = x.mirroredValidation != nil
        phase.compression = .none
        phase.allReduceTopology = .flat
        let trainer = try Trainer(config: phase, communicator: comm, network: network,
                                  groups: [.init(range: 0..<network.parameterCount, optimizer: Adam(count: network.parameterCount))],
                                  firstNode: 0, source: PooledFeatures(x, communicator: comm), preprocessing: preprocessing)
        trainer.planSeed = config.seed ^ 0xFEA7
        trainer.phase = ("head epoch", 0)
        trainer.elapsedBefore = x.seconds
        let summary = try trainer.fit(metricsFile: metricsFile, log: log, progress: progress)
        trained.history = summary.history
        trained.bestValidationLoss = summary.bestValidationLoss
        return trained
    }

    /// The head's logits of every validation image (on each rank, all of them), and of the
    /// mirrored images when `x` holds their features.
    public static func validationLogits(_ x: Extracted, _ head: Head) -> TemperatureScaling {
        let validation = x.validation
        let rows = validation.map { UnsafePointer(x.pooled.pointer) + $0 * x.width }
        let mirrored = x.mirroredValidation.map { m in
            head.logits(validation.map { UnsafePointer(m.pointer) + ($0 - x.trainCount) * x.width })
        }
        return TemperatureScaling(logits: head.logits(rows), mirrored: mirrored, dogs: validation.map { x.files[$0].label == 1 })
    }

    /// Temperature scaling of the trained head, applied (its weights and bias divided by T) only
    /// when T fitted on each half of the validation images lowers the other half's loss.
    static func calibrate(_ head: inout Head, on x: Extracted, log: (String) -> Void) {
        guard x.validation.count >= TemperatureScaling.minimumImages else {
            log("calibration: not applied, \(x.validation.count) validation images are fewer than the \(TemperatureScaling.minimumImages) it needs")
            return
        }
        let c = validationLogits(x, head).calibrate()
        let summary = String(format: "temperature %.3f: val_loss %.4f -> %.4f, %.4f cross-fitted (T from the other half of the validation images)",
                             c.temperature, c.before.loss, c.after.loss, c.crossFitted)
        guard c.helps else {
            log("calibration: not applied, it does not lower the cross-fitted loss (\(summary))")
            return
        }
        head.scale(by: Float(1 / c.temperature))
        head.bestValidationLoss = c.after.loss
        log("calibration: \(summary); val_acc \(String(format: "%.4f -> %.4f", c.before.accuracy, c.after.accuracy))")
    }

    /// Writes the head into the network's last (1-unit dense) layer.
    public static func install(_ head: Head, into network: Network) {
        let range = network.parameterRange(ofNode: network.nodes.count - 1)
        precondition(range.count == head.network.parameterCount)
        (network.parameters.pointer + range.lowerBound).update(from: head.network.parameters.pointer, count: range.count)
    }
}

extension TrainingConfig {
    /// The run's settings for a phase of transfer learning on features or activations kept in
    /// memory: its own batch, epochs, rate, weight decay and patience; an even split without
    /// ghost batches (there is no BatchNorm that trains), no time budget, no moving average
    /// and no progressive resizing.
    func transferPhase(globalBatch: Int, epochs: Int, learningRate: Float, weightDecay: Float, patience: Int) -> TrainingConfig {
        var phase = self
        phase.globalBatch = globalBatch
        phase.epochs = epochs
        phase.learningRate = learningRate
        phase.weightDecay = weightDecay
        phase.patience = patience
        phase.balance = nil
        phase.ghostBatch = nil
        phase.timeBudget = nil
        phase.fillsBudget = nil
        phase.ema = nil
        phase.resizeFrom = nil
        phase.trainSize = nil
        return phase
    }
}

/// The training and validation samples of `FeatureExtraction.Extracted`, which every rank holds
/// whole, as the sources over them see them: this rank's block of the validation samples.
struct ExtractedSamples {
    let x: FeatureExtraction.Extracted
    let train: [Int], validation: [Int]
    let rank: Int
    let validationBlock: Range<Int>

    init(_ x: FeatureExtraction.Extracted, communicator comm: Communicator) {
        self.x = x
        train = x.train
        validation = x.validation
        rank = comm.rank
        validationBlock = comm.block(of: validation.count)
    }

    /// The image of this rank's validation sample `v` (of its block).
    func validationSample(_ v: Int) -> Int { validation[validationBlock.lowerBound + v] }
}

/// A batch source over what feature extraction kept in memory: nothing to wait for or decode.
protocol ExtractedSource: BatchSource {
    var samples: ExtractedSamples { get }
}

extension ExtractedSource {
    var trainCount: Int { samples.train.count }
    var validationCount: Int { samples.validation.count }
    var localValidationCount: Int { samples.validationBlock.count }
    var lateFailures: [String] { [] }
    var waitSeconds: Double { 0 }
    var prepareSeconds: Double { 0 }
    var preparedSamples: Int { 0 }
}

/// The pooled features of `FeatureExtraction.Extracted` as the epoch driver's batches (the
/// logistic head's input): training rows as they are, each rank's block of the validation
/// rows, and for mirror TTA the mirrored images' rows.
final class PooledFeatures: ExtractedSource {
    let samples: ExtractedSamples
    var x: FeatureExtraction.Extracted { samples.x }

    init(_ x: FeatureExtraction.Extracted, communicator comm: Communicator) {
        samples = ExtractedSamples(x, communicator: comm)
    }

    private func copyRow(_ row: UnsafePointer<Float>, to network: Network, slot: Int) {
        (network.input + slot * x.width).update(from: row, count: x.width)
    }

    func trainBatch(plan: EpochPlan, step: Int, size: Int, stepper: DataParallelStep) -> (input: UnsafePointer<Float>?, count: Int) {
        let local = plan.samples(step: step, rank: samples.rank)
        for (slot, position) in local.enumerated() {
            let sample = samples.train[position]
            copyRow(UnsafePointer(x.pooled.pointer) + sample * x.width, to: stepper.network, slot: slot)
            stepper.labels[slot] = Float(x.files[sample].label)
        }
        return (nil, local.count)
    }

    func validationBatch(_ range: Range<Int>, network: Network, node: Int, labels: UnsafeMutablePointer<Float>) -> Int {
        precondition(node == 0)
        for (slot, v) in range.enumerated() {
            let sample = samples.validationSample(v)
            copyRow(UnsafePointer(x.pooled.pointer) + sample * x.width, to: network, slot: slot)
            labels[slot] = Float(x.files[sample].label)
        }
        return range.count
    }

    /// The mirrored images' features (mirroring a pooled feature vector in place would change nothing).
    func mirrorValidationBatch(_ range: Range<Int>, written: Int, network: Network, node: Int) {
        guard let mirrored = x.mirroredValidation else { preconditionFailure("mirror TTA without the mirrored images' features") }
        for (slot, v) in range.enumerated() {
            copyRow(UnsafePointer(mirrored.pointer) + (samples.validationSample(v) - x.trainCount) * x.width, to: network, slot: slot)
        }
    }
}
