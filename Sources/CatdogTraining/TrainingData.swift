import CatdogData
import CatdogDistributed
import CatdogRun
import CatdogSupport
import Foundation

/// The training and validation images of a run, as every rank sees them: which files there
/// are, which of them are usable (the same set on every rank, known before the first step),
/// and where a sample's pixels come from.
///
/// Two ways to get pixels, chosen by `Cache`:
/// - **streaming** (`none`): a rank decodes only the samples of its slice of each batch, from
///   the files (the OS page cache keeps hot JPEGs once per machine). Memory per rank does not
///   depend on the data set. Before epoch 1 the ranks check every file once between them
///   (the whole file entropy-decoded at 1/8 scale), so a broken file is skipped everywhere.
/// - **node cache** (`node`): the decoded squares are held once per machine in an MPI-3 shared
///   window, filled by that machine's ranks together; samples are then copied, not decoded.
///
/// `auto` takes the node cache when it needs at most a tenth of the machine's available
/// memory, else streams; `choice` says which and why. Either way a sample's pixels are the
/// same bytes, so the choice changes neither results nor checkpoints.
public final class TrainingData {
    public enum Cache: String, CaseIterable, Sendable {
        case auto, node, none
    }

    public let preprocessing: Preprocessing
    public let trainFiles: [LabeledFile]
    public let validationFiles: [LabeledFile]
    /// Indices into `trainFiles` of the usable files, in file order: the epoch permutation runs over these.
    public let trainSamples: [Int]
    /// Indices into `validationFiles` of this rank's block's usable files.
    public let localValidationSamples: [Int]
    public let validationCount: Int
    /// Summary over all ranks, e.g. "skipped 4 of 2004 files: 2 unreadable, 1 not a JPEG, 1 empty".
    public let skippedSummary: String?
    /// Every skipped file with its reason (complete on every rank).
    public let skippedDetails: [String]
    /// Seconds to check (streaming) or decode (node cache) the files before training.
    public let decodeSeconds: Double
    /// The node cache, or nil when streaming.
    public let cache: (train: ImageStore, validation: ImageStore, memory: NodeSharedMemory)?
    /// What `Cache` resolved to and why, for the log.
    public let choice: String

    /// Bytes the node cache takes for `count` images of `preprocessing`.
    public static func cacheBytes(count: Int, preprocessing: Preprocessing) -> Int {
        count * preprocessing.storedSize * preprocessing.storedSize * 3
    }

    /// `preprocessing` overrides the one `config` describes (an imported network's scaling, or
    /// a resumed run's).
    public init(folder: String, config: TrainingConfig, communicator comm: Communicator, cache: Cache = .auto,
                preprocessing override: Preprocessing? = nil,
                availableMemory: Int? = MemoryStatus.availableBytes(), log: (String) -> Void = { _ in }) throws {
        let files = try DataFolder.labeledFiles(in: folder, warn: comm.rank == 0 ? log : { _ in })
        let split = try DataFolder.trainingSplit(files, validationFraction: config.validationFraction, seed: config.seed,
                                                 folder: folder, warn: comm.rank == 0 ? log : { _ in })
        let trainFiles = split.train, validationFiles = split.validation
        self.trainFiles = trainFiles
        self.validationFiles = validationFiles
        let preprocessing = override ?? Preprocessing(imageSize: config.imageSize, fit: config.fit, scale: config.scale,
                                                      cropMargin: config.augmentation.crop || config.augmentation.scale == true ? nil : 0)
        self.preprocessing = preprocessing
        let start = Date()
        let allFiles = trainFiles + validationFiles
        let paths = allFiles.map(\.path)

        // Decide where pixels come from; every rank decides the same, by the machine with
        // the least memory available.
        let bytes = TrainingData.cacheBytes(count: allFiles.count, preprocessing: preprocessing)
        var negated = [-Double(availableMemory ?? 0)]
        try comm.allReduceMax(&negated)
        let available = -negated[0]
        let plan = TrainingData.plan(cache, bytes: bytes, available: available)
        choice = plan.choice

        var problems = [Double](repeating: 0, count: allFiles.count)
        var details: [String: String] = [:]
        /// Records why file `i` cannot be used.
        func note(_ i: Int, _ error: Error) {
            if let error = error as? ImageError {
                problems[i] = Double(error.problem.code)
                details[paths[i]] = error.detail
            } else {
                problems[i] = Double(ImageProblem.unreadable.code)
            }
        }
        let decoder = SquareDecoder(storedSize: preprocessing.storedSize, fit: config.fit)
        if plan.node {
            let memory = try comm.nodeSharedMemory(bytes: max(bytes, 1))
            let stores = TrainingData.nodeStores(memory, trainFiles: trainFiles, validationFiles: validationFiles, preprocessing: preprocessing)
            // The machine's ranks split every file between them.
            let block = (memory.localRank * allFiles.count / memory.localSize)..<((memory.localRank + 1) * allFiles.count / memory.localSize)
            log("decoding \(allFiles.count) images to \(preprocessing.storedSize)x\(preprocessing.storedSize) into the node cache (\(block.count) on each rank)")
            for i in block {
                let target = i < trainFiles.count ? stores.train.image(i) : stores.validation.image(i - trainFiles.count)
                do { try decoder.decode(paths[i], into: target) } catch { note(i, error) }
            }
            try memory.barrier()
            self.cache = (stores.train, stores.validation, memory)
        } else {
            let block = comm.block(of: allFiles.count)
            log("checking \(block.count) images on each rank (streaming: decoded again at every step)")
            for i in block {
                if let error = decoder.check(paths[i]) { note(i, error) }
            }
            self.cache = nil
        }
        // A file broken for any rank (on any machine) is skipped by all of them.
        try comm.allReduceMax(&problems)

        trainSamples = (0..<trainFiles.count).filter { problems[$0] == 0 }
        let validationBlock = comm.block(of: validationFiles.count)
        localValidationSamples = validationBlock.filter { problems[trainFiles.count + $0] == 0 }
        validationCount = (0..<validationFiles.count).filter { problems[trainFiles.count + $0] == 0 }.count

        let (report, lines) = TrainingData.skipped(problems, paths: paths, details: details)
        skippedSummary = report.summary
        skippedDetails = lines
        decodeSeconds = Date().timeIntervalSince(start)
        guard !trainSamples.isEmpty else {
            throw DataFolderError(description: "no usable images in '\(folder)': \(report.summary ?? "none decoded")")
        }
    }

