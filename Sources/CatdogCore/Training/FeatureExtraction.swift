import Foundation

/// Transfer learning by feature extraction (the 2017 study's §4 first step): a frozen ImageNet
/// backbone computes each image's pooled features once, each rank for its 1/N of the images,
/// the ranks all-gather them, and a logistic head trains on them in seconds, identically on
/// every rank. The result is a complete checkpoint of the network with the trained head.
public enum FeatureExtraction {
    public struct HeadConfig: Sendable {
        public var epochs = 60
        public var batch = 256
        public var learningRate: Float = 1e-3
        /// L2 penalty λ/2·‖w‖² on the head's weights.
        public var weightDecay: Float = 1e-4
        public var patience = 8
        public init() {}
    }

    public struct Result {
        public let network: Network
        public let history: [EpochMetrics]
        public let bestValidationLoss: Double
        public let extractionSeconds: Double
        public let imagesPerSecond: Double
        public let skippedSummary: String?
    }

    public static func run(folder: String, initial: LoadedCheckpoint, config: TrainingConfig, head: HeadConfig,
                           communicator comm: Communicator, log: (String) -> Void,
                           progress: ((String) -> Void)? = nil, metricsFile: String?) throws -> Result {
        let files = try DataFolder.labeledFiles(in: folder)
        let split = DataFolder.split(files, validationFraction: config.validationFraction, seed: config.seed)
        let all = split.train + split.validation
        let network = try initial.makeNetwork()
        let batch = 32
        network.reserve(maxBatch: batch)
        let preprocessing = initial.metadata.preprocessing
        let pool = network.nodes.firstIndex { $0.layer is GlobalAveragePool }!
        let width = network.nodes[pool].shape.count

        // 1. Features of this rank's block.
        let block = comm.block(of: all.count)
        let features = FloatBuffer(count: all.count * width)
        var problems = [Double](repeating: 0, count: all.count)
        let started = Date()
        var done = 0
        var start = block.lowerBound
        while start < block.upperBound {
            let chunk = start..<min(start + batch, block.upperBound)
            let store = ImageStore(count: chunk.count, storedSize: preprocessing.storedSize, labels: chunk.map { all[$0].label })
            let report = store.decode(chunk.map { all[$0].path }, indices: 0..<chunk.count, fit: preprocessing.fit)
            for skip in report.skipped {
                if let i = chunk.first(where: { all[$0].path == skip.path }) {
                    problems[i] = Double(skip.problem.code)
                }
            }
            var random = Random(seed: 0)
            for i in 0..<chunk.count {
                store.writeSample(i, to: network.input + i * network.inputShape.count, preprocessing: preprocessing,
                                  augmentation: .none, random: &random)
            }
            network.forward(batch: chunk.count, context: PassContext(training: false))
            (features.pointer + chunk.lowerBound * width).update(from: network.activation(pool), count: chunk.count * width)
            done += chunk.count
            start = chunk.upperBound
            if comm.rank == 0, let progress {
                let seconds = Date().timeIntervalSince(started)
                progress(String(format: "features %d/%d on rank 0  %.1f img/s per rank  ETA %@", done, block.count,
                                Double(done) / seconds, formatDuration(Double(block.count - done) * seconds / Double(done))))
            }
        }
        let localSeconds = Date().timeIntervalSince(started)
        let counts = (0..<comm.size).map { comm.block(of: all.count, rank: $0).count }
        let offsets = (0..<comm.size).map { comm.block(of: all.count, rank: $0).lowerBound }
        try comm.allGather(UnsafeMutableRawPointer(features.pointer), itemBytes: width * 4, counts: counts, offsets: offsets)
        try comm.allReduceSum(&problems)
        let extractionSeconds = Date().timeIntervalSince(started)
        var rate = [Double(block.count) / max(localSeconds, 1e-9)]
        try comm.allReduceSum(&rate)
        var report = DecodeReport()
        report.attempted = all.count
        for (i, code) in problems.enumerated() {
            guard let problem = ImageProblem(code: Int(code)) else { continue }
            report.skipped.append((all[i].path, problem, ""))
        }
        log(String(format: "features of %d images in %.1f s: %.1f images/s over %d ranks", all.count, extractionSeconds,
                   rate[0], comm.size))

        // 2. The logistic head, on every rank alike.
        let train = (0..<split.train.count).filter { problems[$0] == 0 }
        let validation = (split.train.count..<all.count).filter { problems[$0] == 0 }
        var w = [Float](repeating: 0, count: width), b: Float = 0
        var best = (loss: Double.infinity, w: w, b: b)
        let adam = Adam(count: width + 1)
        let params = FloatBuffer(count: width + 1), grads = FloatBuffer(count: width + 1)
        var history: [EpochMetrics] = []
        var stale = 0
        func logit(_ i: Int) -> Float {
            let x = features.pointer + i * width
            var z = b
            for k in 0..<width { z += w[k] * x[k] }
            return z
        }
        func score(_ indices: [Int]) -> (loss: Double, accuracy: Double) {
            var loss = 0.0, correct = 0
            for i in indices {
                let z = logit(i), y = Float(all[i].label)
                loss += Double(BinaryCrossEntropy.loss(logit: z, label: y))
                if (z > 0) == (y > 0.5) { correct += 1 }
            }
            return (loss / Double(max(indices.count, 1)), Double(correct) / Double(max(indices.count, 1)))
        }
        let headStarted = Date()
        for epoch in 0..<head.epochs {
            var random = Random(seed: config.seed, 0xFEA7, UInt64(epoch))
            let order = random.permutation(train.count)
            var lossSum = 0.0, correct = 0
            var s = 0
            while s < order.count {
                let batchIndices = order[s..<min(s + head.batch, order.count)].map { train[$0] }
                grads.zero()
                for i in batchIndices {
                    let z = logit(i), y = Float(all[i].label)
                    lossSum += Double(BinaryCrossEntropy.loss(logit: z, label: y))
                    if (z > 0) == (y > 0.5) { correct += 1 }
                    let d = (BinaryCrossEntropy.sigmoid(z) - y) / Float(batchIndices.count)
                    let x = features.pointer + i * width
                    for k in 0..<width { grads[k] += d * x[k] }
                    grads[width] += d
                }
                for k in 0..<width {
                    grads[k] += head.weightDecay * w[k]
                    params[k] = w[k]
                }
                params[width] = b
                adam.step(parameters: params.pointer, gradients: grads.pointer, learningRate: head.learningRate)
                for k in 0..<width { w[k] = params[k] }
                b = params[width]
                s += head.batch
            }
            let val = score(validation)
            let metrics = EpochMetrics(epoch: epoch + 1, step: adam.iterations, train_loss: lossSum / Double(train.count),
                                       train_acc: Double(correct) / Double(train.count), val_loss: val.loss, val_acc: val.accuracy,
                                       images_per_s: Double(train.count) / max(Date().timeIntervalSince(headStarted), 1e-9),
                                       elapsed_s: extractionSeconds + Date().timeIntervalSince(headStarted),
                                       lr: Double(head.learningRate), ranks: comm.size)
            history.append(metrics)
            if comm.rank == 0, let metricsFile { try? appendLine(metrics.jsonLine, to: metricsFile) }
            if val.loss < best.loss {
                best = (val.loss, w, b)
                stale = 0
            } else {
                stale += 1
            }
            if epoch % 5 == 4 {
                log(String(format: "head epoch %d: loss %.4f acc %.4f | val_loss %.4f val_acc %.4f%@", epoch + 1, metrics.train_loss,
                           metrics.train_acc, val.loss, val.accuracy, stale == 0 ? " | best" : ""))
            }
            if head.patience > 0, stale >= head.patience { break }
        }
        // 3. The best head into the network's 1-unit dense layer.
        let kernel = network.parameterSlots.first { $0.name.hasPrefix(network.nodes.last!.name) && $0.name.hasSuffix(".kernel") }!
        for k in 0..<width { network.parameters[kernel.offset + k] = best.w[k] }
        network.parameters[kernel.offset + width] = best.b  // the bias follows the kernel
        return Result(network: network, history: history, bestValidationLoss: best.loss, extractionSeconds: extractionSeconds,
                      imagesPerSecond: rate[0], skippedSummary: report.summary)
    }

    /// The network with its trained head as a finished checkpoint (uncompressed safetensors).
    public static func checkpointBytes(_ result: Result, config: TrainingConfig, preprocessing: Preprocessing, ranks: Int) throws -> [UInt8] {
        try CheckpointMetadata(model: result.network, config: config, preprocessing: preprocessing, history: result.history,
                               bestValidationLoss: result.bestValidationLoss, finished: true, ranks: ranks)
            .encode(network: result.network)
    }
}
