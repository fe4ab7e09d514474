import CatdogCheckpoint
import CatdogData
import CatdogEngine
import CatdogSupport
import Foundation

/// Everything in a checkpoint besides tensors: what the model is, how its inputs were made,
/// and exactly where training stood. Stored as JSON in the safetensors `__metadata__`.
public struct CheckpointMetadata: Codable, Sendable {
    public static let format = "catdog-dist"
    public static let currentVersion = 1

    public var formatVersion = CheckpointMetadata.currentVersion
    public var model: String
    public var imageSize: Int
    public var preprocessing: Preprocessing
    public var config: TrainingConfig
    /// Completed epochs; steps done inside the current one; updates in total.
    public var epoch: Int
    public var stepInEpoch: Int
    public var step: Int
    public var globalBatch: Int
    /// Rank count that wrote it.
    public var ranks: Int
    public var optimizer: String
    public var optimizerHyperparameters: [String: Double]
    public var optimizerIterations: Int
    public var optimizerScalars: [String: Double]
    public var schedule: LearningRateSchedule
    public var seed: UInt64
    public var history: [EpochMetrics]
    /// nil until a validation loss exists.
    public var bestValidationLoss: Double?
    public var epochsWithoutImprovement: Int
    public var epochTotals: EpochTotals
    public var elapsedSeconds: Double
    /// True for the checkpoint written when a run ended (early stopping, epochs, time budget).
    public var finished: Bool
    public var parameterCount: Int
    public var created: String
    /// The input size the current epoch trains at, with progressive resizing (a mid-epoch
    /// resume continues the epoch at it); nil otherwise.
    public var epochImageSize: Int?

    public init(model: String, imageSize: Int, preprocessing: Preprocessing, config: TrainingConfig, epoch: Int, stepInEpoch: Int, step: Int, globalBatch: Int, ranks: Int, optimizer: String, optimizerHyperparameters: [String: Double], optimizerIterations: Int, optimizerScalars: [String: Double], schedule: LearningRateSchedule, seed: UInt64, history: [EpochMetrics], bestValidationLoss: Double? = nil, epochsWithoutImprovement: Int, epochTotals: EpochTotals, elapsedSeconds: Double, finished: Bool, parameterCount: Int, created: String) {
        self.model = model
        self.imageSize = imageSize
        self.preprocessing = preprocessing
        self.config = config
        self.epoch = epoch
        self.stepInEpoch = stepInEpoch
        self.step = step
        self.globalBatch = globalBatch
        self.ranks = ranks
        self.optimizer = optimizer
        self.optimizerHyperparameters = optimizerHyperparameters
        self.optimizerIterations = optimizerIterations
        self.optimizerScalars = optimizerScalars
        self.schedule = schedule
        self.seed = seed
        self.history = history
        self.bestValidationLoss = bestValidationLoss
        self.epochsWithoutImprovement = epochsWithoutImprovement
        self.epochTotals = epochTotals
        self.elapsedSeconds = elapsedSeconds
        self.finished = finished
        self.parameterCount = parameterCount
        self.created = created
    }
}

extension CheckpointMetadata {
    /// A checkpoint of a model that has not been trained by `Trainer` (imported, or with a
    /// head from feature extraction): no optimizer state, position at its end.
    public init(model network: Network, config: TrainingConfig, preprocessing: Preprocessing, history: [EpochMetrics],
                bestValidationLoss: Double?, finished: Bool, ranks: Int) {
        self.init(
            model: config.model, imageSize: config.imageSize, preprocessing: preprocessing, config: config,
            epoch: history.count, stepInEpoch: 0, step: history.last?.step ?? 0, globalBatch: config.globalBatch,
            ranks: ranks, optimizer: config.optimizer.rawValue, optimizerHyperparameters: [:], optimizerIterations: 0,
            optimizerScalars: [:], schedule: LearningRateSchedule(baseRate: config.resolvedLearningRate, totalSteps: 1, decay: .constant),
            seed: config.seed, history: history, bestValidationLoss: bestValidationLoss, epochsWithoutImprovement: 0,
            epochTotals: .init(), elapsedSeconds: history.last?.elapsed_s ?? 0, finished: finished,
            parameterCount: network.parameterCount, created: ISO8601DateFormatter().string(from: Date()))
    }

