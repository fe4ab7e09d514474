extension Network {
    /// Whether any BatchNorm layer normalizes by statistics it could re-estimate (not frozen).
    public var hasTrainableBatchNorm: Bool {
        nodes.contains { ($0.layer as? BatchNorm).map { !$0.frozen } ?? false }
    }

    /// Precise BatchNorm (Wu & Johnson, 2021; FixRes, Touvron et al., 2019): replaces every
    /// (unfrozen) BatchNorm layer's moving statistics by the mean of the batch statistics of the
    /// batches `fill` writes into `input` (up to `maxBatch` samples; it returns how many, 0 when
    /// there are no more), weighted by their samples. The weights are not touched. Returns the
    /// samples seen; with none, the statistics are as they were.
    ///
    /// Training keeps moving statistics of the batches of the last few hundred updates, as the
    /// weights were then and at the training size; scored at another size or with averaged
    /// weights, the network meets activations of other statistics. This measures them as scoring
    /// will see them. Reserves training buffers for `maxBatch`.
    @discardableResult
    public func recalibrateBatchNorm(maxBatch: Int, fill: (UnsafeMutablePointer<Float>) -> Int) -> Int {
        guard hasTrainableBatchNorm, maxBatch > 0 else { return 0 }
        reserve(maxBatch: maxBatch)
        var seen = 0
        while true {
            let n = min(fill(input), maxBatch)
            guard n > 0 else { break }
            var context = PassContext(training: true)
            context.statisticsWeight = Float(n) / Float(seen + n)
            forward(batch: n, context: context)
            seen += n
        }
        return seen
    }
}
