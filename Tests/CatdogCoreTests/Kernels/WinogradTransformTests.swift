import CKernels
import CatdogEngine
import CatdogSupport
import XCTest

/// F(4×4, 3×3)'s tile transforms (`catdog_wino4_input`, `_output`, `_output_gradient`) run whole
/// vectors of channels with the tile in registers and the channels left over through per-lane
/// loops. Both compute each output as the same expression of the same inputs, so a channel
/// must get the same bits whichever path takes it: every channel here holds the same values,
/// 35 channels (vectors of 16, 8 or 4 and 3 left over, on each instruction set), and every
/// output channel must equal channel 0 bit for bit, including tiles clipped by the image's
/// edge and outputs added into what is there.
final class WinogradTransformTests: XCTestCase {
    let channels = 35

    /// `count` values, each repeated across the channels: (count, channels) floats.
    func replicated(_ values: [Float]) -> FloatBuffer {
        FloatBuffer(values.flatMap { [Float](repeating: $0, count: channels) })
    }

    /// Rows (of `channels` floats, `stride` apart) whose channels differ from channel 0.
    func mismatches(_ buffer: FloatBuffer, rows: Int, stride: Int) -> Int {
        var wrong = 0
        for r in 0..<rows {
            let first = buffer[r * stride].bitPattern
            if (1..<channels).contains(where: { buffer[r * stride + $0].bitPattern != first }) { wrong += 1 }
        }
        return wrong
    }

    func testVectorAndLeftoverChannelsGiveTheSameBits() throws {
        var random = Random(seed: 36)
        let n = channels
        let ran = forEachKernelInstructionSet { kernels in
            let work = FloatBuffer(count: 36 * n)
            // Input: 36 pixels of a tile, V with its 36 rows 2n apart (a stride wider than a row).
            let pixels = replicated((0..<36).map { _ in random.uniform(-4, 4) })
            var d = (0..<36).map { UnsafePointer(pixels.pointer + $0 * n) as UnsafePointer<Float>? }
            let v = FloatBuffer(count: 36 * 2 * n)
            catdog_wino4_input(&d, v.pointer, 2 * n, n, work.pointer)
            XCTAssertEqual(mismatches(v, rows: 36, stride: 2 * n), 0, "\(kernels): input transform")

            // Output: all 16 outputs, then a tile clipped to 3 × 2 outputs; written, then added.
            let m = replicated((0..<36).map { _ in random.uniform(-4, 4) })
            for clipped in [false, true] {
                for accumulate: Int32 in [0, 1] {
                    let y = replicated((0..<16).map { _ in random.uniform(-1, 1) })
                    var out = (0..<16).map { i -> UnsafeMutablePointer<Float>? in
                        clipped && (i / 4 >= 3 || i % 4 >= 2) ? nil : y.pointer + i * n
                    }
                    catdog_wino4_output(m.pointer, n, &out, n, accumulate, work.pointer)
                    XCTAssertEqual(mismatches(y, rows: 16, stride: n), 0,
                                   "\(kernels): output transform, clipped \(clipped), accumulate \(accumulate)")
                }
            }

            // Output gradient: 16 gradients of a tile, dM with its 36 rows 3n apart.
            let dy = replicated((0..<16).map { _ in random.uniform(-4, 4) })
            var g = (0..<16).map { UnsafePointer(dy.pointer + $0 * n) as UnsafePointer<Float>? }
            let dm = FloatBuffer(count: 36 * 3 * n)
            catdog_wino4_output_gradient(&g, dm.pointer, 3 * n, n, work.pointer)
            XCTAssertEqual(mismatches(dm, rows: 36, stride: 3 * n), 0, "\(kernels): output gradient transform")
        }
        XCTAssertGreaterThanOrEqual(ran.count, 2, "fewer than two instruction sets ran")
    }

