import CatdogSupport

/// The entries of a zip file whose members are stored uncompressed, as `torch.save` writes
/// them: read from the central directory, each checked to lie inside the file and to hold the
/// bytes its CRC-32 says (a damaged download is refused, not imported as other weights; a CRC
/// of 0, what a writer told not to compute one records, is not checked). Compressed, encrypted
/// and zip64 members are refused with a clear error.
struct StoredZip {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let bytes: [UInt8]
    private var entries: [String: Range<Int>] = [:]
    private(set) var names: [String] = []

    init(_ bytes: [UInt8]) throws {
        self.bytes = bytes
        // End of central directory: 22 bytes plus a comment of up to 65,535 bytes at the end.
        guard bytes.count >= 22 else { throw Failure(description: "zip file too short") }
        var eocd = -1
        var i = bytes.count - 22
        let lowest = max(0, bytes.count - 22 - 65_535)
        while i >= lowest {
            if bytes[i] == 0x50, bytes[i + 1] == 0x4B, bytes[i + 2] == 0x05, bytes[i + 3] == 0x06 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw Failure(description: "zip file without an end-of-directory record (truncated?)") }
        let count = u16(eocd + 10)
        let directorySize = u32(eocd + 12), directoryOffset = u32(eocd + 16)
        guard count != 0xFFFF, directoryOffset != 0xFFFF_FFFF else { throw Failure(description: "zip64 archives are not supported") }
        guard directoryOffset <= eocd, directorySize <= eocd - directoryOffset else {
            throw Failure(description: "zip central directory lies outside the file")
        }
        var p = directoryOffset
        for _ in 0..<count {
            guard p <= bytes.count - 46, u32(p) == 0x0201_4B50 else { throw Failure(description: "damaged zip central directory") }
            let flags = u16(p + 8), method = u16(p + 10)
            let crc = u32(p + 16), compressed = u32(p + 20), size = u32(p + 24)
            let nameLength = u16(p + 28), extraLength = u16(p + 30), commentLength = u16(p + 32)
            let local = u32(p + 42)
            guard p + 46 + nameLength <= bytes.count else { throw Failure(description: "damaged zip central directory") }
            let name = String(decoding: bytes[(p + 46)..<(p + 46 + nameLength)], as: UTF8.self)
            p += 46 + nameLength + extraLength + commentLength
            guard flags & 1 == 0 else { throw Failure(description: "zip entry \(name) is encrypted") }
            guard method == 0 else {
                throw Failure(description: "zip entry \(name) is compressed (method \(method)); torch.save stores entries uncompressed")
            }
            guard compressed == size else {
                throw Failure(description: "zip entry \(name) is stored with \(compressed) bytes for its \(size): the file is damaged")
            }
            guard local <= bytes.count - 30, u32(local) == 0x0403_4B50 else { throw Failure(description: "zip entry \(name) has no local header") }
            let start = local + 30 + u16(local + 26) + u16(local + 28)
            guard start <= bytes.count, size <= bytes.count - start else {
                throw Failure(description: "zip entry \(name) reaches past the end of the file (truncated?)")
            }
            guard crc == 0 || Int(CRC32.ieee.checksum(bytes[start..<(start + size)])) == crc else {
                throw Failure(description: "zip entry \(name) does not hold the bytes its CRC-32 says: the file is damaged; download it again")
            }
            entries[name] = start..<(start + size)
            names.append(name)
        }
    }

    private func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
    private func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }

    func range(_ name: String) throws -> Range<Int> {
        guard let r = entries[name] else { throw Failure(description: "zip entry \(name) is missing") }
        return r
    }

    func contents(_ name: String) throws -> [UInt8] { Array(bytes[try range(name)]) }
}
