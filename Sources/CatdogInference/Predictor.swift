import CatdogData
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

/// A trained model ready to score images: the network and the preprocessing, both read from
/// the checkpoint's metadata, so images are always prepared as in training.
public final class Predictor {
    public let checkpoint: LoadedCheckpoint
    public let network: Network
    public let preprocessing: Preprocessing
    /// Images per forward pass: the one asked for, or fewer where their activations would not
    /// fit `activationBudget` (a large model at a large size: EfficientNet-Lite0 at 256 px
    /// needs about 150 MB an image).
    public let batchSize: Int
    public static let defaultActivationBudget = 512 << 20
    private let activationBudget: Int

    /// `imageSize`: score at this input size instead of the training's (the same field of view
    /// at more or fewer pixels; the crop margin scales with it), for models with global pooling.
    /// `convolution`: how the convolutions compute (their algorithm and precision).
    public init(checkpoint: LoadedCheckpoint, batchSize: Int = 32, activationBudget: Int = Predictor.defaultActivationBudget,
                imageSize: Int? = nil, convolution: ConvolutionOptions = .init()) throws {
        self.checkpoint = checkpoint
        network = try checkpoint.makeNetwork(imageSize: imageSize, convolution: convolution)
        preprocessing = checkpoint.metadata.preprocessing.resized(to: imageSize ?? checkpoint.metadata.preprocessing.imageSize)
        // One logit (dog against cat); an ImageNet classifier's 1000 would be read as nonsense.
        guard network.outputShape.count == 1 else {
            throw CheckpointUseError(description: "\(checkpoint.path) holds \(checkpoint.metadata.model), whose output is \(network.outputShape.count) classes, not a cat/dog classifier; train or import a model with a cat/dog head")
        }
        guard batchSize > 0 else { throw CheckpointUseError(description: "the batch size must be positive, not \(batchSize)") }
        self.batchSize = max(1, min(batchSize, activationBudget / max(network.inferenceBytesPerSample(), 1)))
        self.activationBudget = activationBudget
    }

    public struct CheckpointUseError: Error, CustomStringConvertible {
        public var description: String
    }

    /// The probability that each image is a dog, or why it could not be read: the mean of its
    /// probabilities over the views `tta` names (the centred crop alone by default).
    /// `progress` is told how many images are done after each batch.
    public func dogProbabilities(_ paths: [String], tta: TestTimeAugmentation = .none,
                                 progress: ((Int) -> Void)? = nil) -> [Result<Double, ImageError>] {
        dogProbabilities(paths, views: tta.views(margin: preprocessing.cropMargin), progress: progress)
    }

    /// The mean of each image's probabilities over `views` (test-time augmentation).
    public func dogProbabilities(_ paths: [String], views: [TestTimeView], progress: ((Int) -> Void)? = nil) -> [Result<Double, ImageError>] {
        precondition(!views.isEmpty)
        var results = [Result<Double, ImageError>?](repeating: nil, count: paths.count)
        // Buffers for the batches at hand, not for the largest batch that could be asked for.
        network.reserveForInference(maxBatch: min(batchSize, max(paths.count, 1)))
        let sampleSize = network.inputShape.count
        var start = 0
        while start < paths.count {
            let chunk = Array(start..<min(start + batchSize, paths.count))
            let store = ImageStore(count: chunk.count, storedSize: preprocessing.storedSize, labels: chunk.map { _ in 0 })
            let report = store.decode(chunk.map { paths[$0] }, indices: 0..<chunk.count, fit: preprocessing.fit)
            for skip in report.skipped {
                results[chunk[skip.index]] = .failure(ImageError(problem: skip.problem, detail: skip.detail))
            }
            let good = (0..<chunk.count).filter { store.valid[$0] == 1 }
            var sums = [Double](repeating: 0, count: good.count)
            for view in views {
                for (slot, index) in good.enumerated() { write(store, index, to: network.input + slot * sampleSize, view: view) }
                let output = network.forward(batch: good.count, context: PassContext(training: false))
                for slot in 0..<good.count { sums[slot] += BinaryCrossEntropy.sigmoid(Double(output[slot])) }
            }
            for (slot, index) in good.enumerated() {
                results[chunk[index]] = .success(sums[slot] / Double(views.count))
            }
            start += chunk.count
            progress?(start)
        }
        return results.map { $0! }
    }

    /// Writes `view` of the image in `store`'s slot `index` to `sample`, as the network takes it.
    private func write(_ store: ImageStore, _ index: Int, to sample: UnsafeMutablePointer<Float>, view: TestTimeView) {
        var random = Random(seed: 0)
        store.writeSample(index, to: sample, preprocessing: preprocessing, augmentation: .none, random: &random, cropAt: view.crop)
        if view.flip { ImageStore.mirror(sample, size: preprocessing.imageSize) }
    }

    /// Images a pass of `recalibrateBatchNorm` takes: `batchSize`, or as many as training's
    /// buffers for them fit the activation budget.
    public var recalibrationBatch: Int {
        max(1, min(batchSize, activationBudget / max(network.activationBytesPerSample, 1)))
    }

