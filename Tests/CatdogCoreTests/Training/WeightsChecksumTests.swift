@testable import CatdogTraining
import CatdogSupport
import XCTest

/// The checksum the ranks compare every `checksumEvery` steps (`Trainer.checksum`): equal
/// weights give equal sums; one bit changed in any one weight, whichever of the four chains
/// takes it or the leftover words, changes the sum (each chain's step is a bijection, so one
/// differing word can never cancel); and the count is part of it.
final class WeightsChecksumTests: XCTestCase {
    func testOneBitInAnyWeightChangesTheChecksum() {
        var random = Random(seed: 12)
        let count = 1_003  // four chains of 250 words, 3 left over
        let weights = FloatBuffer((0..<count).map { _ in random.uniform(-1, 1) })
        let copy = FloatBuffer(weights.array)
        let sum = Trainer.checksum(weights.pointer, count: count)
        XCTAssertEqual(Trainer.checksum(copy.pointer, count: count), sum)
        for index in [0, 1, 2, 3, 4, 500, 999, 1_000, 1_001, 1_002] {
            for bit in [0, 17, 31] {
                copy[index] = Float(bitPattern: weights[index].bitPattern ^ (1 << UInt32(bit)))
                XCTAssertNotEqual(Trainer.checksum(copy.pointer, count: count), sum, "bit \(bit) of weight \(index)")
                copy[index] = weights[index]
            }
        }
        // Two weights swapped between chains, and a prefix of the same floats.
        copy[0] = weights[1]
        copy[1] = weights[0]
        XCTAssertNotEqual(Trainer.checksum(copy.pointer, count: count), sum, "two weights swapped")
        XCTAssertNotEqual(Trainer.checksum(weights.pointer, count: count - 1), sum, "one weight fewer")
    }
}
