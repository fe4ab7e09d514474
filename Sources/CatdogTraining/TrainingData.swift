import CatdogData
import CatdogDistributed
import CatdogRun
import Foundation

/// The decoded training and validation images of one rank.
///
/// Training images: each rank decodes its contiguous 1/N block of the files, then the ranks
/// all-gather the uint8 squares, so every rank can take any sample of an epoch's global
/// permutation (the global batch of a step then does not depend on N). Validation images:
/// each rank decodes and keeps only its own block and evaluates it.
public final class TrainingData {
    public let preprocessing: Preprocessing
    public let trainFiles: [LabeledFile]
    public let validationFiles: [LabeledFile]
    public let train: ImageStore
    public let validation: ImageStore
    /// Slots of `train` that decoded, in file order: the epoch permutation runs over these.
    public let trainSamples: [Int]
    /// Slots of this rank's validation block that decoded.
    public let localValidationSamples: [Int]
    public let validationCount: Int
    /// Summary over all ranks, e.g. "skipped 4 of 2004 files: 2 unreadable, 1 not a JPEG, 1 empty".
    public let skippedSummary: String?
    /// Every skipped file with its reason (complete on every rank).
    public let skippedDetails: [String]
    public let decodeSeconds: Double

    public init(folder: String, config: TrainingConfig, communicator comm: Communicator,
                log: (String) -> Void = { _ in }) throws {
        let files = try DataFolder.labeledFiles(in: folder)
        let split = try DataFolder.trainingSplit(files, validationFraction: config.validationFraction, seed: config.seed,
                                                 folder: folder, warn: comm.rank == 0 ? log : { _ in })
        let trainFiles = split.train, validationFiles = split.validation
        self.trainFiles = trainFiles
        self.validationFiles = validationFiles
        let preprocessing = Preprocessing(imageSize: config.imageSize, fit: config.fit, scale: config.scale,
                                      cropMargin: config.augmentation.crop ? nil : 0)
        self.preprocessing = preprocessing
        let start = Date()
        let train = ImageStore(count: trainFiles.count, storedSize: preprocessing.storedSize, labels: trainFiles.map(\.label))
        let validation = ImageStore(count: validationFiles.count, storedSize: preprocessing.storedSize,
                                    labels: validationFiles.map(\.label))
        self.train = train
        self.validation = validation
        let trainBlock = comm.block(of: trainFiles.count)
        let validationBlock = comm.block(of: validationFiles.count)
        log("decoding \(trainBlock.count + validationBlock.count) images to \(preprocessing.storedSize)x\(preprocessing.storedSize) on each rank")
        var problems: [UInt8] = []
        let trainReport = train.decode(trainFiles.map(\.path), indices: trainBlock, fit: config.fit)
        let validationReport = validation.decode(validationFiles.map(\.path), indices: validationBlock, fit: config.fit)

        // Share the decoded training squares and every file's outcome (0 = ok, else a problem code).
        let counts = (0..<comm.size).map { comm.block(of: trainFiles.count, rank: $0).count }
        let offsets = (0..<comm.size).map { comm.block(of: trainFiles.count, rank: $0).lowerBound }
        try comm.allGather(UnsafeMutableRawPointer(train.pixels), itemBytes: train.bytesPerImage, counts: counts, offsets: offsets)
        let allFiles = trainFiles + validationFiles
        problems = .init(repeating: 0, count: allFiles.count)
        let index = Dictionary(uniqueKeysWithValues: allFiles.enumerated().map { ($1.path, $0) })
        for skip in trainReport.skipped + validationReport.skipped {
            problems[index[skip.path]!] = UInt8(skip.problem.code)
        }
        // Each file belongs to exactly one rank's block, so a sum gathers the outcomes.
        var asDoubles = problems.map(Double.init)
        try comm.allReduceSum(&asDoubles)
        problems = asDoubles.map { UInt8($0) }
        for i in 0..<trainFiles.count { train.valid[i] = problems[i] == 0 ? 1 : 0 }
        let trainSamples = (0..<trainFiles.count).filter { train.valid[$0] == 1 }
        self.trainSamples = trainSamples
        localValidationSamples = validationBlock.filter { validation.valid[$0] == 1 }
        validationCount = (0..<validationFiles.count).filter { problems[trainFiles.count + $0] == 0 }.count

        var report = DecodeReport()
        report.attempted = allFiles.count
        var details: [String] = []
        for (i, code) in problems.enumerated() {
            guard let problem = ImageProblem(code: Int(code)) else { continue }
            let detail = (trainReport.skipped + validationReport.skipped).first { $0.path == allFiles[i].path }?.detail
            report.skipped.append((allFiles[i].path, problem, detail ?? ""))
            details.append("\(allFiles[i].path): \(problem.rawValue)" + (detail.map { " (\($0))" } ?? ""))
        }
        skippedSummary = report.summary
        skippedDetails = details
        decodeSeconds = Date().timeIntervalSince(start)
        guard !trainSamples.isEmpty else {
            throw DataFolderError(description: "no usable images in '\(folder)': \(report.summary ?? "none decoded")")
        }
    }
}
