import CatdogEngine
import Foundation

/// Temperature scaling (Guo et al., 2017): a classifier's logits divided by one T > 0 fitted to
/// minimise the validation logloss. It leaves each image's prediction where it is (without TTA)
/// and only makes the probabilities more or less sure, which is what Kaggle's logloss scores.
/// Since T is fitted on the validation images, its honest effect is measured by cross-fitting:
/// T fitted on one half of them scores the other half, and the other way round.
public struct TemperatureScaling: Sendable {
    /// Each validation image's logit, and its mirror image's when validation uses mirror TTA.
    public let logits: [Double]
    public let mirrored: [Double]?
    public let dogs: [Bool]

    public init(logits: [Double], mirrored: [Double]?, dogs: [Bool]) {
        precondition(logits.count == dogs.count && (mirrored?.count ?? logits.count) == logits.count)
        self.logits = logits
        self.mirrored = mirrored
        self.dogs = dogs
    }

    /// T is searched in [1/4, 4], on log T: wider than a head trained by logloss needs, narrow
    /// enough that a few lucky validation images cannot make it 20× surer.
    public static let range = (low: log(0.25), high: log(4.0))
    /// Fewer validation images than this are too few to fit T on (a handful that are all right
    /// would ask for T → 0): the head stays as trained.
    public static let minimumImages = 200

    /// The mean logloss of `indices` with the logits divided by `temperature`: with mirror TTA
    /// Kaggle's logloss of the mean of both probabilities, else the cross-entropy of the logit.
    public func loss(temperature t: Double, indices: [Int]) -> Double {
        guard !indices.isEmpty else { return 0 }
        var sum = 0.0
        for i in indices {
            let z = logits[i] / t
            if let mirrored {
                let p = BinaryCrossEntropy.mirrorTTAProbability(logit: z, mirroredLogit: mirrored[i] / t)
                sum += BinaryCrossEntropy.logLoss(probability: p, dog: dogs[i])
            } else {
                sum += max(z, 0) - (dogs[i] ? z : 0) + log1p(exp(-abs(z)))
            }
        }
        return sum / Double(indices.count)
    }

    /// The fraction of `indices` on the right side of 1/2 with the logits divided by `temperature`.
    public func accuracy(temperature t: Double, indices: [Int]) -> Double {
        guard !indices.isEmpty else { return 0 }
        let right = indices.filter { i in
            let p = mirrored.map { BinaryCrossEntropy.mirrorTTAProbability(logit: logits[i] / t, mirroredLogit: $0[i] / t) }
                ?? BinaryCrossEntropy.sigmoid(logits[i] / t)
            return (p > 0.5) == dogs[i]
        }
        return Double(right.count) / Double(indices.count)
    }

    /// The T of the lowest loss on `indices`: golden-section search on log T (60 steps: to
    /// ~1e-12 of the range), the loss being unimodal in T for any one logit and in practice for their mean.
    public func fit(indices: [Int]) -> Double {
        let golden = (sqrt(5.0) - 1) / 2
        var (a, b) = Self.range
        var c = b - golden * (b - a), d = a + golden * (b - a)
        var fc = loss(temperature: exp(c), indices: indices), fd = loss(temperature: exp(d), indices: indices)
        for _ in 0..<60 {
            if fc < fd {
                (b, d, fd) = (d, c, fc)
                c = b - golden * (b - a)
                fc = loss(temperature: exp(c), indices: indices)
            } else {
                (a, c, fc) = (c, d, fd)
                d = a + golden * (b - a)
                fd = loss(temperature: exp(d), indices: indices)
            }
        }
        return exp((a + b) / 2)
    }

    public struct Result: Sendable {
        /// Fitted on all the validation images.
        public let temperature: Double
        /// The validation loss and accuracy at T = 1 and at `temperature`.
        public let before: (loss: Double, accuracy: Double)
        public let after: (loss: Double, accuracy: Double)
        /// Each half of the validation images scored with the T fitted on the other half.
        public let crossFitted: Double
        /// Whether the cross-fitted loss is lower than `before`'s: only then is T worth applying.
        public var helps: Bool { crossFitted < before.loss }
    }

    public func calibrate() -> Result {
        let all = Array(logits.indices)
        let even = all.filter { $0 % 2 == 0 }, odd = all.filter { $0 % 2 == 1 }
        let crossSum = loss(temperature: fit(indices: even), indices: odd) * Double(odd.count)
            + loss(temperature: fit(indices: odd), indices: even) * Double(even.count)
        let t = fit(indices: all)
        return Result(temperature: t,
                      before: (loss(temperature: 1, indices: all), accuracy(temperature: 1, indices: all)),
                      after: (loss(temperature: t, indices: all), accuracy(temperature: t, indices: all)),
                      crossFitted: crossSum / Double(max(all.count, 1)))
    }
}
