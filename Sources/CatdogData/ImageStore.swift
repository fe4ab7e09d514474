import CatdogSupport
import Foundation

/// What decoding a set of files found: how many were skipped and why, with the details.
public struct DecodeReport: Sendable {
    public var attempted = 0
    /// Each skipped file: its index among the files decoded (a slot; the same path given twice
    /// is two entries), its path and why.
    public var skipped: [(index: Int, path: String, problem: ImageProblem, detail: String)] = []

    public init() {}

    public var counts: [ImageProblem: Int] {
        skipped.reduce(into: [:]) { $0[$1.problem, default: 0] += 1 }
    }

    /// "skipped 4 of 2004 files: 2 unreadable, 1 not a JPEG, 1 empty", or nil if none were.
    public var summary: String? {
        guard !skipped.isEmpty else { return nil }
        let parts = ImageProblem.allCases.compactMap { p in counts[p].map { "\($0) \(p.rawValue)" } }
        return "skipped \(skipped.count) of \(attempted) files: \(parts.joined(separator: ", "))"
    }
}

/// Decodes image files to the stored square of a preprocessing: uint8 RGB, storedSize² · 3
/// bytes, at the smallest fast DCT scale that is still large enough. One per thread.
public final class SquareDecoder {
    public let storedSize: Int
    public let fit: Resize.Fit
    public var bytesPerImage: Int { storedSize * storedSize * 3 }
    private let codec = JPEGCodec()
    private var scratch = Resize.Scratch()
    /// The decoded image, its storage reused from one file to the next.
    private var decoded = RGBImage(width: 0, height: 0, pixels: [])

    public init(storedSize: Int, fit: Resize.Fit) {
        self.storedSize = storedSize
        self.fit = fit
    }

    /// Decodes `path` into `output` (bytesPerImage bytes). Throws `ImageError` for a broken file.
    public func decode(_ path: String, into output: UnsafeMutablePointer<UInt8>) throws {
        do {
            let data = try JPEGCodec.readFile(path)
            if fit == .crop {
                // The short side must reach the stored size; the long one follows.
                let (w, h) = try codec.dimensions(of: data)
                let scale = Double(storedSize) / Double(min(w, h))
                try codec.decode(data, minWidth: Int((Double(w) * scale).rounded(.up)),
                                 minHeight: Int((Double(h) * scale).rounded(.up)), into: &decoded)
            } else {
                try codec.decode(data, minWidth: storedSize, minHeight: storedSize, into: &decoded)
            }
            Resize.square(decoded, size: storedSize, fit: fit, into: output, scratch: &scratch)
            // Keep the storage for images of the usual sizes only: a rank's memory stays
            // bounded by its batch, whatever one odd file needed. (The resize's scratch is
            // about rows × storedSize × 3 floats: a source up to ~2.8× the square's height.)
            if decoded.pixels.count > 4 * bytesPerImage { decoded.pixels = [] }
            scratch.release(above: 4 * bytesPerImage)
        } catch let error as ImageError {
            throw error
        } catch {
            throw ImageError(problem: .unreadable, detail: "\(error)")
        }
    }

    /// Whether `path` would decode, found cheaply: the whole file is read and entropy-decoded
    /// at 1/8 scale (so a truncated or corrupt file is caught), without the full-size inverse
    /// DCT or the resize. Nil when it is usable.
    public func check(_ path: String) -> ImageError? {
        do {
            let data = try JPEGCodec.readFile(path)
            _ = try codec.decode(data, minWidth: 1, minHeight: 1)
            return nil
        } catch let error as ImageError {
            return error
        } catch {
            return ImageError(problem: .unreadable, detail: "\(error)")
        }
    }
}

/// Decoded images kept in memory as uint8 squares of `storedSize`, with labels and a flag
/// per slot saying whether it decoded. (storedSize² · 3 bytes an image: 15,552 at 64 + 8.)
/// The pixels are its own, or memory someone else owns (a node's shared window).
public final class ImageStore {
    public let count: Int
    public let storedSize: Int
    public let bytesPerImage: Int
    public let pixels: UnsafeMutablePointer<UInt8>
    private let ownsPixels: Bool
    public var labels: [Int]
    /// 1 if the slot holds a decoded image, 0 if its file was skipped (or not decoded here).
    public var valid: [UInt8]

    public init(count: Int, storedSize: Int, labels: [Int], pixels external: UnsafeMutablePointer<UInt8>? = nil) {
        self.count = count
        self.storedSize = storedSize
        bytesPerImage = storedSize * storedSize * 3
        if let external {
            pixels = external
            ownsPixels = false
        } else {
            pixels = .allocate(capacity: max(count * bytesPerImage, 1))
            pixels.initialize(repeating: 0, count: max(count * bytesPerImage, 1))
            ownsPixels = true
        }
        self.labels = labels
        valid = .init(repeating: 0, count: count)
    }

