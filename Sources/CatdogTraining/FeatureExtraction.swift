import CatdogData
import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

/// Transfer learning by feature extraction (the 2017 study's §4 first step): a frozen ImageNet
/// backbone computes each image's pooled features once, each rank for its 1/N of the images,
/// the ranks all-gather them, and a logistic head trains on them in seconds through the one
/// epoch driver (`trainHead`). The result is a complete checkpoint of the network with the
/// trained head.
public enum FeatureExtraction {
    public struct HeadConfig: Sendable {
        public var epochs = 60
        public var batch = 256
        public var learningRate: Float = 1e-3
        /// L2 penalty λ/2·‖w‖² on the head's weights.
        public var weightDecay: Float = 1e-4
        public var patience = 8
        /// Divide the trained head's logits by a temperature fitted on the validation images
        /// (`TemperatureScaling`) when, cross-fitted, that lowers the validation loss.
        public var calibrate = true
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

    /// What the frozen backbone computed for every image of the folder, on every rank alike.
    public final class Extracted {
        /// Training images first, then validation images.
        public let files: [LabeledFile]
        public let trainCount: Int
        /// Pooled features, (files.count, width).
        public let pooled: FloatBuffer
        /// Pooled features of the mirrored validation images, (files.count − trainCount, width),
        /// when validation uses mirror TTA.
        public let mirroredValidation: FloatBuffer?
        public let width: Int
        /// Activations at the cut, (files.count, boundaryWidth), in half precision to halve the
        /// memory: fine-tuning trains the layers after the cut from them.
        public let boundary: UnsafeMutablePointer<Float16>?
        public let boundaryWidth: Int
        /// Per image: 0 = decoded, else `ImageProblem.code`.
        public let problems: [Double]
        public let seconds: Double
        /// Images per second summed over ranks.
        public let imagesPerSecond: Double
        public let report: DecodeReport

        init(files: [LabeledFile], trainCount: Int, pooled: FloatBuffer, mirroredValidation: FloatBuffer?, width: Int,
             boundary: UnsafeMutablePointer<Float16>?, boundaryWidth: Int, problems: [Double], seconds: Double,
             imagesPerSecond: Double, report: DecodeReport) {
            self.files = files
            self.trainCount = trainCount
            self.pooled = pooled
            self.mirroredValidation = mirroredValidation
            self.width = width
            self.boundary = boundary
            self.boundaryWidth = boundaryWidth
            self.problems = problems
            self.seconds = seconds
            self.imagesPerSecond = imagesPerSecond
            self.report = report
        }

        deinit { boundary?.deallocate() }

        /// Indices of the decoded training and validation images.
        public var train: [Int] { (0..<trainCount).filter { problems[$0] == 0 } }
        public var validation: [Int] { (trainCount..<files.count).filter { problems[$0] == 0 } }
    }