    /// The uncompressed safetensors file: `model/*` weights and `state/*` BatchNorm statistics
    /// of `network`, then `extra` tensors, with this metadata.
    public func encode(network: Network, extra: [SafeTensors.Tensor] = [], extraMetadata: [String: String] = [:]) throws -> [UInt8] {
        try withExtendedLifetime(network) {
            let (header, parts) = try encodeParts(network: network, extra: extra, extraMetadata: extraMetadata)
            var out = header
            for part in parts { out += part }
            return out
        }
    }

    /// The same file as a header and the tensors' bytes where they lie (for streaming it to a
    /// checkpoint without a copy); `network` and `extra`'s memory must outlive the parts.
    public func encodeParts(network: Network, extra: [SafeTensors.Tensor] = [], extraMetadata: [String: String] = [:]) throws
        -> (header: [UInt8], parts: [UnsafeRawBufferPointer]) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = String(decoding: try encoder.encode(self), as: UTF8.self)
        var tensors: [SafeTensors.Tensor] = []
        for slot in network.parameterSlots {
            tensors.append(.init(name: "model/" + slot.name, shape: slot.shape,
                                 values: UnsafeBufferPointer(start: network.parameters.pointer + slot.offset, count: slot.count)))
        }
        for slot in network.stateSlots {
            tensors.append(.init(name: "state/" + slot.name, shape: slot.shape,
                                 values: UnsafeBufferPointer(start: network.state.pointer + slot.offset, count: slot.count)))
        }
        var metadata = ["format": CheckpointMetadata.format, "format_version": String(formatVersion),
                        "model": model, "image_size": String(imageSize), "catdog": json]
        metadata.merge(extraMetadata) { ours, _ in ours }
        return try SafeTensors.encodeParts(tensors + extra, metadata: metadata)
    }
}

/// A checkpoint that may be sound but is larger than the memory available now: not a damaged
/// file, so `--resume auto` stops on it rather than skipping to an older one.
public struct CheckpointMemoryError: Error, CustomStringConvertible {
    public var path: String
    public var problem: String
    public var description: String { "checkpoint \(path): \(problem)" }
}

/// A verified checkpoint in memory.
public struct LoadedCheckpoint {
    public let path: String
    public let metadata: CheckpointMetadata
    public let file: SafeTensors.File
    public let compressedBytes: Int

    /// Reads, decompresses (checking zstd's checksum) and validates `path`. Its start is read
    /// first: a file that is no zstd frame, names no model, or is larger than its model's
    /// checkpoint can compress to is refused before the rest is read.
    /// `available`: the memory that may hold it (`MemoryStatus.available`; tests pass less).
    public init(path: String, available: () -> AvailableMemory? = MemoryStatus.available) throws {
        let (file, start) = try LoadedCheckpoint.readStart(path)
        var compressed = start
        do {
            let contentSize = try LoadedCheckpoint.readingErrors(path) {
                let reader = try Zstd.Reader(compressed)
                _ = try LoadedCheckpoint.header(reader, path: path)
                return reader.contentSize
            }
            guard file.size <= Zstd.compressBound(contentSize) else {
                throw CheckpointError(path: path, problem: "is \(file.size) bytes, more than its \(contentSize) bytes of content can compress to; the file is damaged or crafted")
            }
            try LoadedCheckpoint.checkMemory(holding: file.size + contentSize, path: path, available: available())
            try file.read(file.size, appendingTo: &compressed)
        } catch let error as CheckpointError {
            throw error
        } catch let error as CheckpointMemoryError {
            throw error
        } catch {
            throw CheckpointError(path: path, problem: "\(error)")
        }
        try self.init(compressed: compressed, path: path, available: available)
    }

    /// The model a checkpoint's header names, from the start of the file alone: the header is
    /// checked as a whole read checks it, the tensors are neither read nor verified (a later
    /// `init(path:)` does that).
    public static func model(path: String) throws -> String {
        let start = try readStart(path).start
        return try readingErrors(path) { try header(Zstd.Reader(start), path: path).model }
    }

    /// Opens `path` (a regular file of sane size: the largest model's checkpoint compresses to
    /// well under the limit) and reads its start, enough to hold the safetensors header.
    static func readStart(_ path: String) throws -> (file: BoundedFileReader, start: [UInt8]) {
        do {
            let file = try BoundedFileReader(path, limit: LoadedCheckpoint.maxCompressedBytes)
            var start: [UInt8] = []
            try file.read(min(file.size, LoadedCheckpoint.maxHeaderBytes + (1 << 20)), appendingTo: &start)
            return (file, start)
        } catch {
            throw CheckpointError(path: path, problem: "\(error)")
        }
    }