    deinit { if ownsPixels { pixels.deallocate() } }

    public func image(_ index: Int) -> UnsafeMutablePointer<UInt8> {
        precondition(index >= 0 && index < count)
        return pixels + index * bytesPerImage
    }

    /// Decodes `files[i]` into slot i for each i in `indices`, resized to the stored square.
    /// Broken files are skipped (their slot stays invalid) and reported, never thrown.
    @discardableResult
    public func decode(_ files: [String], indices: some Sequence<Int>, fit: Resize.Fit,
                       progress: ((Int) -> Void)? = nil) -> DecodeReport {
        let decoder = SquareDecoder(storedSize: storedSize, fit: fit)
        var report = DecodeReport()
        var done = 0
        for i in indices {
            report.attempted += 1
            do {
                try decoder.decode(files[i], into: image(i))
                valid[i] = 1
            } catch let error as ImageError {
                report.skipped.append((i, files[i], error.problem, error.detail))
            } catch {
                report.skipped.append((i, files[i], .unreadable, "\(error)"))
            }
            done += 1
            progress?(done)
        }
        return report
    }

    /// Writes sample `index` as network input; see `ImageStore.writeSample(from:storedSize:...)`.
    public func writeSample(_ index: Int, to output: UnsafeMutablePointer<Float>, preprocessing: Preprocessing,
                            augmentation: Augmentation, random: inout Random, cropAt: (top: Int, left: Int)? = nil) {
        ImageStore.writeSample(from: image(index), storedSize: storedSize, to: output, preprocessing: preprocessing,
                               augmentation: augmentation, random: &random, cropAt: cropAt)
    }

    /// Writes a stored square as network input (H, W, 3) floats at `output`: a crop of the
    /// square (random when augmenting, else centred), optional flip and colour shift, then the
    /// preprocessing's scaling. With `outputSize` (progressive resizing) the crop, as large as
    /// at the working size, is resampled to outputSize × outputSize. `cropAt` places the crop
    /// of an unaugmented sample (test-time crops; clamped into the square), else it is centred.
    public static func writeSample(from source: UnsafePointer<UInt8>, storedSize: Int, to output: UnsafeMutablePointer<Float>,
                                   preprocessing: Preprocessing, augmentation: Augmentation, random: inout Random,
                                   outputSize: Int? = nil, cropAt: (top: Int, left: Int)? = nil) {
        let size = preprocessing.imageSize
        let outSize = outputSize ?? size
        precondition(size <= storedSize)
        let margin = storedSize - size
        var top = margin / 2, left = margin / 2
        if let cropAt {
            top = min(max(cropAt.top, 0), margin)
            left = min(max(cropAt.left, 0), margin)
        }
        var flip = false
        var shift: (Float, Float, Float) = (0, 0, 0)
        if augmentation.crop, margin > 0 {
            top = random.below(margin + 1)
            left = random.below(margin + 1)
        }
        // Scale jitter: the crop's area and aspect, then its place in the stored square.
        var window: (x: Float, y: Float, width: Float, height: Float)?
        if augmentation.scale == true {
            let area = random.uniform(Augmentation.scaleRange.lowerBound, Augmentation.scaleRange.upperBound)
            let aspect = exp(random.uniform(log(3 / 4), log(4 / 3)))
            let side = Float(size), stored = Float(storedSize)
            let width = min(side * (area * aspect).squareRoot(), stored)
            let height = min(side * (area / aspect).squareRoot(), stored)
            window = (random.uniform() * (stored - width), random.uniform() * (stored - height), width, height)
        }
        if augmentation.flip { flip = random.below(2) == 1 }
        if augmentation.color {
            let s = augmentation.colorShift
            shift = (random.uniform(-s, s).rounded(), random.uniform(-s, s).rounded(), random.uniform(-s, s).rounded())
        }
        var cutoutCentre: (x: Int, y: Int)?
        if augmentation.cutout != nil { cutoutCentre = (random.below(outSize), random.below(outSize)) }
        let (multiplier, offsets) = preprocessing.affine()
        let clampShift = augmentation.color
        if window == nil, outSize != size { window = (Float(left), Float(top), Float(size), Float(size)) }
        if let window {
            writeResampled(from: source, storedSize: storedSize, window: window, size: outSize, flip: flip, shift: clampShift ? shift : nil,
                           multiplier: multiplier, offsets: offsets, to: output)
        } else {
            writeCrop(from: source, storedSize: storedSize, top: top, left: left, size: size, flip: flip, shift: clampShift ? shift : nil,
                      multiplier: multiplier, offsets: offsets, to: output)
        }
        if let cutoutCentre, let side = augmentation.cutout {
            let grey = (0..<3).map { 127.5 * multiplier + offsets[$0] }
            erase(output, size: outSize, centre: cutoutCentre, side: Int((side * Float(outSize)).rounded()), fill: grey)
        }
    }