    /// Runs the frozen network over the folder's images, each rank over its block, and
    /// all-gathers the pooled features (and, given `boundaryNode`, that node's activations;
    /// with `mirroredValidation`, the features of the mirrored validation images too).
    public static func extract(folder: String, network: Network, preprocessing: Preprocessing, config: TrainingConfig,
                               boundaryNode: Int? = nil, mirroredValidation: Bool = false, communicator comm: Communicator,
                               log: (String) -> Void,
                               progress: ((String) -> Void)? = nil) throws -> Extracted {
        let files = try DataFolder.labeledFiles(in: folder, warn: comm.rank == 0 ? log : { _ in })
        let split = try DataFolder.trainingSplit(files, validationFraction: config.validationFraction, seed: config.seed,
                                                 folder: folder, warn: comm.rank == 0 ? log : { _ in })
        let all = split.train + split.validation
        let pool = network.nodes.firstIndex { $0.layer is GlobalAveragePool }!
        // Inference only: buffers for the nodes alive at once, batches as large as fit the
        // activation budget of the machine's ranks (at most 32).
        let keep = Set([pool] + (boundaryNode.map { [$0] } ?? []))
        let budget = Trainer.activationBudget(availableBytes: MemoryStatus.availableBytes(), ranksOnMachine: comm.ranksOnMachine)
        let batch = max(1, min(32, budget / max(network.inferenceBytesPerSample(keep: keep), 1)))
        network.reserveForInference(maxBatch: batch, keep: keep)
        let width = network.nodes[pool].shape.count
        let boundaryWidth = boundaryNode.map { network.nodes[$0].shape.count } ?? 0
        let boundary = boundaryNode.map { _ in UnsafeMutablePointer<Float16>.allocate(capacity: all.count * boundaryWidth) }
        if let boundaryNode {
            log(String(format: "keeping %@ activations per image at the cut (%.0f MB in fp16 on each rank)",
                       "\(network.nodes[boundaryNode].shape)", Double(all.count * boundaryWidth * 2) * 1e-6))
        }

        let block = comm.block(of: all.count)
        let features = FloatBuffer(count: all.count * width)
        let trainCount = split.train.count
        let mirrored = mirroredValidation ? FloatBuffer(count: (all.count - trainCount) * width) : nil
        var problems = [Double](repeating: 0, count: all.count)
        let started = Date()
        var done = 0
        var start = block.lowerBound
        let outputs = Outputs(pool: pool, width: width, features: features, trainCount: trainCount, mirrored: mirrored,
                              boundaryNode: boundaryNode, boundary: boundary, boundaryWidth: boundaryWidth)
        while start < block.upperBound {
            let chunk = start..<min(start + batch, block.upperBound)
            forward(chunk, of: all, network: network, preprocessing: preprocessing, into: outputs, problems: &problems)
            done += chunk.count
            start = chunk.upperBound
            if comm.rank == 0, let progress {
                let seconds = Date().timeIntervalSince(started)
                progress(String(format: "features %d/%d on rank 0  %.1f img/s per rank  ETA %@", done, block.count,
                                Double(done) / seconds, formatDuration(Double(block.count - done) * seconds / Double(done))))
            }
        }
        let localSeconds = Date().timeIntervalSince(started)
        try gather(outputs, count: all.count, communicator: comm)
        try comm.allReduceSum(&problems)
        let seconds = Date().timeIntervalSince(started)
        var rate = [Double(block.count) / max(localSeconds, 1e-9)]
        try comm.allReduceSum(&rate)
        var report = DecodeReport()
        report.attempted = all.count
        for (i, code) in problems.enumerated() {
            guard let problem = ImageProblem(code: Int(code)) else { continue }
            report.skipped.append((i, all[i].path, problem, ""))
        }
        log(String(format: "features of %d images in %.1f s: %.1f images/s over %d ranks", all.count, seconds, rate[0], comm.size))
        return Extracted(files: all, trainCount: split.train.count, pooled: features, mirroredValidation: mirrored, width: width,
                         boundary: boundary,
                         boundaryWidth: boundaryWidth, problems: problems, seconds: seconds, imagesPerSecond: rate[0],
                         report: report)
    }

    /// Where `extract` puts what each chunk's forward pass gives: pooled features of every image,
    /// of the validation images mirrored, and the activations at the cut in fp16.
    private struct Outputs {
        let pool: Int, width: Int
        let features: FloatBuffer
        let trainCount: Int
        let mirrored: FloatBuffer?
        let boundaryNode: Int?
        let boundary: UnsafeMutablePointer<Float16>?
        let boundaryWidth: Int
    }

