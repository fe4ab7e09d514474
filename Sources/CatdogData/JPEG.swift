import CatdogSupport
import CTurboJPEG
import Foundation

/// Why an input file could not be used as an image.
public enum ImageProblem: String, Sendable, Codable, CaseIterable {
    case empty = "empty"
    case notJPEG = "not a JPEG"
    case unreadable = "unreadable"
    case tooLarge = "too large"

    /// A small number for summing outcomes across ranks: 1…4 (0 means the file decoded).
    public var code: Int { ImageProblem.allCases.firstIndex(of: self)! + 1 }

    public init?(code: Int) {
        guard code >= 1, code <= ImageProblem.allCases.count else { return nil }
        self = ImageProblem.allCases[code - 1]
    }
}

public struct ImageError: Error, CustomStringConvertible {
    public var problem: ImageProblem
    public var detail: String
    public var description: String { "\(problem.rawValue): \(detail)" }
    public init(problem: ImageProblem, detail: String) {
        self.problem = problem
        self.detail = detail
    }
}

/// A decoded 8-bit RGB image, rows of width·3 bytes.
public struct RGBImage: Sendable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// TurboJPEG decoding with DCT-domain downscaling, and encoding (for tests and tools).
/// One instance per thread: a TurboJPEG handle is not thread-safe.
public final class JPEGCodec {
    private var decompressor: tjhandle
    private var compressor: tjhandle?
    private let scalingFactors: [tjscalingfactor]

    /// Files above this size, or images above `maxPixels`, are refused as too large.
    public static let maxFileBytes = 64 << 20
    public static let maxPixels = 100_000_000
    /// A decode's work is about its scans times its pixels: a progressive photo has about 10
    /// scans, and a crafted file can have thousands (20,000 identical scans of 10000x10000 took
    /// minutes). At most `maxScans` scans, and at most `maxScanPixels` scans x pixels.
    public static let maxScans = 100
    public static let maxScanPixels = 2_000_000_000

    /// The start-of-scan markers (0xFF 0xDA) in `data`: in entropy-coded data 0xFF is always
    /// followed by 0x00 or a restart marker, so each is a scan (or, rarely, bytes inside a
    /// metadata segment, which only makes the count err on the high side).
    public static func scanCount(_ data: Data) -> Int {
        data.withUnsafeBytes { raw in
            guard let base = raw.baseAddress, raw.count >= 2 else { return 0 }
            var count = 0
            var at = base
            let end = base + raw.count
            // memchr to each 0xFF: a photo's bytes are scanned at memory speed.
            while let found = memchr(at, 0xFF, end - at - 1) {
                if found.load(fromByteOffset: 1, as: UInt8.self) == 0xDA { count += 1 }
                at = UnsafeRawPointer(found) + 1
                if end - at < 2 { break }
            }
            return count
        }
    }

    /// Reads an image file of at most `maxFileBytes` (see `readBoundedFile`).
    public static func readFile(_ path: String) throws -> Data {
        do { return try readBoundedFile(path, limit: maxFileBytes) } catch let error as BoundedReadError {
            if case .tooLarge = error { throw ImageError(problem: .tooLarge, detail: error.description) }
            throw ImageError(problem: .unreadable, detail: error.description)
        }
    }

    public init() {
        decompressor = tjInitDecompress()
        var count: Int32 = 0
        let factors = tjGetScalingFactors(&count)
        // Only the power-of-two reductions, largest first: 1/8, 1/4, 1/2, 1. libjpeg-turbo has
        // SIMD inverse DCTs for these; the others (3/4, 5/8, ...) run in plain C and cost more
        // than decoding at full size (a 200x200 photo: 147 µs at 3/4, 98 µs at 1/1, 77 at 1/2).
        scalingFactors = (0..<Int(count)).map { factors![$0] }
            .filter { $0.num == 1 && [1, 2, 4, 8].contains($0.denom) }
            .sorted { Double($0.num) / Double($0.denom) < Double($1.num) / Double($1.denom) }
    }

    deinit {
        tjDestroy(decompressor)
        if let compressor { tjDestroy(compressor) }
    }

    /// Width and height from the header, without decoding.
    public func dimensions(of data: Data) throws -> (width: Int, height: Int) {
        let header = try recovering { try readHeader(data) }
        return (header.width, header.height)
    }

