import CKernels
import CatdogEngine
import CatdogSupport
import XCTest

/// `catdog_transpose` (the weights' transposes for dX) on every instruction set this CPU runs:
/// shapes of whole 16 x 16 blocks (in registers on AVX-512; 8 x 8 on AVX2), with edge rows, edge
/// columns or both, and smaller than one block. A transpose moves values: the result must be bit-identical.
final class TransposeTests: XCTestCase {
    func testTransposeMovesEveryValueOnEveryInstructionSet() throws {
        var random = Random(seed: 21)
        let shapes = [(1, 1), (3, 5), (8, 8), (24, 9), (16, 16), (32, 48), (2304, 256), (17, 16), (16, 33), (45, 70), (128, 1), (1, 40)]
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

    /// Under bf16, dX's products take Wᵀ packed straight from the kernel
    /// (`catdog_bf16_pack_transposed`: rows of W converted to bf16 pairs, then transposed as words
    /// 16 × 16 in registers). It must give the bits that packing the fp32 transpose gives
    /// (`catdog_bf16_pack_pair_rows`), for whole blocks, edge rows and columns, an odd column count
    /// (the last pair padded with zero) and shapes smaller than a block; and write nothing past
    /// its ceil(cols/2) × rows words.
    func testPackingTheTransposedKernelGivesThePackedTransposesBits() throws {
        guard catdog_bf16_products_available() != 0 else { throw XCTSkip("the bf16 products do not run on this CPU") }
        var random = Random(seed: 22)
        let shapes = [(1, 1), (3, 5), (16, 32), (32, 33), (2304, 256), (17, 16), (16, 31), (45, 70), (128, 1), (1, 40), (1152, 256)]
        for (rows, cols) in shapes {
            let w = FloatBuffer((0..<(rows * cols)).map { _ in random.uniform(-2, 2) })
            let transposed = FloatBuffer(count: rows * cols)
            catdog_transpose(w.pointer, rows, cols, transposed.pointer)
            let words = (cols + 1) / 2 * rows
            var expected = [UInt32](repeating: 0, count: words)
            var got = [UInt32](repeating: 0xdead_beef, count: words + 1)
            XCTAssertEqual(expected.withUnsafeMutableBytes { catdog_bf16_pack_pair_rows(transposed.pointer, cols, rows, rows, $0.baseAddress) }, 1)
            XCTAssertEqual(got.withUnsafeMutableBytes { catdog_bf16_pack_transposed(w.pointer, rows, cols, $0.baseAddress) }, 1)
            let wrong = zip(expected, got).filter { $0 != $1 }.count
            XCTAssertEqual(wrong, 0, "\(wrong) of \(words) words differ packing the transpose of \(rows) x \(cols)")
            XCTAssertEqual(got[words], 0xdead_beef, "wrote past the end packing the transpose of \(rows) x \(cols)")
        }
    }
}
