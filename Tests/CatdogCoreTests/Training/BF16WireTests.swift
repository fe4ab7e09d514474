import CHalf
import CatdogSupport
import XCTest

/// The bf16 rounding PowerSGD's factors cross the network in (`catdog_float_to_bf16`): integer
/// arithmetic, so that ranks on CPUs with and without AVX512_BF16 make the same bits. Checked
/// against a reference that picks the nearer of the two bf16 neighbours in double (ties to the
/// even one), over random bit patterns (denormals and infinities among them) and the edges.
final class BF16WireTests: XCTestCase {
    static func reference(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(bits >> 16) | 0x40 }
        if x.isInfinite { return UInt16(bits >> 16) }
        let low = bits & 0xffff_0000, high = low &+ 0x1_0000  // toward zero, away from zero
        let lowDistance = abs(Double(x) - Double(Float(bitPattern: low)))
        // Past the largest bf16 lies infinity, taken as 2^128 (IEEE rounding's unbounded exponent).
        let highValue = Float(bitPattern: high)
        let highDistance = highValue.isInfinite ? 0x1p128 - abs(Double(x)) : abs(Double(highValue) - Double(x))
        if lowDistance < highDistance { return UInt16(low >> 16) }
        if highDistance < lowDistance { return UInt16(high >> 16) }
        return (low >> 16) & 1 == 0 ? UInt16(low >> 16) : UInt16(high >> 16)
    }

    func testRoundingIsToNearestEvenOnEveryValue() {
        var random = Random(seed: 11)
        var values: [Float] = (0..<200_000).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: random.next())) }
        values += [0, -0, 1, -1, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                   .infinity, -.infinity, Float(bitPattern: 0x3f80_8000), Float(bitPattern: 0x3f81_8000), Float(bitPattern: 0x3f80_8001),
                   Float(bitPattern: 0x7f7f_8000), Float(bitPattern: 0x0000_8000), Float(bitPattern: 0x0001_8000)]
        var out = [UInt16](repeating: 0, count: values.count)
        catdog_float_to_bf16(values, &out, values.count)
        var mismatches = 0
        for (x, h) in zip(values, out) {
            if x.isNaN {
                XCTAssertTrue(Float(bitPattern: UInt32(h) << 16).isNaN, "NaN \(String(x.bitPattern, radix: 16)) stays NaN")
                continue
            }
            if h != Self.reference(x) {
                mismatches += 1
                if mismatches < 5 { XCTFail("\(x) (0x\(String(x.bitPattern, radix: 16))): 0x\(String(h, radix: 16)), nearest even 0x\(String(Self.reference(x), radix: 16))") }
            }
        }
        XCTAssertEqual(mismatches, 0)
        XCTAssertEqual(out[values.count - 6 ..< values.count - 3], [0x3f80, 0x3f82, 0x3f81], "ties to even, above a tie up")
        XCTAssertEqual(out[values.count - 3], 0x7f80, "the largest finite float's tie rounds to infinity")
        var back = [Float](repeating: 0, count: 3)
        catdog_bf16_to_float([0x3f80, 0xc000, 0x0001], &back, 3)
        XCTAssertEqual(back, [1, -2, Float(bitPattern: 0x0001_0000)])
    }

    /// The all-reduce's addition: both operands widened, added in float, rounded once.
    func testTheSumIsTheRoundedFloatSum() {
        var random = Random(seed: 12)
        let a = (0..<1000).map { _ in random.uniform(-4, 4) }, b = (0..<1000).map { _ in random.uniform(-1e-3, 1e-3) }
        var ha = [UInt16](repeating: 0, count: 1000), hb = ha
        catdog_float_to_bf16(a, &ha, 1000)
        catdog_float_to_bf16(b, &hb, 1000)
        var sum = hb
        catdog_bf16_add(ha, &sum, 1000)
        var wa = [Float](repeating: 0, count: 1000), wb = wa
        catdog_bf16_to_float(ha, &wa, 1000)
        catdog_bf16_to_float(hb, &wb, 1000)
        for i in 0..<1000 { XCTAssertEqual(sum[i], Self.reference(wa[i] + wb[i]), "element \(i)") }
    }
}