    /// Decodes the images `chunk` of `all`, runs them forward (the validation ones once more
    /// mirrored when asked) and stores what `outputs` asks for; a file that cannot be decoded
    /// leaves its problem code in `problems`.
    private static func forward(_ chunk: Range<Int>, of all: [LabeledFile], network: Network, preprocessing: Preprocessing,
                                into outputs: Outputs, problems: inout [Double]) {
        let width = outputs.width
        let store = ImageStore(count: chunk.count, storedSize: preprocessing.storedSize, labels: chunk.map { all[$0].label })
        let report = store.decode(chunk.map { all[$0].path }, indices: 0..<chunk.count, fit: preprocessing.fit)
        for skip in report.skipped { problems[chunk.lowerBound + skip.index] = Double(skip.problem.code) }
        var random = Random(seed: 0)
        for i in 0..<chunk.count {
            store.writeSample(i, to: network.input + i * network.inputShape.count, preprocessing: preprocessing,
                              augmentation: .none, random: &random)
        }
        network.forward(batch: chunk.count, context: PassContext(training: false))
        (outputs.features.pointer + chunk.lowerBound * width).update(from: network.activation(outputs.pool), count: chunk.count * width)
        if let mirrored = outputs.mirrored, chunk.upperBound > outputs.trainCount {
            // The validation images of the chunk once more, mirrored (training images are not).
            let first = max(chunk.lowerBound, outputs.trainCount) - chunk.lowerBound
            for i in 0..<chunk.count {
                ImageStore.mirror(network.input + i * network.inputShape.count, size: preprocessing.imageSize)
            }
            network.forward(batch: chunk.count, context: PassContext(training: false))
            (mirrored.pointer + (chunk.lowerBound + first - outputs.trainCount) * width)
                .update(from: network.activation(outputs.pool) + first * width, count: (chunk.count - first) * width)
        }
        if let boundary = outputs.boundary, let boundaryNode = outputs.boundaryNode {
            convertToHalf(network.activation(boundaryNode), boundary + chunk.lowerBound * outputs.boundaryWidth,
                          count: chunk.count * outputs.boundaryWidth)
        }
    }

    /// Every rank's rows of `outputs` (its block of the `count` images) to every rank.
    private static func gather(_ outputs: Outputs, count: Int, communicator comm: Communicator) throws {
        let blocks = (0..<comm.size).map { comm.block(of: count, rank: $0) }
        let counts = blocks.map(\.count), offsets = blocks.map(\.lowerBound)
        try comm.allGather(UnsafeMutableRawPointer(outputs.features.pointer), itemBytes: outputs.width * 4, counts: counts, offsets: offsets)
        if let boundary = outputs.boundary {
            try comm.allGather(UnsafeMutableRawPointer(boundary), itemBytes: outputs.boundaryWidth * 2, counts: counts, offsets: offsets)
        }
        if let mirrored = outputs.mirrored {
            // Each rank's validation rows: its block's part at or after the training images.
            let lows = blocks.map { max($0.lowerBound, outputs.trainCount) }
            try comm.allGather(UnsafeMutableRawPointer(mirrored.pointer), itemBytes: outputs.width * 4,
                               counts: zip(blocks, lows).map { max(0, $0.upperBound - $1) }, offsets: lows.map { $0 - outputs.trainCount })
        }
    }

    public static func run(folder: String, initial: LoadedCheckpoint, config: TrainingConfig, head: HeadConfig,
                           communicator comm: Communicator, log: @escaping (String) -> Void,
                           progress: ((String) -> Void)? = nil, metricsFile: String?) throws -> Result {
        let network = try initial.makeNetwork()
        let x = try extract(folder: folder, network: network, preprocessing: initial.metadata.preprocessing, config: config,
                            mirroredValidation: config.validationTTA == true, communicator: comm, log: log, progress: progress)
        var trained = try trainHead(x, head: head, config: config, preprocessing: initial.metadata.preprocessing, communicator: comm,
                                    log: log, progress: progress, metricsFile: comm.rank == 0 ? metricsFile : nil)
        if head.calibrate { calibrate(&trained, on: x, log: log) }
        install(trained, into: network)
        return Result(network: network, history: trained.history, bestValidationLoss: trained.bestValidationLoss,
                      extractionSeconds: x.seconds, imagesPerSecond: x.imagesPerSecond, skippedSummary: x.report.summary)
    }

    /// The network with its trained head as a finished checkpoint (uncompressed safetensors).
    public static func checkpointBytes(_ result: Result, config: TrainingConfig, preprocessing: Preprocessing, ranks: Int) throws -> [UInt8] {
        try CheckpointMetadata(model: result.network, config: config, preprocessing: preprocessing, history: result.history,
                               bestValidationLoss: result.bestValidationLoss, finished: true, ranks: ranks)
            .encode(network: result.network)
    }
}