    public static let maxCompressedBytes = 4 << 30
    /// The safetensors header of a checkpoint is JSON of a few hundred KB at most.
    static let maxHeaderBytes = 16 << 20

    /// Decompresses in two steps: the safetensors header first, whose metadata names the
    /// model; then the tensor bytes, only if the frame declares no more of them than that model's
    /// checkpoint can hold (weights, BatchNorm state, optimizer moments, the best epoch's copy,
    /// an ImageNet classifier). A small file declaring gigabytes is refused before allocating them.
    public init(compressed: [UInt8], path: String, available: () -> AvailableMemory? = MemoryStatus.available) throws {
        let bytes = try LoadedCheckpoint.readingErrors(path) {
            let reader = try Zstd.Reader(compressed)
            var bytes = try LoadedCheckpoint.header(reader, path: path).bytes
            try LoadedCheckpoint.checkMemory(holding: reader.contentSize, path: path, available: available())
            try reader.read(reader.contentSize - bytes.count, appendingTo: &bytes)
            try reader.finish()
            return bytes
        }
        try self.init(decompressed: bytes, path: path, compressedBytes: compressed.count)
    }

    /// A checkpoint whose bytes (`bytes`: compressed and decompressed, or decompressed) are
    /// more than the memory available now is refused before they are read: the largest
    /// model's checkpoint (`simple` at 1024 px with its optimizer's moments, ~11 GB) would
    /// otherwise be killed by the OOM killer on a smaller machine or under a job's limit.
    /// Refuses to build `model` (`floats` of weights, gradients and statistics) beyond the
    /// memory `available`, after the checkpoint's bytes were read.
    static func checkMemory(building model: String, imageSize: Int, floats: Int, path: String, available: AvailableMemory?) throws {
        let bytes = Double(floats) * Double(MemoryLayout<Float>.size)
        guard let available, available.bytes > 0, bytes > Double(available.bytes) else { return }
        throw CheckpointMemoryError(path: path, problem: String(
            format: "%@ at %dx%d needs %.1f GiB for its weights and their gradients, more than the %.1f GiB %@ once the checkpoint is read: use a machine with more free memory%@",
            model, imageSize, imageSize, bytes / 1_073_741_824, Double(available.bytes) / 1_073_741_824, available.source, available.raiseLimit))
    }

    static func checkMemory(holding bytes: Int, path: String, available: AvailableMemory?) throws {
        guard let available, available.bytes > 0, bytes > available.bytes else { return }
        throw CheckpointMemoryError(path: path, problem: String(
            format: "needs %.1f GiB of memory to read (compressed and decompressed), more than the %.1f GiB %@: read it where more memory is free%@",
            Double(bytes) / 1_073_741_824, Double(available.bytes) / 1_073_741_824, available.source, available.raiseLimit))
    }