    /// Runs `body`; after a failure, replaces the decompressor, because libjpeg-turbo 2.1 can
    /// leave a handle that failed mid-file unable to decode the next, good one.
    private func recovering<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch {
            tjDestroy(decompressor)
            decompressor = tjInitDecompress()
            throw error
        }
    }

    private struct Header { var width, height: Int; var colorspace: Int32 }

    private func readHeader(_ data: Data) throws -> Header {
        if data.isEmpty { throw ImageError(problem: .empty, detail: "the file has no bytes") }
        if data.count > JPEGCodec.maxFileBytes {
            throw ImageError(problem: .tooLarge, detail: "\(data.count) bytes (limit \(JPEGCodec.maxFileBytes))")
        }
        guard data.count >= 3, data[data.startIndex] == 0xFF, data[data.startIndex + 1] == 0xD8 else {
            throw ImageError(problem: .notJPEG, detail: "no JPEG start-of-image marker")
        }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        let status = data.withUnsafeBytes { raw in
            tjDecompressHeader3(decompressor, raw.bindMemory(to: UInt8.self).baseAddress, UInt(data.count),
                                &width, &height, &subsampling, &colorspace)
        }
        guard status == 0 else { throw ImageError(problem: .unreadable, detail: lastError(decompressor)) }
        guard width > 0, height > 0 else { throw ImageError(problem: .unreadable, detail: "zero image size") }
        guard Int(width) * Int(height) <= JPEGCodec.maxPixels else {
            throw ImageError(problem: .tooLarge, detail: "\(width)x\(height) pixels")
        }
        let scans = JPEGCodec.scanCount(data)
        guard scans <= JPEGCodec.maxScans, scans * Int(width) * Int(height) <= JPEGCodec.maxScanPixels else {
            throw ImageError(problem: .tooLarge, detail: "\(scans) scans of \(width)x\(height) pixels (at most \(JPEGCodec.maxScans) scans, and \(JPEGCodec.maxScanPixels / 1_000_000) million pixels decoded over all of them)")
        }
        return Header(width: Int(width), height: Int(height), colorspace: colorspace)
    }

    /// Decodes to RGB at the smallest DCT scale (1/8, 1/4, 1/2, 1) whose result is still at least
    /// `minWidth`×`minHeight` (or full size when the image is smaller). Grayscale becomes RGB
    /// through libjpeg; CMYK and YCCK (Adobe's inverted CMYK) are converted here.
    public func decode(_ data: Data, minWidth: Int? = nil, minHeight: Int? = nil) throws -> RGBImage {
        var image = RGBImage(width: 0, height: 0, pixels: [])
        try decode(data, minWidth: minWidth, minHeight: minHeight, into: &image)
        return image
    }

    /// The same, into `image`, whose pixel storage is reused when it is large enough (no new
    /// memory per image when decoding many of similar sizes).
    public func decode(_ data: Data, minWidth: Int? = nil, minHeight: Int? = nil, into image: inout RGBImage) throws {
        try recovering { try decodeOnce(data, minWidth: minWidth ?? .max, minHeight: minHeight ?? .max, into: &image) }
    }

    private func decodeOnce(_ data: Data, minWidth: Int, minHeight: Int, into image: inout RGBImage) throws {
        let header = try readHeader(data)
        var factor = tjscalingfactor(num: 1, denom: 1)
        for candidate in scalingFactors where minWidth < header.width || minHeight < header.height {
            if catdog_tj_scaled(Int32(header.width), candidate) >= minWidth,
               catdog_tj_scaled(Int32(header.height), candidate) >= minHeight {
                factor = candidate
                break
            }
        }
        let width = Int(catdog_tj_scaled(Int32(header.width), factor))
        let height = Int(catdog_tj_scaled(Int32(header.height), factor))
        let isCMYK = header.colorspace == Int32(TJCS_CMYK.rawValue) || header.colorspace == Int32(TJCS_YCCK.rawValue)
        let channels = isCMYK ? 4 : 3
        var buffer: [UInt8]
        if isCMYK {
            buffer = [UInt8](repeating: 0, count: width * height * channels)
        } else {
            // The caller's storage, at the size of this image (its capacity kept).
            buffer = image.pixels
            image.pixels = []
            let count = width * height * 3
            if buffer.count > count { buffer.removeLast(buffer.count - count) }
            if buffer.count < count { buffer.append(contentsOf: repeatElement(0, count: count - buffer.count)) }
        }
        let format = isCMYK ? TJPF_CMYK : TJPF_RGB
        let status = data.withUnsafeBytes { raw in
            buffer.withUnsafeMutableBufferPointer { out in
                tjDecompress2(decompressor, raw.bindMemory(to: UInt8.self).baseAddress, UInt(data.count),
                              out.baseAddress, Int32(width), 0, Int32(height), Int32(format.rawValue), 0)
            }
        }
        if status != 0 {
            let message = lastError(decompressor)
            // A warning leaves a usable image, except a truncated file, whose bottom is grey.
            if tjGetErrorCode(decompressor) != Int32(TJERR_WARNING.rawValue) || message.contains("Premature end") {
                throw ImageError(problem: .unreadable, detail: message)
            }
        }
        guard isCMYK else {
            image = RGBImage(width: width, height: height, pixels: buffer)
            return
        }
        // libjpeg stores Adobe CMYK inverted: R = C·K/255 in its values.
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            let k = UInt32(buffer[4 * i + 3])
            for ch in 0..<3 { rgb[3 * i + ch] = UInt8((UInt32(buffer[4 * i + ch]) * k + 127) / 255) }
        }
        image = RGBImage(width: width, height: height, pixels: rgb)
    }

    public enum EncodeFormat { case rgb, gray, cmyk }

    /// Encodes `pixels` (RGB, gray or CMYK rows) as a baseline JPEG, or a progressive one.
    public func encode(_ pixels: [UInt8], width: Int, height: Int, format: EncodeFormat = .rgb, quality: Int = 90,
                       progressive: Bool = false) throws -> Data {
        if compressor == nil { compressor = tjInitCompress() }
        let (pixelFormat, subsampling): (TJPF, TJSAMP) = switch format {
        case .rgb: (TJPF_RGB, TJSAMP_420)
        case .gray: (TJPF_GRAY, TJSAMP_GRAY)
        case .cmyk: (TJPF_CMYK, TJSAMP_444)
        }
        var output: UnsafeMutablePointer<UInt8>?
        var size: UInt = 0
        let status = pixels.withUnsafeBufferPointer { input in
            tjCompress2(compressor, input.baseAddress, Int32(width), 0, Int32(height), Int32(pixelFormat.rawValue),
                        &output, &size, Int32(subsampling.rawValue), Int32(quality), progressive ? TJFLAG_PROGRESSIVE : 0)
        }
        defer { if let output { tjFree(output) } }
        guard status == 0, let output else { throw ImageError(problem: .unreadable, detail: lastError(compressor)) }
        return Data(bytes: output, count: Int(size))
    }

    private func lastError(_ handle: tjhandle?) -> String {
        guard let message = tjGetErrorStr2(handle) else { return "unknown TurboJPEG error" }
        return String(cString: message)
    }
}
