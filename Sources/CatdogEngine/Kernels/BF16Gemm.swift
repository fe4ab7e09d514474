import CHalf
import CKernels

/// bf16 products with fp32 accumulation on CPUs with AVX512_BF16 (`vdpbf16ps`): the operands
/// are rounded to bf16 (8 significant bits) and packed in pairs along k, the products summed in
/// fp32. Each product then carries a relative error of at most 2⁻⁷ (each operand's rounding at
/// most 2⁻⁸), so |C − C_exact| ≤ 2⁻⁷ · Σ_p |a_ip b_pj| plus fp32's summation error.
public enum BF16Gemm {
    /// Whether this CPU has AVX512_BF16.
    public static var available: Bool { catdog_cpu_has_bf16() != 0 }

    /// A (m, k) row-major with row stride `lda`, as bf16 pairs along k.
    public static func packA(_ a: UnsafePointer<Float>, m: Int, k: Int, lda: Int) -> [UInt16] {
        var packed = [UInt16](repeating: 0, count: m * (k + 1) / 2 * 2)
        packed.withUnsafeMutableBufferPointer { catdog_bf16_pack_a(a, m, k, lda, $0.baseAddress!) }
        return packed
    }

    /// B (k, n) row-major with row stride `ldb`, as bf16 pairs along k.
    public static func packB(_ b: UnsafePointer<Float>, k: Int, n: Int, ldb: Int) -> [UInt16] {
        var packed = [UInt16](repeating: 0, count: (k + 1) / 2 * n * 2)
        packed.withUnsafeMutableBufferPointer { catdog_bf16_pack_b(b, k, n, ldb, $0.baseAddress!) }
        return packed
    }

    /// C (m, n), row stride `ldc`, = or += A · B from packed operands. False, leaving C as it
    /// was, where the CPU has no AVX512_BF16.
    @discardableResult
    public static func multiply(m: Int, n: Int, k: Int, a: [UInt16], b: [UInt16], c: UnsafeMutablePointer<Float>, ldc: Int,
                                accumulate: Bool) -> Bool {
        precondition(a.count >= m * (k + 1) / 2 * 2 && b.count >= (k + 1) / 2 * n * 2, "operands not packed for this shape")
        return a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                catdog_sbgemm(m, n, k, a.baseAddress!, b.baseAddress!, c, ldc, accumulate ? 1 : 0) != 0
            }
        }
    }

    public static func round(_ x: Float) -> Float { catdog_float_from_bf16(catdog_bf16_from_float(x)) }

    /// One core's peak, GFLOP/s, from register-only loops of about `seconds` each: fp32 FMAs
    /// in the vectors of the kernels that run (AVX-512's or AVX2's; 0 with baseline kernels) and
    /// `vdpbf16ps` (0 where the CPU lacks it).
    public static func peak(seconds: Double = 0.3) -> (fp32: Double, bf16: Double) {
        (catdog_peak_fp32_gflops(seconds), catdog_peak_bf16_gflops(seconds))
    }
}
