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
                           tune: Config, communicator comm: Communicator, log: (String) -> Void,
                           progress: ((String) -> Void)? = nil, metricsFile: String?) throws -> FeatureExtraction.Result {
        let entries = ModelZoo.efficientNetBlockInputs()
        guard entries.indices.contains(tune.freezeUntil) else {
            throw CutError(description: "freezing until block \(tune.freezeUntil): efficientnet-lite0 has blocks 0 to \(entries.count - 2); use until:0 … until:\(entries.count - 1) (\(entries.count - 1) = only the head trains)")
        }
        guard tune.globalBatch % comm.size == 0 else {
            throw EpochPlan.BatchSizeError(description: "the global batch size \(tune.globalBatch) does not divide among \(comm.size) ranks; use a global batch size that is a multiple of \(comm.size)")
        }
        let network = try initial.makeNetwork()
        let cut = entries[tune.freezeUntil]
        precondition(network.isCut(cut), "efficientnet-lite0 block entry \(cut) is not a cut")
        let x = try FeatureExtraction.extract(folder: folder, network: network, preprocessing: initial.metadata.preprocessing,
                                              config: config, boundaryNode: cut, communicator: comm, log: log, progress: progress)
        let trainedHead = FeatureExtraction.trainHead(x, head: head, seed: config.seed, ranks: comm.size, log: log,
                                                      metricsFile: comm.rank == 0 ? metricsFile : nil)
        FeatureExtraction.install(trainedHead, into: network)
        var history = trainedHead.history
        let headEpochs = history.count
        log(String(format: "head: val_loss %.4f val_acc %.4f after %d epochs; fine-tuning blocks %d-15 and the head",
                   trainedHead.bestValidationLoss, history.min { $0.val_loss < $1.val_loss }?.val_acc ?? .nan,
                   headEpochs, tune.freezeUntil))

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
        let stepper = DataParallelStep(network: network, groups: groups, firstNode: cut, communicator: comm,
                                       overlap: config.overlap, bucketBytes: Int(config.bucketMiB * 1_048_576),
                                       fp16: config.fp16AllReduce ?? false)
        let train = x.train, validation = x.validation
        let width = x.boundaryWidth, boundary = x.boundary!
        let steps = (train.count + tune.globalBatch - 1) / tune.globalBatch
        let schedule = LearningRateSchedule(baseRate: tune.learningRate, warmupSteps: Int(tune.warmupEpochs * Double(steps)),
                                            totalSteps: tune.epochs * steps, decay: .cosine)
        let input = network.activation(cut)
        let map = network.nodes[cut].shape
        func load(_ sample: Int, slot: Int, mirrored: Bool = false) {
            let source = boundary + sample * width, target = input + slot * width
            guard mirrored else {
                convertFromHalf(source, target, count: width)
                return
            }
            let c = map.channels
            for h in 0..<map.height {
                for w in 0..<map.width {
                    convertFromHalf(source + (h * map.width + w) * c, target + (h * map.width + map.width - 1 - w) * c, count: c)
                }
            }
        }
        func evaluate() throws -> (loss: Double, accuracy: Double) {
            let block = comm.block(of: validation.count)
            var lossSum = 0.0, correct = 0.0
            var start = block.lowerBound
            while start < block.upperBound {
                let chunk = start..<min(start + localBatch, block.upperBound)
                for (slot, v) in chunk.enumerated() {
                    load(validation[v], slot: slot)
                    stepper.labels[slot] = Float(x.files[validation[v]].label)
                }
                let logits = network.forward(batch: chunk.count, context: PassContext(training: false), from: cut)
                for (slot, _) in chunk.enumerated() {
                    lossSum += Double(BinaryCrossEntropy.loss(logit: logits[slot], label: stepper.labels[slot]))
                    if (logits[slot] > 0) == (stepper.labels[slot] > 0.5) { correct += 1 }
                }
                start = chunk.upperBound
            }
            var totals = [lossSum, correct]
            try comm.allReduceSum(&totals)
            return (totals[0] / Double(max(validation.count, 1)), totals[1] / Double(max(validation.count, 1)))
        }

        let bestParameters = FloatBuffer(count: network.parameterCount)
        bestParameters.pointer.update(from: network.parameters.pointer, count: network.parameterCount)
        let start = try evaluate()
        var best = start.loss
        log(String(format: "fine-tuning from val_loss %.4f val_acc %.4f: %d epochs of %d steps, global batch %d, lr %.1e (blocks %.1e)",
                   start.loss, start.accuracy, tune.epochs, steps, tune.globalBatch, tune.learningRate,
                   tune.learningRate * tune.backboneScale))
        let started = Date()
        let headElapsed = history.last?.elapsed_s ?? x.seconds
        var globalStep = 0, stale = 0
        for epoch in 0..<tune.epochs {
            let plan = try EpochPlan(sampleCount: train.count, globalBatch: tune.globalBatch, ranks: comm.size,
                                     seed: config.seed ^ 0xF17E, epoch: epoch)
            var lossSum = 0.0, correct = 0.0
            let epochStart = Date()
            for step in 0..<plan.steps {
                let local = plan.samples(step: step, rank: comm.rank)
                for (slot, position) in local.enumerated() {
                    var coin = Random(seed: config.seed, 0x3122, UInt64(epoch), UInt64(train[position]))
                    load(train[position], slot: slot, mirrored: tune.mirror && coin.below(2) == 1)
                    stepper.labels[slot] = Float(x.files[train[position]].label)
                }
                let context = PassContext(training: true, seed: config.seed, step: globalStep,
                                          firstSample: plan.firstPosition(step: step, rank: comm.rank))
                let result = try stepper.run(batch: local.count, normalizer: plan.globalCount(step: step), context: context,
                                             learningRate: schedule.rate(at: globalStep), weightDecay: tune.weightDecay)
                lossSum += result.lossSum
                correct += Double(result.correct)
                globalStep += 1
                if comm.rank == 0, let progress {
                    let seconds = Date().timeIntervalSince(epochStart)
                    let rate = Double((step + 1) * tune.globalBatch) / seconds
                    progress(String(format: "fine-tune epoch %d/%d  step %d/%d  %.1f img/s  lr %.2e  ETA %@", epoch + 1, tune.epochs,
                                    step + 1, plan.steps, rate, schedule.rate(at: globalStep),
                                    formatDuration(Double(plan.steps - step - 1) * seconds / Double(step + 1))))
                }
            }
            var totals = [lossSum, correct]
            try comm.allReduceSum(&totals)
            let epochSeconds = Date().timeIntervalSince(epochStart)
            let val = try evaluate()
            let metrics = EpochMetrics(
                epoch: headEpochs + epoch + 1, step: globalStep, train_loss: totals[0] / Double(train.count),
                train_acc: totals[1] / Double(train.count), val_loss: val.loss, val_acc: val.accuracy,
                images_per_s: Double(train.count) / epochSeconds,
                elapsed_s: headElapsed + Date().timeIntervalSince(started),
                lr: Double(schedule.rate(at: globalStep - 1)), ranks: comm.size)
            history.append(metrics)
            if comm.rank == 0, let metricsFile { try? appendLine(metrics.jsonLine, to: metricsFile) }
            let improved = val.loss < best
            if improved {
                best = val.loss
                stale = 0
                bestParameters.pointer.update(from: network.parameters.pointer, count: network.parameterCount)
            } else {
                stale += 1
            }
            log(String(format: "fine-tune epoch %d/%d: loss %.4f acc %.4f | val_loss %.4f val_acc %.4f | %.1f img/s | %@%@",
                       epoch + 1, tune.epochs, metrics.train_loss, metrics.train_acc, val.loss, val.accuracy,
                       metrics.images_per_s, formatDuration(Date().timeIntervalSince(started)), improved ? " | best" : ""))
            if tune.patience > 0, stale >= tune.patience {
                log("early stop: no better val_loss for \(stale) epochs")
                break
            }
        }
        network.parameters.pointer.update(from: bestParameters.pointer, count: network.parameterCount)
        for node in network.nodes { (node.layer as? BatchNorm)?.frozen = false }
        return FeatureExtraction.Result(network: network, history: history, bestValidationLoss: best,
                                        extractionSeconds: x.seconds, imagesPerSecond: x.imagesPerSecond,
                                        skippedSummary: x.report.summary)
    }
}
