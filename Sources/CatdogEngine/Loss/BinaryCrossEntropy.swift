import Foundation

/// Binary cross-entropy on logits with the sigmoid folded in (numerically stable form):
/// ℓ(z, y) = max(z, 0) − z·y + log(1 + e^(−|z|)), dℓ/dz = σ(z) − y.
public enum BinaryCrossEntropy {
    /// Loss of one logit.
    @inline(__always)
    public static func loss(logit z: Float, label y: Float) -> Float {
        max(z, 0) - z * y + log1p(exp(-abs(z)))
    }

    /// Kaggle's logloss of one probability: −[y·log p + (1−y)·log(1−p)], p clipped to
    /// [1e-15, 1−1e-15] (what `evaluate`, mirror-TTA validation and `submit` score).
    public static func logLoss(probability p: Double, dog: Bool) -> Double {
        let clipped = min(max(p, 1e-15), 1 - 1e-15)
        return dog ? -Foundation.log(clipped) : -Foundation.log(1 - clipped)
    }

    @inline(__always)
    public static func sigmoid(_ z: Float) -> Float {
        z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z))
    }

    @inline(__always)
    public static func sigmoid(_ z: Double) -> Double {
        z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z))
    }

    /// Mirror test-time augmentation's probability that an image is a dog: the mean of the
    /// image's and its mirror image's probabilities (what validation with `--val-tta flip`,
    /// `evaluate --tta-flip`, `submit --tta-flip` and the transfer head's validation score).
    @inline(__always)
    public static func mirrorTTAProbability(logit: Double, mirroredLogit: Double) -> Double {
        (sigmoid(logit) + sigmoid(mirroredLogit)) / 2
    }

    /// The target a label is pulled toward with label smoothing ε (Szegedy et al. 2016, for
    /// two classes): y·(1 − ε) + ε/2, so a dog's is 1 − ε/2 and a cat's ε/2.
    @inline(__always)
    public static func smoothedTarget(label y: Float, smoothing: Float) -> Float {
        y * (1 - smoothing) + smoothing / 2
    }

    /// Sums the loss and the correct predictions over `count` logits and writes
    /// dLoss/dz divided by `normalizer` (the global batch size, so that summing the ranks'
    /// gradients gives the gradient of the global mean loss). With `smoothing` ε > 0 the
    /// gradient is that of the loss against the smoothed target (`smoothedTarget`), σ(z) − y';
    /// the sum returned stays the logloss against the label itself, so that a run's training
    /// loss means the same with and without it.
    public static func forwardBackward(
        logits: UnsafePointer<Float>, labels: UnsafePointer<Float>, count: Int, normalizer: Int,
        dLogits: UnsafeMutablePointer<Float>, smoothing: Float = 0
    ) -> (lossSum: Double, correct: Int) {
        var lossSum = 0.0
        var correct = 0
        let scale = 1 / Float(normalizer)
        for i in 0..<count {
            let z = logits[i], y = labels[i]
            lossSum += Double(loss(logit: z, label: y))
            if (z > 0) == (y > 0.5) { correct += 1 }
            dLogits[i] = (sigmoid(z) - smoothedTarget(label: y, smoothing: smoothing)) * scale
        }
        return (lossSum, correct)
    }
}
