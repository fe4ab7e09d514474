import CatdogSupport
import XCTest

/// The buffer conversions (F16C on x86 when the CPU has it) against Swift's own Float16
/// conversion, bit for bit: round to nearest even, subnormals, overflow to infinity, and a
/// count that is not a multiple of 8 (the scalar tail).
final class HalfConversionTests: XCTestCase {
    func testBufferConversionsMatchSwiftBitForBit() {
        var random = Random(seed: 12)
        var values: [Float] = [0, -0, 1, -1, 65504, 65520, 1e6, -1e6, 6e-8, 3e-8, 1e-5, .infinity, -.infinity]
        for _ in 0..<1000 { values.append(random.uniform(-4, 4) * Float(pow(2.0, Double(random.below(40)) - 24))) }
        values.append(contentsOf: [0.1, 0.2, 0.3])  // 1016 values: 127 blocks of 8 and no tail...
        values.append(0.7)                          // ...and now a tail of 1
        var half = [Float16](repeating: 0, count: values.count)
        convertToHalf(values, &half, count: values.count)
        for (i, value) in values.enumerated() {
            XCTAssertEqual(half[i].bitPattern, Float16(value).bitPattern, "value \(value)")
        }
        var back = [Float](repeating: 0, count: values.count)
        convertFromHalf(half, &back, count: half.count)
        for i in values.indices { XCTAssertEqual(back[i].bitPattern, Float(half[i]).bitPattern) }
        let nan = [Float.nan]
        var nanHalf: [Float16] = [0]
        convertToHalf(nan, &nanHalf, count: 1)
        XCTAssertTrue(nanHalf[0].isNaN)
        print("half conversion uses F16C: \(halfConversionUsesF16C)")
    }
}
