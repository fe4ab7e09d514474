import CatdogData
import CatdogDistributed
import CatdogRun
import CatdogSupport
@testable import CatdogTraining
import XCTest

/// The transfer head trained by the one epoch driver (`FeatureExtraction.trainHead` through
/// `Trainer.fit` over `PooledFeatures`), with ranks as threads.
final class LogisticHeadTests: XCTestCase {
    /// On 1 rank and on 2: every rank ends with bit-identical weights; the two runs (same
    /// global batch, same permutations) agree to 1e-3 of the weights' size; the weights point
    /// along the truth (cosine ≥ 0.97); the history has 20 epochs numbered 1…20 with validation
    /// scored by mirror TTA, and the best epoch's loss is the one the kept head gives
    /// (`validationLogits`, to 1e-6).
    func testTheHeadTrainsThroughTheEpochDriverAlikeOnEveryRank() throws {
        // 900 images, the last 300 for validation, whose mirror images' features differ by up to ±0.2.
        let x = FeatureExtraction.Extracted.synthetic(truth: [1.5, -1, 0.5, 0], trainCount: 600, validationCount: 300,
                                                      mirrorNoise: 0.2, seed: 5)
        var head = FeatureExtraction.HeadConfig()
        head.epochs = 20
        head.batch = 64
        head.learningRate = 0.05
        head.weightDecay = 0
        head.patience = 0
        var config = TrainingConfig()
        config.seed = 3
        var weights: [Int: [Float]] = [:]
        for ranks in [1, 2] {
            let heads = try ThreadCommunicator.run(ranks: ranks) { comm -> ([Float], Double, [EpochMetrics]) in
                let trained = try FeatureExtraction.trainHead(x, head: head, config: config, preprocessing: Preprocessing(imageSize: 8),
                                                              communicator: comm, log: { _ in }, metricsFile: nil)
                let scored = FeatureExtraction.validationLogits(x, trained)
                return (trained.weights + [trained.bias], scored.loss(temperature: 1, indices: Array(scored.logits.indices)),
                        trained.history)
            }
            for other in heads.dropFirst() { XCTAssertEqual(other.0, heads[0].0, "ranks \(ranks): the ranks' heads differ") }
            let (w, keptLoss, history) = heads[0]
            weights[ranks] = w
            XCTAssertEqual(history.map(\.epoch), Array(1...20))
            let best = try XCTUnwrap(history.map(\.val_loss).min())
            XCTAssertEqual(keptLoss, best, accuracy: 1e-6, "ranks \(ranks): the kept head is not the best epoch's")
            let truth: [Float] = [1.5, -1, 0.5, 0]
            let dot = zip(w, truth).reduce(0) { $0 + $1.0 * $1.1 }
            let norms = (w.prefix(4).reduce(0) { $0 + $1 * $1 } * truth.reduce(0) { $0 + $1 * $1 }).squareRoot()
            XCTAssertGreaterThanOrEqual(dot / norms, 0.97, "ranks \(ranks): weights \(w)")
        }
        let one = try XCTUnwrap(weights[1]), two = try XCTUnwrap(weights[2])
        let size = one.reduce(0) { max($0, abs($1)) }
        for (a, b) in zip(one, two) { XCTAssertEqual(a, b, accuracy: 1e-3 * size, "1 rank \(one) against 2 ranks \(two)") }
    }
}

extension FeatureExtraction.Extracted {
    /// `trainCount + validationCount` images of `truth.count` features uniform in ±2, each
    /// labelled a dog with probability σ(truth · features); with `mirrorNoise`, the validation
    /// images' mirror images have the same features each moved by up to ±mirrorNoise.
    static func synthetic(truth: [Float], trainCount: Int, validationCount: Int, mirrorNoise: Float? = nil,
                          seed: UInt64) -> FeatureExtraction.Extracted {
        let width = truth.count, count = trainCount + validationCount
        var random = Random(seed: seed)
        let pooled = FloatBuffer(count: count * width)
        let mirrored = mirrorNoise.map { _ in FloatBuffer(count: validationCount * width) }
        var files: [LabeledFile] = []
        for i in 0..<count {
            var z: Float = 0
            for k in 0..<width {
                pooled[i * width + k] = random.uniform(-2, 2)
                z += truth[k] * pooled[i * width + k]
                if let mirrored, let noise = mirrorNoise, i >= trainCount {
                    mirrored[(i - trainCount) * width + k] = pooled[i * width + k] + random.uniform(-noise, noise)
                }
            }
            files.append(LabeledFile(path: "\(i).jpg", label: random.uniform() < 1 / (1 + exp(-z)) ? 1 : 0))
        }
        return FeatureExtraction.Extracted(files: files, trainCount: trainCount, pooled: pooled, mirroredValidation: mirrored,
                                           width: width, boundary: nil, boundaryWidth: 0,
                                           problems: [Double](repeating: 0, count: count), seconds: 0, imagesPerSecond: 0,
                                           report: DecodeReport())
    }
}