    /// The safetensors length and header from the start of `reader`'s frame, and the model the
    /// header names, after checking that the tensor bytes it declares fit that model.
    static func header(_ reader: Zstd.Reader, path: String) throws -> (bytes: [UInt8], model: String) {
        var bytes = try reader.read(min(8, reader.contentSize))
        guard bytes.count == 8 else { throw SafeTensors.FormatError(description: "too short for a safetensors file") }
        let headerLength = Int(bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) } & (1 << 40 - 1))
        guard headerLength <= LoadedCheckpoint.maxHeaderBytes, headerLength <= reader.contentSize - 8 else {
            throw SafeTensors.FormatError(description: "header length \(headerLength) does not fit the file")
        }
        bytes += try reader.read(headerLength)
        let dataBytes = reader.contentSize - 8 - headerLength
        let (allowed, model) = try LoadedCheckpoint.legitimateDataBytes(header: bytes[8...], path: path)
        guard dataBytes <= allowed else {
            throw CheckpointError(path: path, problem: """
                declares \(dataBytes) bytes of tensors, more than its model's checkpoint can hold (\(allowed)); \
                the file is damaged or crafted
                """)
        }
        return (bytes, model)
    }

    /// Runs `body`, saying of any error but a `CheckpointError` (or a `CheckpointMemoryError`)
    /// that the file is unreadable.
    static func readingErrors<T>(_ path: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as CheckpointError {
            throw error
        } catch let error as CheckpointMemoryError {
            throw error
        } catch {
            throw CheckpointError(path: path, problem: "not a readable .safetensors.zst file (\(error)); it may be truncated or corrupt")
        }
    }

    /// A checkpoint from a newer catdog-dist is refused with what to do.
    static func checkVersion(_ metadata: [String: String], path: String) throws {
        if let version = Int(metadata["format_version"] ?? ""), version > CheckpointMetadata.currentVersion {
            throw CheckpointError(path: path, problem: """
                written in format version \(version) by a newer catdog-dist; this build reads up to \
                version \(CheckpointMetadata.currentVersion): update catdog-dist
                """)
        }
    }

    /// The most tensor bytes a checkpoint of the model its header names can need, and that
    /// model; unknown models and unreadable headers are errors here already.
    static func legitimateDataBytes(header: ArraySlice<UInt8>, path: String) throws -> (bytes: Int, model: String) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(header)) as? [String: Any],
              let metadata = object["__metadata__"] as? [String: String] else {
            throw CheckpointError(path: path, problem: "not a safetensors file: the header is not JSON")
        }
        if metadata["format"] == CheckpointMetadata.format { try checkVersion(metadata, path: path) }
        guard metadata["format"] == CheckpointMetadata.format, let model = metadata["model"],
              let imageSize = Int(metadata["image_size"] ?? ""), (16...CheckpointMetadata.maxImageSize).contains(imageSize) else {
            throw CheckpointError(path: path, problem: "a safetensors file, but not a catdog-dist checkpoint")
        }
        let counts: (parameters: Int, state: Int)
        do { counts = try ModelZoo.builder(model, imageSize: imageSize).counts() } catch {
            throw CheckpointError(path: path, problem: "its metadata is invalid: \(error)")
        }
        let imagenetClassifier = 1280 * 1000 + 1000
        // PowerSGD's factors (fewer numbers than the weights) and the error feedback of at
        // most `RunLimits.checkpointedErrorFeedbackRanks` ranks, or their sum, each as large
        // as the weights.
        let errors = min(object.keys.filter { $0.hasPrefix("compression/error") }.count, RunLimits.checkpointedErrorFeedbackRanks + 1)
        let compression = object["compression/q"] == nil ? 0 : 1 + errors
        // The weights, at most two optimizer moments, the best weights and with a moving
        // average the live weights beside it; BatchNorm state the same except the moments.
        return (4 * ((5 + compression) * counts.parameters + 3 * counts.state + imagenetClassifier) + (1 << 16), model)
    }

    public init(decompressed bytes: [UInt8], path: String, compressedBytes: Int) throws {
        let file: SafeTensors.File
        do { file = try SafeTensors.decode(bytes) } catch {
            throw CheckpointError(path: path, problem: "not a safetensors file: \(error)")
        }
        guard file.metadata["format"] == CheckpointMetadata.format, let json = file.metadata["catdog"] else {
            throw CheckpointError(path: path, problem: "a safetensors file, but not a catdog-dist checkpoint")
        }
        try LoadedCheckpoint.checkVersion(file.metadata, path: path)
        do { metadata = try JSONDecoder().decode(CheckpointMetadata.self, from: Data(json.utf8)) } catch {
            throw CheckpointError(path: path, problem: "its metadata does not parse: \(describe(error)); the file was damaged or edited")
        }
        if let problem = metadata.problem {
            throw CheckpointError(path: path, problem: "its metadata is invalid: \(problem); the file was damaged or edited")
        }
        self.path = path
        self.file = file
        self.compressedBytes = compressedBytes
    }

    /// The checkpoint's model with its weights and BatchNorm statistics, at the size it was
    /// trained for or at `imageSize` (a model whose weights do not depend on the input size:
    /// global pooling).
    /// `available`: the memory the network may take (`MemoryStatus.available`; tests pass less).
    public func makeNetwork(imageSize: Int? = nil, convolution: ConvolutionOptions = .init(),
                            available: () -> AvailableMemory? = MemoryStatus.available) throws -> Network {
        let network: Network
        let size = imageSize ?? metadata.imageSize
        // Both from the model's outline, before anything is allocated: weights that do not
        // carry over to `size`, and a network (weights and gradients) beyond the memory left.
        let counts = try? ModelZoo.builder(metadata.model, imageSize: size).counts()
        if size != metadata.imageSize, let trained = try? ModelZoo.builder(metadata.model, imageSize: metadata.imageSize).counts(),
           let counts, trained != counts {
            throw CheckpointError(path: path, problem: "holds \(metadata.model), whose weights at \(size)x\(size) differ from those at \(metadata.imageSize)x\(metadata.imageSize) (a dense layer on the flattened map): score it at its own size")
        }
        if let counts {
            try LoadedCheckpoint.checkMemory(building: metadata.model, imageSize: size, floats: 2 * counts.parameters + counts.state,
                                             path: path, available: available())
        }
        do { network = try ModelZoo.build(metadata.model, imageSize: size, convolution: convolution) } catch {
            throw CheckpointError(path: path, problem: "\(error)")
        }
        guard network.parameterCount == metadata.parameterCount else {
            throw CheckpointError(path: path, problem: "says \(metadata.parameterCount) parameters, but \(metadata.model) at \(size)px has \(network.parameterCount)")
        }
        try loadWeights(into: network, prefix: "model/", statePrefix: "state/")
        return network
    }

    public func loadWeights(into network: Network, prefix: String, statePrefix: String) throws {
        do {
            for slot in network.parameterSlots {
                try file.read(prefix + slot.name, into: network.parameters.pointer + slot.offset, count: slot.count)
            }
            for slot in network.stateSlots {
                try file.read(statePrefix + slot.name, into: network.state.pointer + slot.offset, count: slot.count)
            }
        } catch let error as SafeTensors.NotANumber {
            throw CheckpointError(path: path, problem: "\(error)")
        } catch {
            throw CheckpointError(path: path, problem: "does not match model \(metadata.model): \(error)")
        }
        for (buffer, slots, prefix) in [(network.parameters, network.parameterSlots, prefix), (network.state, network.stateSlots, statePrefix)] {
            if let bad = Network.firstNegative(in: buffer.pointer, slots: slots) {
                throw Self.negative(path: path, tensor: prefix + bad.slot, index: bad.index)
            }
        }
    }

    /// A variance below zero: no run writes one.
    public static func negative(path: String, tensor: String, index: Int) -> CheckpointError {
        CheckpointError(path: path, problem: "tensor \(tensor) holds a negative variance (at index \(index)): the file is damaged or was edited")
    }
}

