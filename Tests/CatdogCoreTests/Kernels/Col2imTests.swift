import CatdogEngine
import CatdogSupport
import XCTest

/// `col2im` (dX of an im2col convolution, `catdog_col2im`) against a scalar loop written here:
/// every patch row added into the batch tap by tap, taps in the padding dropped. Both add each
/// element's contributions in the same order, so the results must be the same bits, on every
/// instruction set. Geometries: stride 1 and 2 with SAME padding (odd and even sizes), a 5×5
/// kernel, VALID padding, odd channel counts, and the rows split into chunks as Conv2D runs them.
final class Col2imTests: XCTestCase {
    private func reference(_ g: ConvGeometry, images: Int, dCol: [Float], into dx: inout [Float]) {
        let c = g.channels
        for pixel in 0..<(images * g.outHeight * g.outWidth) {
            let n = pixel / (g.outHeight * g.outWidth), within = pixel % (g.outHeight * g.outWidth)
            let y0 = (within / g.outWidth) * g.strideHeight - g.padTop, x0 = (within % g.outWidth) * g.strideWidth - g.padLeft
            for i in 0..<g.kernelHeight {
                for j in 0..<g.kernelWidth {
                    let y = y0 + i, x = x0 + j
                    guard (0..<g.inHeight).contains(y), (0..<g.inWidth).contains(x) else { continue }
                    for k in 0..<c {
                        dx[((n * g.inHeight + y) * g.inWidth + x) * c + k] += dCol[pixel * g.patchSize + (i * g.kernelWidth + j) * c + k]
                    }
                }
            }
        }
    }

    func testCol2imAddsEveryTapAsAScalarLoop() {
        var random = Random(seed: 41)
        let shapes: [(h: Int, w: Int, c: Int, k: Int, stride: Int, padding: ConvGeometry.Padding)] = [
            (9, 7, 3, 3, 1, .same), (8, 8, 32, 3, 2, .same), (7, 9, 17, 3, 2, .same), (10, 6, 5, 5, 1, .same),
            (9, 9, 16, 3, 2, .valid), (6, 11, 1, 5, 2, .same),
        ]
        let ran = forEachKernelInstructionSet { kernels in
            for s in shapes {
                let images = 3
                let g = ConvGeometry(inHeight: s.h, inWidth: s.w, channels: s.c, kernelHeight: s.k, kernelWidth: s.k,
                                     strideHeight: s.stride, strideWidth: s.stride, padding: s.padding)
                let pixels = images * g.outHeight * g.outWidth
                let dCol = (0..<(pixels * g.patchSize)).map { _ in random.uniform(-1, 1) }
                let start = (0..<(images * s.h * s.w * s.c)).map { _ in random.uniform(-1, 1) }
                var expected = start
                reference(g, images: images, dCol: dCol, into: &expected)
                // In chunks of 5 patch rows, each chunk's dCol from its first row, as Conv2D passes them.
                var got = start
                dCol.withUnsafeBufferPointer { d in
                    got.withUnsafeMutableBufferPointer { x in
                        var first = 0
                        while first < pixels {
                            let rows = first..<min(first + 5, pixels)
                            col2im(g, rows: rows, dCol: d.baseAddress! + first * g.patchSize, dInput: x.baseAddress!)
                            first = rows.upperBound
                        }
                    }
                }
                let differing = zip(got, expected).filter { $0.bitPattern != $1.bitPattern }.count
                XCTAssertEqual(differing, 0, "\(kernels): \(s) gives \(differing) of \(got.count) values other than the scalar loop's")
            }
        }
        XCTAssertGreaterThanOrEqual(ran.count, 2, "fewer than two instruction sets ran")
    }
}
