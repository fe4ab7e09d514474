import CZstd

/// One zstd frame with a content checksum, so corruption is detected on reading.
public enum Zstd {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
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

    /// Decompresses one frame; refuses a frame whose size is unknown or above `limit` bytes,
    /// and (through zstd) one whose checksum does not match.
    public static func decompress(_ input: UnsafeRawBufferPointer, limit: Int = 4 << 30) throws -> [UInt8] {
        let size = ZSTD_getFrameContentSize(input.baseAddress, input.count)
        if size == catdog_zstd_contentsize_error() { throw Failure(description: "not a zstd frame") }
        if size == catdog_zstd_contentsize_unknown() { throw Failure(description: "zstd frame without a content size") }
        guard size <= UInt64(limit) else { throw Failure(description: "zstd frame claims \(size) bytes") }
        var output = [UInt8](repeating: 0, count: Int(size))
        let written = output.withUnsafeMutableBytes { out in
            ZSTD_decompress(out.baseAddress, out.count, input.baseAddress, input.count)
        }
        if ZSTD_isError(written) != 0 {
            throw Failure(description: "damaged zstd data (\(String(cString: ZSTD_getErrorName(written))))")
        }
        guard written == Int(size) else { throw Failure(description: "zstd frame is shorter than it claims") }
        return output
    }
}
