import CatdogData
import CatdogEngine
import CatdogRun

/// Where the one epoch driver (`Trainer.fit`) takes its batches from: decoded images, streamed
/// or from the node cache (`ImageSource`), or activations kept at a cut of the network
/// (`KeptActivations`, fine-tuning the last blocks), or pooled features (`PooledFeatures`, the
/// transfer head). Every rank has the same counts.
public protocol BatchSource: AnyObject {
    /// Training samples: each epoch's permutation runs over 0..<trainCount.
    var trainCount: Int { get }
    /// Validation samples over all ranks.
    var validationCount: Int { get }
    /// This rank's share of the validation samples.
    var localValidationCount: Int { get }
    /// This rank's slice of `step` of `plan` at input size `size`, its labels written into
    /// `stepper.labels`: either in a buffer that the step copies into the network micro-batch
    /// by micro-batch (returned as `input`), or written straight into `stepper.network` where
    /// it starts (`input` nil). Returns the samples written.
    func trainBatch(plan: EpochPlan, step: Int, size: Int, stepper: DataParallelStep) -> (input: UnsafePointer<Float>?, count: Int)
    /// Writes this rank's validation samples `range` (of its `localValidationCount`) where
    /// `network` starts at `node`, and their labels; returns how many it wrote (a file that
    /// fails now is left out and counted in `lateFailures`).
    func validationBatch(_ range: Range<Int>, network: Network, node: Int, labels: UnsafeMutablePointer<Float>) -> Int
    /// Replaces the `written` samples that `validationBatch(range, …)` wrote at `node` by their
    /// mirror images' (mirror TTA). By default each sample's map is mirrored left-right in place.
    func mirrorValidationBatch(_ range: Range<Int>, written: Int, network: Network, node: Int)
    /// Samples that failed after the check before training, with the reason.
    var lateFailures: [String] { get }
    /// Seconds training waited for a batch, and CPU seconds a helper spent preparing them.
    var waitSeconds: Double { get }
    var prepareSeconds: Double { get }
    /// Samples the helper prepared in `prepareSeconds`.
    var preparedSamples: Int { get }
}

extension BatchSource {
    public func mirrorValidationBatch(_ range: Range<Int>, written: Int, network: Network, node: Int) {
        let shape = network.nodes[node].shape
        let first = network.activation(node)
        for i in 0..<written {
            ImageStore.mirror(first + i * shape.count, height: shape.height, width: shape.width, channels: shape.channels)
        }
    }
}

/// Images of a `TrainingData`, decoded and augmented one step ahead by a `BatchLoader`.
public final class ImageSource: BatchSource {
    public let data: TrainingData
    public let loader: BatchLoader

    public init(data: TrainingData, loader: BatchLoader) {
        self.data = data
        self.loader = loader
    }

    public var trainCount: Int { data.trainSamples.count }
    public var validationCount: Int { data.validationCount }
    public var localValidationCount: Int { data.localValidationSamples.count }

    public func trainBatch(plan: EpochPlan, step: Int, size: Int, stepper: DataParallelStep) -> (input: UnsafePointer<Float>?, count: Int) {
        let batch = loader.batch(plan: plan, step: step, size: size)
        stepper.labels.pointer.update(from: batch.labels, count: batch.count)
        return (batch.input, batch.count)
    }

    public func validationBatch(_ range: Range<Int>, network: Network, node: Int, labels: UnsafeMutablePointer<Float>) -> Int {
        precondition(node == 0)
        return loader.validationBatch(data.localValidationSamples[range], input: network.input, labels: labels,
                                      sampleFloats: network.inputShape.count)
    }

    public var lateFailures: [String] { loader.lateFailures }
    public var waitSeconds: Double { loader.waitSeconds }
    public var prepareSeconds: Double { loader.prepareSeconds }
    public var preparedSamples: Int { loader.preparedSamples }
}
