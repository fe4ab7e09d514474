import CKernels
import CatdogEngine
import CatdogSupport
import XCTest

/// `catdog_transpose` (the weights' transposes for dX) on every instruction set this CPU runs:
/// shapes of whole 16 x 16 blocks (in registers on AVX-512), with edge rows, edge columns or
/// both, and smaller than one block. A transpose moves values: the result must be bit-identical.
final class TransposeTests: XCTestCase {
    func testTransposeMovesEveryValueOnEveryInstructionSet() throws {
        var random = Random(seed: 21)
        let shapes = [(1, 1), (3, 5), (16, 16), (32, 48), (2304, 256), (17, 16), (16, 33), (45, 70), (128, 1), (1, 40)]
        let ran = forEachKernelInstructionSet { kernels in
            for (rows, cols) in shapes {
                let source = FloatBuffer((0..<(rows * cols)).map { _ in random.uniform(-1, 1) })
                // The destination one float longer, that float a sentinel nothing may write.
                let destination = FloatBuffer([Float](repeating: .nan, count: rows * cols + 1))
                destination[rows * cols] = 42
                catdog_transpose(source.pointer, rows, cols, destination.pointer)
                var wrong = 0
                for r in 0..<rows { for c in 0..<cols where destination[c * rows + r].bitPattern != source[r * cols + c].bitPattern { wrong += 1 } }
                XCTAssertEqual(wrong, 0, "\(kernels): \(wrong) of \(rows * cols) values misplaced transposing \(rows) x \(cols)")
                XCTAssertEqual(destination[rows * cols], 42, "\(kernels): wrote past the end transposing \(rows) x \(cols)")
            }
        }
        XCTAssertGreaterThanOrEqual(ran.count, 2, "fewer than two instruction sets ran")
    }
}