    /// The bias and activation applied in the output transform (`catdog_wino4_output_act`, and
    /// `Winograd4x4.runAddingBias` over an image) give the bits of the transform followed by a
    /// pass of `catdog_bias_activation`: 35 channels (vectors and channels left over), tiles
    /// whole and clipped, ReLU and ReLU6 over outputs on both sides of 0 and 6, NaN kept.
    func testBiasAndActivationInTheOutputTransformGiveTheBitsOfASecondPass() throws {
        var random = Random(seed: 37)
        let n = channels
        let ran = forEachKernelInstructionSet { kernels in
            let work = FloatBuffer(count: 36 * n)
            var values = (0..<(36 * n)).map { _ in random.uniform(-3, 3) }
            values[5] = .nan
            let m = FloatBuffer(values)
            let bias = FloatBuffer((0..<n).map { _ in random.uniform(-2, 2) })
            for activation: Int32 in [0, 1, 2] {
                for withBias in [false, true] where withBias || activation != 0 {
                    for clipped in [false, true] {
                        let fused = FloatBuffer(count: 16 * n), separate = FloatBuffer(count: 16 * n)
                        func pointers(_ y: FloatBuffer) -> [UnsafeMutablePointer<Float>?] {
                            (0..<16).map { i in clipped && (i / 4 >= 3 || i % 4 >= 2) ? nil : y.pointer + i * n }
                        }
                        var a = pointers(fused), b = pointers(separate)
                        catdog_wino4_output_act(m.pointer, n, &a, n, withBias ? UnsafePointer(bias.pointer) : nil, activation,
                                                work.pointer)
                        catdog_wino4_output(m.pointer, n, &b, n, 0, work.pointer)
                        for y in b { if let y { catdog_bias_activation(y, withBias ? bias.pointer : nil, 1, n, activation) } }
                        let what = "\(kernels): activation \(activation), bias \(withBias), clipped \(clipped)"
                        XCTAssertEqual(fused.array.map(\.bitPattern), separate.array.map(\.bitPattern), what)
                        if activation != 0 {
                            XCTAssertTrue(fused.array.contains(0) && fused.array.contains { $0 > 0 }, "\(what): no output on one side")
                        }
                    }
                }
            }
        }
        XCTAssertGreaterThanOrEqual(ran.count, 2, "fewer than two instruction sets ran")

        // Over an image of 7 x 9 (tiles clipped at two edges), 20 filters, in fp32 and in bf16.
        let c = 16, f = 20, images = 2, h = 7, w = 9
        let x = FloatBuffer((0..<(images * h * w * c)).map { _ in random.uniform(-1, 1) })
        let kernel = FloatBuffer((0..<(9 * c * f)).map { _ in random.uniform(-0.3, 0.3) })
        let bias = FloatBuffer((0..<f).map { _ in random.uniform(-0.5, 0.5) })
        let routes: [GemmRoute] = BF16Gemm.available ? [.own, .bf16] : [.own]
        for route in routes {
            for activation: Int32 in [1, 2] {
                let winograd = Winograd4x4(channels: c, filters: f, buffers: WinogradBuffers(), route: route)
                winograd.setKernel(kernel.pointer)
                let fused = FloatBuffer(count: images * h * w * f), separate = FloatBuffer(count: images * h * w * f)
                XCTAssertTrue(winograd.runAddingBias(input: x.pointer, images: images, height: h, width: w, output: fused.pointer,
                                                     bias: bias.pointer, activation: activation))
                winograd.run(input: x.pointer, images: images, height: h, width: w, output: separate.pointer, accumulate: false)
                catdog_bias_activation(separate.pointer, bias.pointer, images * h * w, f, activation)
                XCTAssertEqual(fused.array.map(\.bitPattern), separate.array.map(\.bitPattern), "\(route), activation \(activation)")
            }
        }
    }

