import CKernels
import COpenBLAS
import CatdogSupport

/// An exponential moving average of weights (Polyak averaging as in timm's ModelEmaV2 and
/// Keras's `use_ema`): average ← d·average + (1 − d)·weights after every update, with the
/// decay warmed up as d = min(decay, (1 + t)/(10 + t)) so that short runs average over
/// what they trained rather than over their initial weights.
public enum WeightAverage {
    /// The decay to use after update `step` (1-based).
    public static func decay(_ decay: Double, step: Int) -> Float {
        Float(min(decay, Double(1 + step) / Double(10 + step)))
    }

    /// average ← d·average + (1 − d)·weights, over `average.count` floats, in the operations
    /// AdamW's fused update (`Optimizer.update`) uses, so that either gives the same bits.
    public static func update(_ average: FloatBuffer, toward weights: FloatBuffer, decay d: Float) {
        precondition(average.count == weights.count)
        guard average.count > 0 else { return }
        update(average.pointer, toward: weights.pointer, count: average.count, decay: d)
    }

    /// The same over `count` floats from the pointers.
    public static func update(_ average: UnsafeMutablePointer<Float>, toward weights: UnsafePointer<Float>, count: Int, decay d: Float) {
        catdog_moving_average(average, weights, count, d)
    }

    /// Exchanges the contents of two buffers of the same length.
    public static func swapContents(_ a: FloatBuffer, _ b: FloatBuffer) {
        precondition(a.count == b.count)
        guard a.count > 0 else { return }
        cblas_sswap(Int32(a.count), a.pointer, 1, b.pointer, 1)
    }
}
