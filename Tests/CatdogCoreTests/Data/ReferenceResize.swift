import CatdogData

/// The straightforward resampler the fast `Resize.square` replaced (nested tap lists, one
/// pixel at a time), kept as the oracle the fast one must match byte for byte.
enum ReferenceResize {
    /// Per output index, the first source index and the weights of consecutive source pixels.
    struct Taps {
        var start: [Int] = []
        var weights: [[Float]] = []
    }

    static func taps(source: Int, offset: Double, span: Double, output: Int) -> Taps {
        var taps = Taps()
        let scale = span / Double(output)
        for o in 0..<output {
            if scale >= 1 {
                // Area: source interval [a, b) in source pixel units.
                let a = offset + Double(o) * scale, b = a + scale
                let first = Int(a.rounded(.down)), last = min(Int((b - 1e-9).rounded(.down)), source - 1)
                var w: [Float] = []
                for s in first...max(first, last) {
                    let overlap = min(b, Double(s + 1)) - max(a, Double(s))
                    w.append(Float(max(overlap, 0) / scale))
                }
                taps.start.append(min(first, source - 1))
                taps.weights.append(w)
            } else {
                // Bilinear with pixel centres aligned (half-pixel convention).
                let centre = offset + (Double(o) + 0.5) * scale - 0.5
                let clamped = min(max(centre, 0), Double(source - 1))
                let first = min(Int(clamped.rounded(.down)), max(source - 2, 0))
                let t = Float(clamped - Double(first))
                taps.start.append(first)
                taps.weights.append(source == 1 ? [1] : [1 - t, t])
            }
        }
        return taps
    }

    /// Resizes `image` to `size`×`size` RGB bytes with the given fit.
    static func square(_ image: RGBImage, size: Int, fit: Resize.Fit) -> [UInt8] {
        // Squash spans each whole axis; crop spans the largest centred square.
        let side = Double(min(image.width, image.height))
        let span = { (length: Int) in fit == .crop ? (offset: (Double(length) - side) / 2, span: side) : (offset: 0, span: Double(length)) }
        let (x, y) = (span(image.width), span(image.height))
        let columns = taps(source: image.width, offset: x.offset, span: x.span, output: size)
        let rows = taps(source: image.height, offset: y.offset, span: y.span, output: size)
        // Horizontal pass: (image.height, size, 3) floats, only for rows the vertical pass reads.
        var horizontal = [Float](repeating: 0, count: image.height * size * 3)
        let firstRow = rows.start.first ?? 0
        let lastRow = zip(rows.start, rows.weights).map { $0 + $1.count - 1 }.max() ?? 0
        image.pixels.withUnsafeBufferPointer { src in
            horizontal.withUnsafeMutableBufferPointer { dst in
                for y in firstRow...min(lastRow, image.height - 1) {
                    let srcRow = y * image.width * 3
                    for x in 0..<size {
                        var r: Float = 0, g: Float = 0, b: Float = 0
                        let start = columns.start[x]
                        for (k, weight) in columns.weights[x].enumerated() where start + k < image.width {
                            let p = srcRow + (start + k) * 3
                            r += weight * Float(src[p]); g += weight * Float(src[p + 1]); b += weight * Float(src[p + 2])
                        }
                        let q = (y * size + x) * 3
                        dst[q] = r; dst[q + 1] = g; dst[q + 2] = b
                    }
                }
            }
        }
        var out = [UInt8](repeating: 0, count: size * size * 3)
        for y in 0..<size {
            let start = rows.start[y]
            for x in 0..<(size * 3) {
                var v: Float = 0
                for (k, weight) in rows.weights[y].enumerated() where start + k < image.height {
                    v += weight * horizontal[((start + k) * size) * 3 + x]
                }
                out[y * size * 3 + x] = UInt8(min(max(v.rounded(), 0), 255))
            }
        }
        return out
    }
}
