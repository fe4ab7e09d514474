import CatdogSupport
import Foundation

/// What decoding a set of files found: how many were skipped and why, with the details.
public struct DecodeReport: Sendable {
    public var attempted = 0
    public var skipped: [(path: String, problem: ImageProblem, detail: String)] = []

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
/// bytes, at the smallest DCT scale that is still large enough. One per thread.
public final class SquareDecoder {
    public let storedSize: Int
    public let fit: Resize.Fit
    public var bytesPerImage: Int { storedSize * storedSize * 3 }
    private let codec = JPEGCodec()

    public init(storedSize: Int, fit: Resize.Fit) {
        self.storedSize = storedSize
        self.fit = fit
    }

    /// Decodes `path` into `output` (bytesPerImage bytes). Throws `ImageError` for a broken file.
    public func decode(_ path: String, into output: UnsafeMutablePointer<UInt8>) throws {
        do {
            let data = try JPEGCodec.readFile(path)
            let decoded: RGBImage
            if fit == .crop {
                // The short side must reach the stored size; the long one follows.
                let (w, h) = try codec.dimensions(of: data)
                let scale = Double(storedSize) / Double(min(w, h))
                decoded = try codec.decode(data, minWidth: Int((Double(w) * scale).rounded(.up)),
                                           minHeight: Int((Double(h) * scale).rounded(.up)))
            } else {
                decoded = try codec.decode(data, minWidth: storedSize, minHeight: storedSize)
            }
            let square = Resize.square(decoded, size: storedSize, fit: fit)
            square.withUnsafeBufferPointer { output.update(from: $0.baseAddress!, count: bytesPerImage) }
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
                report.skipped.append((files[i], error.problem, error.detail))
            } catch {
                report.skipped.append((files[i], .unreadable, "\(error)"))
            }
            done += 1
            progress?(done)
        }
        return report
    }

    /// Writes sample `index` as network input; see `ImageStore.writeSample(from:storedSize:...)`.
    public func writeSample(_ index: Int, to output: UnsafeMutablePointer<Float>, preprocessing: Preprocessing,
                            augmentation: Augmentation, random: inout Random) {
        ImageStore.writeSample(from: image(index), storedSize: storedSize, to: output, preprocessing: preprocessing,
                               augmentation: augmentation, random: &random)
    }

    /// Writes a stored square as network input (H, W, 3) floats at `output`: a crop of the
    /// square (random when augmenting, else centred), optional flip and colour shift, then the
    /// preprocessing's scaling.
    public static func writeSample(from source: UnsafePointer<UInt8>, storedSize: Int, to output: UnsafeMutablePointer<Float>,
                                   preprocessing: Preprocessing, augmentation: Augmentation, random: inout Random) {
        let size = preprocessing.imageSize
        precondition(size <= storedSize)
        let margin = storedSize - size
        var top = margin / 2, left = margin / 2
        var flip = false
        var shift: (Float, Float, Float) = (0, 0, 0)
        if augmentation.crop, margin > 0 {
            top = random.below(margin + 1)
            left = random.below(margin + 1)
        }
        if augmentation.flip { flip = random.below(2) == 1 }
        if augmentation.color {
            let s = augmentation.colorShift
            shift = (random.uniform(-s, s).rounded(), random.uniform(-s, s).rounded(), random.uniform(-s, s).rounded())
        }
        let (multiplier, offsets) = preprocessing.affine()
        let clampShift = augmentation.color
        for y in 0..<size {
            let row = source + ((top + y) * storedSize + left) * 3
            let out = output + y * size * 3
            for x in 0..<size {
                let sx = flip ? size - 1 - x : x
                var r = Float(row[sx * 3]), g = Float(row[sx * 3 + 1]), b = Float(row[sx * 3 + 2])
                if clampShift {
                    r = min(max(r + shift.0, 0), 255); g = min(max(g + shift.1, 0), 255); b = min(max(b + shift.2, 0), 255)
                }
                out[x * 3] = r * multiplier + offsets[0]
                out[x * 3 + 1] = g * multiplier + offsets[1]
                out[x * 3 + 2] = b * multiplier + offsets[2]
            }
        }
    }
}
