import Foundation

/// Where the convolutions' time goes, summed while `enabled` (`bench` turns it on for its timed
/// steps): the matrix products, Winograd F(4×4)'s transforms, and im2col's layout work, also by
/// pass (forward, dX, dW). One
/// rank is one process whose layers run one at a time, so plain sums will do; nothing is
/// measured, and only one branch taken, while it is off.
public enum ConvolutionPhases {
    public enum Phase: Int, CaseIterable, Sendable {
        /// The matrix products (our fp32 or bf16 gemm, or OpenBLAS), packing included.
        case products
        /// Winograd F(4×4, 3×3)'s input, output and filter transforms (and their gradients').
        case winogradTransforms
        /// im2col, col2im and the kernel's transposes for dX.
        case im2col
    }

    /// Which pass of a convolution the measured work belongs to.
    public enum Pass: Int, CaseIterable, Sendable {
        case forward
        /// dX: the gradient of the layer's input.
        case inputGradient
        /// dW: the gradient of its kernel.
        case kernelGradient
    }

    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) public private(set) static var seconds = [Double](repeating: 0, count: Phase.allCases.count)
    /// The same time by pass (each phase's time counted in the pass that was current).
    nonisolated(unsafe) public private(set) static var passSeconds = [Double](repeating: 0, count: Pass.allCases.count)
    /// The pass a layer is in; layers set it as they go (it costs nothing to set while off).
    nonisolated(unsafe) static var pass = Pass.forward

    public static func reset() {
        seconds = [Double](repeating: 0, count: Phase.allCases.count)
        passSeconds = [Double](repeating: 0, count: Pass.allCases.count)
    }

    @inline(__always)
    static func measure<T>(_ phase: Phase, _ body: () -> T) -> T {
        guard enabled else { return body() }
        let start = DispatchTime.now().uptimeNanoseconds
        let result = body()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        seconds[phase.rawValue] += elapsed
        passSeconds[pass.rawValue] += elapsed
        return result
    }
}
