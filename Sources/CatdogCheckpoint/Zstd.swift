import CZstd
import Foundation

/// One zstd frame with a content checksum, so corruption is detected on reading.
public enum Zstd {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Compresses `parts` (one frame of their concatenation) straight to the open file `fd`,
    /// a megabyte at a time: memory does not grow with the input.
    public static func compress(_ parts: [UnsafeRawBufferPointer], to fd: Int32, level: Int32 = 3) throws {
        guard let context = ZSTD_createCCtx() else { throw Failure(description: "zstd: out of memory") }
        defer { ZSTD_freeCCtx(context) }
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1)
        ZSTD_CCtx_setPledgedSrcSize(context, UInt64(parts.reduce(0) { $0 + $1.count }))
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        func flush(_ count: Int) throws {
            var done = 0
            while done < count {
                let n = Foundation.write(fd, buffer + done, count - done)
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { throw Failure(description: "write failed: \(String(cString: strerror(errno)))") }
                done += n
            }
        }
        for (index, part) in parts.enumerated() {
            let last = index == parts.count - 1
            var input = ZSTD_inBuffer(src: part.baseAddress, size: part.count, pos: 0)
            while true {
                var output = ZSTD_outBuffer(dst: buffer, size: chunk, pos: 0)
                let remaining = ZSTD_compressStream2(context, &output, &input, last ? ZSTD_e_end : ZSTD_e_continue)
                if ZSTD_isError(remaining) != 0 { throw Failure(description: "zstd: \(String(cString: ZSTD_getErrorName(remaining)))") }
                try flush(output.pos)
                if last ? remaining == 0 : input.pos == input.size { break }
            }
        }
        if parts.isEmpty {
            var input = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
            var remaining = 1
            while remaining != 0 {
                var output = ZSTD_outBuffer(dst: buffer, size: chunk, pos: 0)
                remaining = ZSTD_compressStream2(context, &output, &input, ZSTD_e_end)
                if ZSTD_isError(remaining) != 0 { throw Failure(description: "zstd: \(String(cString: ZSTD_getErrorName(remaining)))") }
                try flush(output.pos)
            }
        }
    }

    public static func compress(_ input: UnsafeRawBufferPointer, level: Int32 = 3) throws -> [UInt8] {
        guard let context = ZSTD_createCCtx() else { throw Failure(description: "zstd: out of memory") }
        defer { ZSTD_freeCCtx(context) }
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1)
        var output = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        let written = output.withUnsafeMutableBytes { out in
            ZSTD_compress2(context, out.baseAddress, out.count, input.baseAddress, input.count)
        }
        if ZSTD_isError(written) != 0 { throw Failure(description: "zstd: \(String(cString: ZSTD_getErrorName(written)))") }
        output.removeLast(output.count - written)
        return output
    }

    /// The most bytes zstd can turn `bytes` of content into (incompressible data, frame overhead).
    public static func compressBound(_ bytes: Int) -> Int { ZSTD_compressBound(bytes) }

    /// Decompresses one frame; refuses a frame whose size is unknown or above `limit` bytes,
    /// and one whose checksum does not match. (Readers of untrusted files should look at the
    /// start of the content first, with `Reader`, before deciding how much to accept.)
    public static func decompress(_ input: UnsafeRawBufferPointer, limit: Int = 4 << 30) throws -> [UInt8] {
        let reader = try Reader([UInt8](input))
        guard reader.contentSize <= limit else { throw Failure(description: "zstd frame claims \(reader.contentSize) bytes") }
        let output = try reader.read(reader.contentSize)
        try reader.finish()
        return output
    }
}

extension Zstd {
    /// Reads one frame a piece at a time, so a caller can look at the start of the content
    /// (a header) and decide how much the rest may legitimately be before allocating it: a
    /// small file that declares gigabytes is refused without ever holding them.
    public final class Reader {
        private let context: OpaquePointer
        private let input: [UInt8]
        private var consumed = 0
        /// The frame's declared content size.
        public let contentSize: Int
        public private(set) var produced = 0
        /// zstd said the frame is complete, its checksum verified.
        private var frameDone = false

        public init(_ input: [UInt8]) throws {
            let size = input.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
            if size == catdog_zstd_contentsize_error() { throw Failure(description: "not a zstd frame") }
            if size == catdog_zstd_contentsize_unknown() { throw Failure(description: "zstd frame without a content size") }
            guard size <= UInt64(Int.max / 2) else { throw Failure(description: "zstd frame claims \(size) bytes") }
            guard let context = ZSTD_createDCtx() else { throw Failure(description: "zstd: out of memory") }
            self.context = context
            self.input = input
            contentSize = Int(size)
        }

        deinit { ZSTD_freeDCtx(context) }

        /// The next `count` bytes of content; fails if the frame ends first or is damaged.
        public func read(_ count: Int) throws -> [UInt8] {
            var output: [UInt8] = []
            try read(count, appendingTo: &output)
            return output
        }

        /// Appends the next `count` bytes of content to `output`, decompressed in place (a
        /// checkpoint's tensors are not held twice while they are joined to its header).
        public func read(_ count: Int, appendingTo output: inout [UInt8]) throws {
            guard count >= 0, count <= contentSize - produced else {
                throw Failure(description: "zstd frame is shorter than its contents claim")
            }
            let start = output.count
            output.reserveCapacity(start + count)
            output.append(contentsOf: repeatElement(0, count: count))
            var filled = 0
            while filled < count {
                let (result, took, wrote) = output.withUnsafeMutableBytes { out in
                    input.withUnsafeBytes { src in
                        var o = ZSTD_outBuffer(dst: out.baseAddress! + start + filled, size: count - filled, pos: 0)
                        var i = ZSTD_inBuffer(src: src.baseAddress! + consumed, size: src.count - consumed, pos: 0)
                        let r = ZSTD_decompressStream(context, &o, &i)
                        return (r, i.pos, o.pos)
                    }
                }
                if ZSTD_isError(result) != 0 {
                    throw Failure(description: "damaged zstd data (\(String(cString: ZSTD_getErrorName(result))))")
                }
                consumed += took
                filled += wrote
                frameDone = result == 0
                if took == 0, wrote == 0 { throw Failure(description: "zstd frame is truncated") }
            }
            produced += count
        }

        /// Checks that the frame ends exactly here and its checksum matches.
        public func finish() throws {
            guard produced == contentSize else { throw Failure(description: "zstd frame has more content than was read") }
            if frameDone { return }
            var spare: UInt8 = 0
            while true {
                let (result, took, wrote) = input.withUnsafeBytes { src in
                    withUnsafeMutableBytes(of: &spare) { out in
                        var o = ZSTD_outBuffer(dst: out.baseAddress!, size: 1, pos: 0)
                        var i = ZSTD_inBuffer(src: src.baseAddress! + consumed, size: src.count - consumed, pos: 0)
                        let r = ZSTD_decompressStream(context, &o, &i)
                        return (r, i.pos, o.pos)
                    }
                }
                if ZSTD_isError(result) != 0 { throw Failure(description: "damaged zstd data (checksum)") }
                if wrote > 0 { throw Failure(description: "zstd frame has more content than it declares") }
                consumed += took
                if result == 0 { return }
                if took == 0 { throw Failure(description: "zstd frame is truncated") }
            }
        }
    }
}