    /// Sets a square of `side` pixels centred on `centre` (clipped to the image) to `fill`
    /// (one value a channel): cutout on an (size, size, 3) input.
    static func erase(_ output: UnsafeMutablePointer<Float>, size: Int, centre: (x: Int, y: Int), side: Int, fill: [Float]) {
        let low = side / 2, high = side - low
        for y in max(0, centre.y - low)..<min(size, centre.y + high) {
            for x in max(0, centre.x - low)..<min(size, centre.x + high) {
                for c in 0..<3 { output[(y * size + x) * 3 + c] = fill[c] }
            }
        }
    }

    /// A size × size crop at (top, left) of the stored square, mirrored and colour-shifted as
    /// asked, scaled into `output`.
    static func writeCrop(from source: UnsafePointer<UInt8>, storedSize: Int, top: Int, left: Int, size: Int, flip: Bool,
                          shift: (Float, Float, Float)?, multiplier: Float, offsets: [Float], to output: UnsafeMutablePointer<Float>) {
        for y in 0..<size {
            let row = source + ((top + y) * storedSize + left) * 3
            let out = output + y * size * 3
            for x in 0..<size {
                let sx = flip ? size - 1 - x : x
                var r = Float(row[sx * 3]), g = Float(row[sx * 3 + 1]), b = Float(row[sx * 3 + 2])
                if let shift {
                    r = min(max(r + shift.0, 0), 255); g = min(max(g + shift.1, 0), 255); b = min(max(b + shift.2, 0), 255)
                }
                out[x * 3] = r * multiplier + offsets[0]
                out[x * 3 + 1] = g * multiplier + offsets[1]
                out[x * 3 + 2] = b * multiplier + offsets[2]
            }
        }
    }

    /// Bilinear resampling of `window` of the stored square to size × size (pixel centres
    /// aligned), mirrored and colour-shifted as asked, scaled into `output`.
    static func writeResampled(from source: UnsafePointer<UInt8>, storedSize: Int, window: (x: Float, y: Float, width: Float, height: Float),
                               size: Int, flip: Bool, shift: (Float, Float, Float)?, multiplier: Float, offsets: [Float],
                               to output: UnsafeMutablePointer<Float>) {
        let last = Float(storedSize - 1)
        // Per output column: the left source column and its weight (the same for every row).
        var columns = [Int](repeating: 0, count: size), columnWeights = [Float](repeating: 0, count: size)
        for x in 0..<size {
            let sx = flip ? size - 1 - x : x
            let centre = min(max(window.x + (Float(sx) + 0.5) * window.width / Float(size) - 0.5, 0), last)
            let left = min(Int(centre), storedSize - 2)
            columns[x] = left
            columnWeights[x] = centre - Float(left)
        }
        for y in 0..<size {
            let centre = min(max(window.y + (Float(y) + 0.5) * window.height / Float(size) - 0.5, 0), last)
            let top = min(Int(centre), storedSize - 2)
            let ty = centre - Float(top)
            let upper = source + top * storedSize * 3, lower = upper + storedSize * 3
            let out = output + y * size * 3
            for x in 0..<size {
                let p = columns[x] * 3, tx = columnWeights[x]
                for c in 0..<3 {
                    let a = Float(upper[p + c]) * (1 - tx) + Float(upper[p + 3 + c]) * tx
                    let b = Float(lower[p + c]) * (1 - tx) + Float(lower[p + 3 + c]) * tx
                    var v = a * (1 - ty) + b * ty
                    if let shift { v = min(max(v + (c == 0 ? shift.0 : c == 1 ? shift.1 : shift.2), 0), 255) }
                    out[x * 3 + c] = v * multiplier + offsets[c]
                }
            }
        }
    }

    /// Mirrors an (H, W, 3) image of floats left to right in place (flip TTA).
    public static func mirror(_ image: UnsafeMutablePointer<Float>, size: Int) {
        mirror(image, height: size, width: size, channels: 3)
    }

    /// Mirrors an (H, W, C) map of floats left to right in place.
    public static func mirror(_ map: UnsafeMutablePointer<Float>, height: Int, width: Int, channels: Int) {
        for y in 0..<height {
            let row = map + y * width * channels
            for x in 0..<(width / 2) {
                for c in 0..<channels { swap(&row[x * channels + c], &row[(width - 1 - x) * channels + c]) }
            }
        }
    }
}