    /// Precise BatchNorm at this predictor's size (see `Network.recalibrateBatchNorm`): the
    /// moving statistics re-estimated from `paths` prepared as scoring prepares them (the centred
    /// crop, every other image mirrored), in batches of `batchSize` or fewer where training's
    /// buffers for them would not fit the activation budget (a forward pass in training mode
    /// keeps every activation: EfficientNet-Lite2 at 296 px needs about 211 MiB an image).
    /// Unreadable images are left out. Returns the images used; the statistics are this
    /// process's alone (average them across ranks, weighted by this count).
    @discardableResult
    public func recalibrateBatchNorm(_ paths: [String]) -> Int {
        let sampleSize = network.inputShape.count
        let batchSize = recalibrationBatch
        var next = 0
        return network.recalibrateBatchNorm(maxBatch: batchSize) { input in
            var written = 0
            while written == 0 && next < paths.count {
                let chunk = next..<min(next + batchSize, paths.count)
                next = chunk.upperBound
                let store = ImageStore(count: chunk.count, storedSize: preprocessing.storedSize, labels: chunk.map { _ in 0 })
                store.decode(Array(paths[chunk]), indices: 0..<chunk.count, fit: preprocessing.fit)
                for index in 0..<chunk.count where store.valid[index] == 1 {
                    write(store, index, to: input + written * sampleSize, view: TestTimeView(flip: (chunk.lowerBound + index) % 2 == 1))
                    written += 1
                }
            }
            return written
        }
    }

    /// What the ONNX model takes for each image (see `ONNXExport`): its RGB pixel values 0–255
    /// after decoding, resizing and the centre crop, (size, size, 3) per image in a row; images
    /// that cannot be read are left out and reported.
    public func pixels(_ paths: [String]) -> (pixels: [Float], read: [String], failed: [(String, ImageError)]) {
        let size = preprocessing.imageSize, sampleSize = size * size * 3
        let store = ImageStore(count: paths.count, storedSize: preprocessing.storedSize, labels: paths.map { _ in 0 })
        let report = store.decode(paths, indices: 0..<paths.count, fit: preprocessing.fit)
        let failed = report.skipped.map { ($0.path, ImageError(problem: $0.problem, detail: $0.detail)) }
        let good = (0..<paths.count).filter { store.valid[$0] == 1 }
        var pixels = [Float](repeating: 0, count: good.count * sampleSize)
        let (multiplier, offsets) = preprocessing.affine()
        pixels.withUnsafeMutableBufferPointer { out in
            for (slot, index) in good.enumerated() {
                var random = Random(seed: 0)
                let sample = out.baseAddress! + slot * sampleSize
                store.writeSample(index, to: sample, preprocessing: preprocessing, augmentation: .none, random: &random)
                // Back from the scaled input to the byte it came from.
                for i in 0..<sampleSize { sample[i] = ((sample[i] - offsets[i % 3]) / multiplier).rounded() }
            }
        }
        return (pixels, good.map { paths[$0] }, failed)
    }
}

/// Kaggle's logloss of one prediction: −[y·log p + (1−y)·log(1−p)], p clipped to [1e-15, 1−1e-15].
public func logLoss(probability p: Double, label: Int) -> Double {
    BinaryCrossEntropy.logLoss(probability: p, dog: label == 1)
}

/// Scores of a labelled set: logloss, accuracy and the confusion matrix (dog = positive).
public struct Evaluation: Codable, Sendable, Equatable {
    public var count = 0
    public var logloss = 0.0
    public var accuracy = 0.0
    /// Rows: true class; columns: predicted class. [[cat→cat, cat→dog], [dog→cat, dog→dog]].
    public var confusion = [[0, 0], [0, 0]]
    public var unreadable = 0

    public init() {}

    /// Accumulates (probability, label) pairs; call `finish` after summing across ranks.
    public static func sums(_ pairs: [(Double, Int)], unreadable: Int) -> [Double] {
        var s = [Double](repeating: 0, count: 7)
        for (p, label) in pairs {
            s[0] += 1
            s[1] += logLoss(probability: p, label: label)
            s[2 + label * 2 + (p >= 0.5 ? 1 : 0)] += 1
        }
        s[6] = Double(unreadable)
        return s
    }

    public init(sums s: [Double]) {
        count = Int(s[0])
        logloss = count > 0 ? s[1] / s[0] : .nan
        confusion = [[Int(s[2]), Int(s[3])], [Int(s[4]), Int(s[5])]]
        accuracy = count > 0 ? Double(confusion[0][0] + confusion[1][1]) / s[0] : .nan
        unreadable = Int(s[6])
    }
}

/// One view of an image at test time: mirrored or not, and the crop's place in the stored
/// square (nil: centred).
public struct TestTimeView: Sendable {
    public var flip: Bool
    public var crop: (top: Int, left: Int)?

    public init(flip: Bool, crop: (top: Int, left: Int)? = nil) {
        self.flip = flip
        self.crop = crop
    }
}

/// Test-time augmentation (`--tta`): which views of an image are scored and averaged.
public enum TestTimeAugmentation: String, CaseIterable, Sendable {
    /// The centred crop alone.
    case none
    /// The centred crop and its mirror image.
    case flip
    /// The centre and the four corners of the stored square (its crop margin), each also mirrored.
    case crops
    /// The centre and the crop moved by a quarter of the margin up, down, left and right, each
    /// also mirrored.
    case shift

    public func views(margin: Int) -> [TestTimeView] {
        let c = margin / 2, q = max(margin / 4, 1)
        let places: [(Int, Int)?]
        switch self {
        case .none: return [TestTimeView(flip: false)]
        case .flip: return [TestTimeView(flip: false), TestTimeView(flip: true)]
        case .crops: places = [nil, (0, 0), (0, margin), (margin, 0), (margin, margin)]
        case .shift: places = [nil, (c - q, c), (c + q, c), (c, c - q), (c, c + q)]
        }
        return places.flatMap { place in
            [false, true].map { TestTimeView(flip: $0, crop: place.map { (top: $0.0, left: $0.1) }) }
        }
    }
}