extension CheckpointStore {

    /// The newest checkpoint that verifies; each one that does not is reported through `skipped`.
    /// A checkpoint that cannot be read for want of memory is not skipped: the error is thrown
    /// (an older checkpoint, or a fresh start, would lose the work the newest one holds).
    public func newestValid(available: () -> AvailableMemory? = MemoryStatus.available, skipped: (CheckpointError) -> Void) throws -> LoadedCheckpoint? {
        var candidates = numbered()
        if FileManager.default.fileExists(atPath: lastPath) { candidates.insert(lastPath, at: 0) }
        for candidate in candidates {
            do { return try LoadedCheckpoint(path: candidate, available: available) } catch let error as CheckpointError {
                skipped(error)
            } catch let error as CheckpointMemoryError {
                throw error
            } catch {
                skipped(CheckpointError(path: candidate, problem: "\(error)"))
            }
        }
        return nil
    }
}

extension CheckpointMetadata {
    /// Largest input side a checkpoint may name (the command line accepts the same).
    public static let maxImageSize = CheckpointLimits.maxImageSize

    /// What is wrong with numbers read from a file, or nil: every count, position, size and
    /// fraction is checked against `RunLimits` before anything is allocated, indexed or
    /// computed with it (so that no later arithmetic on them can overflow).
    public var problem: String? {
        typealias L = RunLimits
        guard ModelZoo.names.contains(model) || EfficientNetLite(model: model) != nil else { return "unknown model '\(printable(model.prefix(64)))'" }
        guard (16...Self.maxImageSize).contains(imageSize) else { return "image size \(imageSize) is outside 16...\(Self.maxImageSize)" }
        guard preprocessing.imageSize == imageSize else {
            return "preprocessing image size \(preprocessing.imageSize) differs from the model's \(imageSize)"
        }
        guard (0...imageSize).contains(preprocessing.cropMargin) else { return "crop margin \(preprocessing.cropMargin) is out of range" }
        if let mean = preprocessing.channelMean, mean.count != 3 || !mean.allSatisfy({ $0.isFinite && abs($0) <= 1e6 }) { return "bad channel mean" }
        guard config.model == model, config.imageSize == imageSize else { return "its configuration names another model or size" }
        if let problem = config.problem { return "configuration: \(problem)" }
        guard epoch >= 0, stepInEpoch >= 0, step >= 0, optimizerIterations >= 0, epochsWithoutImprovement >= 0 else {
            return "a negative epoch, step or iteration count"
        }
        if let problem = RunLimits.firstProblem(
            { L.check("epoch", epoch, 0...L.epochs.upperBound) },
            { L.check("step", step, L.steps) },
            { L.check("step in epoch", stepInEpoch, 0...step) },
            { L.check("optimizer iterations", optimizerIterations, L.steps) },
            { L.check("epochs without improvement", epochsWithoutImprovement, 0...epoch) },
            { L.check("ranks", ranks, L.ranks) },
            { L.check("parameter count", parameterCount, L.parameters) },
            { L.check("schedule steps", schedule.totalSteps, L.steps) },
            { L.check("warmup steps", schedule.warmupSteps, L.steps) },
            { L.check("schedule rate", Double(schedule.baseRate), L.learningRate) },
            { L.check("schedule minimum factor", Double(schedule.minimumFactor), 0...1) },
            { L.check("schedule step factor", Double(schedule.stepFactor), 0...1) },
            { L.check("schedule step interval", schedule.stepEvery, 1...L.steps.upperBound) },
            { L.check("format version", formatVersion, 1...Self.currentVersion) },
            { L.check("elapsed seconds", elapsedSeconds, L.seconds) },
            { L.check("epoch loss sum", epochTotals.lossSum, 0...L.loss.upperBound * max(1, min(epochTotals.count, 1e15))) },
            { L.check("epoch correct count", epochTotals.correct, 0...1e15) },
            { L.check("epoch sample count", epochTotals.count, 0...1e15) },
            { bestValidationLoss.flatMap { L.check("best validation loss", $0, L.loss) } },
            { epochImageSize.flatMap { L.check("epoch image size", $0, 16...imageSize) } }
        ) { return problem }
        // Training at other sizes (progressive resizing, --train-size, a resumed epoch's size)
        // needs weights that do not depend on the size: global pooling.
        let otherSizes = Set([config.resizeFrom, config.trainSize, epochImageSize].compactMap { $0 }).subtracting([imageSize])
        if !otherSizes.isEmpty {
            let full = try? ModelZoo.builder(model, imageSize: imageSize).counts()
            for size in otherSizes.sorted() {
                guard let full, let counts = try? ModelZoo.builder(model, imageSize: size).counts(), counts == full else {
                    return "it trains \(model) at \(size)x\(size), whose weights differ from those at \(imageSize)x\(imageSize)"
                }
            }
        }
        // (Ranks may outnumber the batch in a checkpoint of feature extraction, which has no batches.)
        guard globalBatch == config.globalBatch else { return "batch \(globalBatch) differs from its configuration's \(config.globalBatch)" }
        // Every optimizer's hyperparameters (momentum, betas, rho, epsilon, nesterov) lie in [0, 1].
        guard optimizerHyperparameters.count <= 64, optimizerScalars.count <= 64,
              optimizerHyperparameters.values.allSatisfy({ $0.isFinite && (0...1).contains($0) }),
              optimizerScalars.values.allSatisfy({ $0.isFinite && abs($0) <= 1e30 })
        else { return "bad optimizer numbers" }
        guard history.count <= epoch + 1 else { return "more epochs of history than epochs" }
        for item in history {
            // A metric that does not exist (no validation images) is stored as null: NaN.
            func bad(_ x: Double, _ range: ClosedRange<Double>) -> Bool { !x.isNaN && !(x.isFinite && range.contains(x)) }
            guard (1...L.epochs.upperBound).contains(item.epoch), L.steps.contains(item.step), L.ranks.contains(item.ranks),
                  !bad(item.train_loss, L.loss), !bad(item.val_loss, L.loss), !bad(item.train_acc, 0...1), !bad(item.val_acc, 0...1),
                  !bad(item.images_per_s, 0...1e12), !bad(item.elapsed_s, L.seconds), !bad(item.lr, L.learningRate),
                  item.train_size.map({ (16...imageSize).contains($0) }) ?? true
            else { return "a bad history entry (epoch \(item.epoch))" }
        }
        return nil
    }
}
