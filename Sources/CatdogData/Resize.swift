import CKernels

/// Resampling of 8-bit RGB images: area averaging when shrinking (each output pixel is the
/// mean of the source area it covers), bilinear when enlarging. Separable, in two passes.
public enum Resize {
    /// How a non-square image becomes square.
    public enum Fit: String, Sendable, Codable, CaseIterable {
        /// Resize the whole image to the square, changing its aspect ratio (Keras's default).
        case squash
        /// Take the largest centred square, then resize it.
        case crop
    }

    /// Per output index, the first source index and `width` weights of consecutive source
    /// pixels (zero past the pixels it covers, whose indices are clamped to the image).
    struct Taps {
        var start: [Int]
        var weights: [Float]
        var width: Int
    }

    static func taps(source: Int, offset: Double, span: Double, output: Int) -> Taps {
        let scale = span / Double(output)
        // An area interval of `scale` pixels touches at most ⌈scale⌉ + 1 of them.
        let width = source == 1 ? 1 : scale >= 1 ? Int(scale.rounded(.up)) + 1 : 2
        var taps = Taps(start: [Int](repeating: 0, count: output), weights: [Float](repeating: 0, count: output * width),
                        width: width)
        for o in 0..<output {
            if scale >= 1 {
                // Area: source interval [a, b) in source pixel units.
                let a = offset + Double(o) * scale, b = a + scale
                let first = Int(a.rounded(.down)), last = min(Int((b - 1e-9).rounded(.down)), source - 1)
                let start = min(first, source - 1)
                taps.start[o] = start
                for s in first...max(first, last) where s - first < width && start + (s - first) < source {
                    let overlap = min(b, Double(s + 1)) - max(a, Double(s))
                    taps.weights[o * width + s - first] = Float(max(overlap, 0) / scale)
                }
            } else {
                // Bilinear with pixel centres aligned (half-pixel convention).
                let centre = offset + (Double(o) + 0.5) * scale - 0.5
                let clamped = min(max(centre, 0), Double(source - 1))
                let first = min(Int(clamped.rounded(.down)), max(source - 2, 0))
                let t = Float(clamped - Double(first))
                taps.start[o] = first
                if source == 1 {
                    taps.weights[o * width] = 1
                } else {
                    taps.weights[o * width] = 1 - t
                    taps.weights[o * width + 1] = t
                }
            }
        }
        return taps
    }

    /// Resizes `image` to `size`×`size` RGB bytes with the given fit.
    public static func square(_ image: RGBImage, size: Int, fit: Fit) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size * size * 3)
        var scratch = Scratch()
        out.withUnsafeMutableBufferPointer { square(image, size: size, fit: fit, into: $0.baseAddress!, scratch: &scratch) }
        return out
    }

    /// Floats a resize works in; keep one per thread to resize many images without allocating.
    public struct Scratch {
        var floats: [Float] = []
        public init() {}

        /// Lets go of the storage if it holds more than `limit` floats (after an odd image).
        public mutating func release(above limit: Int) {
            if floats.count > limit { floats = [] }
        }
    }

    /// Resizes `image` into `output` (size·size·3 bytes).
    public static func square(_ image: RGBImage, size: Int, fit: Fit, into output: UnsafeMutablePointer<UInt8>,
                              scratch: inout Scratch) {
        var x0 = 0.0, y0 = 0.0, w = Double(image.width), h = Double(image.height)
        if fit == .crop {
            let side = min(w, h)
            x0 = (w - side) / 2
            y0 = (h - side) / 2
            w = side
            h = side
        }
        let columns = taps(source: image.width, offset: x0, span: w, output: size)
        let rows = taps(source: image.height, offset: y0, span: h, output: size)
        // The rows the vertical pass reads.
        let firstRow = rows.start.first ?? 0
        let lastRow = min((rows.start.last ?? 0) + rows.width - 1, image.height - 1)
        let rowFloats = size * 3
        let lineFloats = (image.width + columns.width) * 3
        let needed = (lastRow - firstRow + 1) * rowFloats + rowFloats + lineFloats
        if scratch.floats.count < needed { scratch.floats = [Float](repeating: 0, count: needed) }
        precondition(image.pixels.count >= image.width * image.height * 3)
        image.pixels.withUnsafeBufferPointer { pixels in
            scratch.floats.withUnsafeMutableBufferPointer { floats in
                let horizontal = floats.baseAddress!, sum = horizontal + (lastRow - firstRow + 1) * rowFloats
                let line = sum + rowFloats
                catdog_resize_horizontal(pixels.baseAddress!, image.width, firstRow, lastRow, columns.start, columns.weights,
                                         columns.width, size, line, horizontal)
                catdog_resize_vertical(horizontal, firstRow, lastRow, rows.start, rows.weights, rows.width, size, sum, output)
            }
        }
    }
}
