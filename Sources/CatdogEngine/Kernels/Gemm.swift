import CKernels
import COpenBLAS

/// Row-major single-precision matrix multiply: C = alpha * op(A) * op(B) + beta * C,
/// where op(A) is (m, k), op(B) is (k, n) and C is (m, n). Leading dimensions are the
/// row lengths of the stored (untransposed) matrices.
@inline(__always)
public func gemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    cblas_sgemm(
        CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Sets OpenBLAS's thread count for this process. One thread per MPI rank is fastest here:
/// two single-threaded ranks reach ~97 GFLOP/s together, one rank with two threads ~61.
public func setBLASThreads(_ count: Int) {
    openblas_set_num_threads(Int32(max(1, count)))
}

/// The kernel family OpenBLAS chose for this CPU (e.g. "Haswell", "Cooperlake"): numbers from
/// different families are not comparable, so every performance figure names it.
public var blasCoreName: String {
    guard let name = openblas_get_corename() else { return "unknown" }
    var bytes: [UInt8] = []
    while bytes.count < 64, name[bytes.count] != 0 { bytes.append(UInt8(bitPattern: name[bytes.count])) }
    return String(decoding: bytes, as: UTF8.self)
}

/// Whether `ownGemm` takes products of width n on this CPU (AVX-512 or AVX2 kernels selected, n
/// a multiple of 16), so that a caller can skip preparing what only it reads.
public func ownGemmTakes(width n: Int) -> Bool {
    n > 0 && n % 16 == 0 && catdog_sgemm_available() != 0
}

/// Who takes a convolution's product (`ConvolutionOptions.route`).
public enum GemmRoute: Sendable, Equatable {
    /// OpenBLAS.
    case blas
    /// Our fp32 gemm (AVX-512, or AVX2 and FMA) where it takes the shape, else OpenBLAS.
    case own
    /// Our bf16 gemm (operands rounded to bf16, sums in fp32) where the CPU has AVX512_BF16,
    /// else as `own`.
    case bf16
}

/// C = A · B, or C += A · B when `accumulate`, by `route`, falling back to BLAS where the chosen
/// kernel declines. A(i, p) at a[i * rowStrideA + p * columnStrideA]; one of the strides is 1.
@inline(__always)
public func multiply(route: GemmRoute, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, rowStrideA: Int, columnStrideA: Int,
                     b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
    if route == .bf16, catdog_sbgemm_f32(m, n, k, a, rowStrideA, columnStrideA, b, ldb, c, ldc, accumulate ? 1 : 0) != 0 { return }
    if route != .blas, ownGemm(m: m, n: n, k: k, a: a, rowStrideA: rowStrideA, columnStrideA: columnStrideA, b: b, ldb: ldb,
                               c: c, ldc: ldc, accumulate: accumulate) { return }
    let transA = columnStrideA != 1
    gemm(transA: transA, m: m, n: n, k: k, a: a, lda: transA ? columnStrideA : rowStrideA, b: b, ldb: ldb,
         beta: accumulate ? 1 : 0, c: c, ldc: ldc)
}

/// C (m, n) = A · B, or C += A · B when `accumulate`, on our kernel (`catdog_sgemm`: AVX-512,
/// or AVX2 and FMA): A(i, p) at a[i * rowStrideA + p * columnStrideA] (so Aᵀ is a stride swap),
/// B and C row-major. Returns false, leaving C untouched, where the kernels run neither or n is
/// not a multiple of 16; the caller then uses `gemm`.
@inline(__always)
public func ownGemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, rowStrideA: Int, columnStrideA: Int,
                    b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) -> Bool {
    catdog_sgemm(m, n, k, a, rowStrideA, columnStrideA, b, ldb, c, ldc, accumulate ? 1 : 0) != 0
}
