import Foundation

/// Where the convolutions' time goes, summed while `enabled` (`bench` turns it on for its timed
/// steps): the matrix products, Winograd F(4×4)'s transforms, and im2col's layout work. One
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

    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) public private(set) static var seconds = [Double](repeating: 0, count: Phase.allCases.count)

    public static func reset() { seconds = [Double](repeating: 0, count: Phase.allCases.count) }

    @inline(__always)
    static func measure<T>(_ phase: Phase, _ body: () -> T) -> T {
        guard enabled else { return body() }
        let start = DispatchTime.now().uptimeNanoseconds
        let result = body()
        seconds[phase.rawValue] += Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        return result
    }
}