    /// The files left out (`problems[i]` not 0), as a report and one log line each.
    private static func skipped(_ problems: [Double], paths: [String], details: [String: String]) -> (DecodeReport, [String]) {
        var report = DecodeReport()
        report.attempted = paths.count
        var lines: [String] = []
        for (i, code) in problems.enumerated() {
            guard let problem = ImageProblem(code: Int(code)) else { continue }
            let detail = details[paths[i]]
            report.skipped.append((i, paths[i], problem, detail ?? ""))
            lines.append("\(printable(paths[i])): \(problem.rawValue)" + (detail.map { " (\(printable($0)))" } ?? ""))
        }
        return (report, lines)
    }

    /// Whether the decoded images go into the node cache (`cache`, or with `auto` when they
    /// take at most a tenth of the `available` bytes), and the log's words for the choice.
    static func plan(_ cache: Cache, bytes: Int, available: Double) -> (node: Bool, choice: String) {
        let mib = { (b: Double) in String(format: "%.0f MiB", b / 1_048_576) }
        switch cache {
        case .node:
            return (true, "node cache (--cache node): \(mib(Double(bytes))) once per machine")
        case .none:
            return (false, "streaming (--cache none): each rank decodes its slice of every batch")
        case .auto:
            let node = available > 0 && Double(bytes) <= available / 10
            return (node, node
                ? "node cache: the decoded images take \(mib(Double(bytes))), at most a tenth of the \(mib(available)) available, held once per machine"
                : "streaming: the decoded images would take \(mib(Double(bytes))), more than a tenth of the \(mib(available)) available; each rank decodes its slice of every batch")
        }
    }

    /// The training and validation images' stores in the machine's shared `memory`, one after the other.
    private static func nodeStores(_ memory: NodeSharedMemory, trainFiles: [LabeledFile], validationFiles: [LabeledFile],
                                   preprocessing: Preprocessing) -> (train: ImageStore, validation: ImageStore) {
        let pixels = memory.pointer.bindMemory(to: UInt8.self, capacity: max(memory.bytes, 1))
        let bytesPerImage = preprocessing.storedSize * preprocessing.storedSize * 3
        return (ImageStore(count: trainFiles.count, storedSize: preprocessing.storedSize, labels: trainFiles.map(\.label), pixels: pixels),
                ImageStore(count: validationFiles.count, storedSize: preprocessing.storedSize, labels: validationFiles.map(\.label),
                           pixels: pixels + trainFiles.count * bytesPerImage))
    }

    /// Labels as floats (0 cat, 1 dog).
    func label(train index: Int) -> Float { Float(trainFiles[index].label) }
    func label(validation index: Int) -> Float { Float(validationFiles[index].label) }
}

/// Writes samples of a `TrainingData` as network input: from the node cache, or decoded from
/// the file. Owns its decoder and a square of scratch, so each thread needs its own.
final class SampleWriter {
    let data: TrainingData
    let decoder: SquareDecoder
    let square: UnsafeMutablePointer<UInt8>

    init(data: TrainingData) {
        self.data = data
        decoder = SquareDecoder(storedSize: data.preprocessing.storedSize, fit: data.preprocessing.fit)
        square = .allocate(capacity: decoder.bytesPerImage)
    }

    deinit { square.deallocate() }

    /// Training sample `index` (into `trainFiles`), augmented as keyed by (seed, epoch, index).
    /// Throws `ImageError` if streaming and the file no longer decodes.
    /// `size`: the epoch's input size (progressive resizing), else the working size.
    func writeTrain(_ index: Int, epoch: Int, config: TrainingConfig, size: Int? = nil, to output: UnsafeMutablePointer<Float>) throws {
        var random = Augmentation.stream(seed: config.seed, epoch: epoch, sample: index)
        let source = try pixels(data.cache?.train, index, path: data.trainFiles[index].path)
        ImageStore.writeSample(from: source, storedSize: decoder.storedSize, to: output, preprocessing: data.preprocessing,
                               augmentation: config.augmentation, random: &random, outputSize: size)
    }

    /// Validation sample `index` (into `validationFiles`), centred, not augmented.
    func writeValidation(_ index: Int, to output: UnsafeMutablePointer<Float>) throws {
        var random = Random(seed: 0)
        let source = try pixels(data.cache?.validation, index, path: data.validationFiles[index].path)
        ImageStore.writeSample(from: source, storedSize: decoder.storedSize, to: output, preprocessing: data.preprocessing,
                               augmentation: .none, random: &random)
    }

    /// The stored square of a sample: in the node cache, or decoded from `path` into scratch.
    private func pixels(_ cached: ImageStore?, _ index: Int, path: String) throws -> UnsafePointer<UInt8> {
        if let cached { return UnsafePointer(cached.image(index)) }
        try decoder.decode(path, into: square)
        return UnsafePointer(square)
    }
}