    /// F(2×2, 3×3)'s transforms the same way: the 16 rows of V, the outputs (whole and clipped
    /// tiles, written and added), dM, and the kernel transforms (U and dW's), every channel the
    /// bits of channel 0 on each instruction set. And in bf16, the kernel transform that packs as
    /// it goes (`catdog_wino2_filter_bf16`) gives the words of the fp32 transform packed
    /// afterwards (`catdog_bf16_pack_pair_rows`), for odd channel counts too.
    func testF2x2TransformsGiveTheSameBitsInVectorsAndLeftoverLanes() throws {
        var random = Random(seed: 38)
        let n = channels
        let ran = forEachKernelInstructionSet { kernels in
            let pixels = replicated((0..<16).map { _ in random.uniform(-4, 4) })
            var d = (0..<16).map { UnsafePointer(pixels.pointer + $0 * n) as UnsafePointer<Float>? }
            let v = FloatBuffer(count: 16 * 2 * n)
            catdog_wino2_input(&d, v.pointer, 2 * n, n)
            XCTAssertEqual(mismatches(v, rows: 16, stride: 2 * n), 0, "\(kernels): input transform")

            let m = replicated((0..<16).map { _ in random.uniform(-4, 4) })
            for clipped in [false, true] {
                for accumulate: Int32 in [0, 1] {
                    let y = replicated((0..<4).map { _ in random.uniform(-1, 1) })
                    var out = (0..<4).map { i -> UnsafeMutablePointer<Float>? in clipped && i % 2 == 1 ? nil : y.pointer + i * n }
                    catdog_wino2_output(m.pointer, n, &out, n, accumulate)
                    XCTAssertEqual(mismatches(y, rows: 4, stride: n), 0,
                                   "\(kernels): output transform, clipped \(clipped), accumulate \(accumulate)")
                }
            }

            let dy = replicated((0..<4).map { _ in random.uniform(-4, 4) })
            var g = (0..<4).map { UnsafePointer(dy.pointer + $0 * n) as UnsafePointer<Float>? }
            let dm = FloatBuffer(count: 16 * 3 * n)
            catdog_wino2_output_gradient(&g, dm.pointer, 3 * n, n)
            XCTAssertEqual(mismatches(dm, rows: 16, stride: 3 * n), 0, "\(kernels): output gradient transform")

            // One input channel, n filters holding the same taps: U (16, 1, n), then dW (9, 1, n) from it.
            let taps = replicated((0..<9).map { _ in random.uniform(-1, 1) })
            let u = FloatBuffer(count: 16 * n)
            catdog_wino2_filter(taps.pointer, u.pointer, 1, n)
            XCTAssertEqual(mismatches(u, rows: 16, stride: n), 0, "\(kernels): kernel transform")
            let dw = replicated((0..<9).map { _ in random.uniform(-1, 1) })
            catdog_wino2_filter_gradient(u.pointer, dw.pointer, 1, n)
            XCTAssertEqual(mismatches(dw, rows: 9, stride: n), 0, "\(kernels): kernel gradient transform")
        }
        XCTAssertGreaterThanOrEqual(ran.count, 2, "fewer than two instruction sets ran")

        guard BF16Gemm.available else { return }
        for (c, f) in [(16, 32), (7, 35), (48, 20)] {
            let kernel = FloatBuffer((0..<(9 * c * f)).map { _ in random.uniform(-1, 1) })
            let u = FloatBuffer(count: 16 * c * f)
            catdog_wino2_filter(kernel.pointer, u.pointer, c, f)
            let block = (c + 1) / 2 * f + 3  // words; a stride wider than a block
            func words(_ fill: (UnsafeMutablePointer<UInt32>) -> Void) -> [UInt32] {
                var out = [UInt32](repeating: 0, count: 16 * block)
                out.withUnsafeMutableBufferPointer { fill($0.baseAddress!) }
                return out
            }
            let separate = words { out in
                for xi in 0..<16 { XCTAssertNotEqual(catdog_bf16_pack_pair_rows(u.pointer + xi * c * f, c, f, f, out + xi * block), 0) }
            }
            var tapPointers = (0..<9).map { UnsafePointer(kernel.pointer + $0 * c * f) as UnsafePointer<Float>? }
            let fused = words { out in XCTAssertNotEqual(catdog_wino2_filter_bf16(&tapPointers, f, c, f, out, block), 0) }
            XCTAssertEqual(fused, separate, "\(c) channels, \(f) filters: the fused bf16 kernel transform's words")
        }
    }
}

