/// A table-driven CRC-32 of a reflected polynomial, initial value and final xor all ones:
/// IEEE 802.3's (zip, gzip, PNG; the check value of "123456789" is 0xCBF43926) and
/// Castagnoli's (CRC-32C: TFRecord and TensorBoard files; 0xE3069283).
public struct CRC32: Sendable {
    private let table: [UInt32]

    public init(reflectedPolynomial polynomial: UInt32) {
        table = (0..<256).map { n -> UInt32 in
            var c = UInt32(n)
            for _ in 0..<8 { c = c & 1 != 0 ? polynomial ^ (c >> 1) : c >> 1 }
            return c
        }
    }

    public static let ieee = CRC32(reflectedPolynomial: 0xEDB8_8320)
    public static let castagnoli = CRC32(reflectedPolynomial: 0x82F6_3B78)

    public func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        table.withUnsafeBufferPointer { t in
            bytes.withUnsafeBufferPointer { data in
                var c: UInt32 = 0xFFFF_FFFF
                for b in data { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
                return c ^ 0xFFFF_FFFF
            }
        }
    }

    public func checksum(_ bytes: [UInt8]) -> UInt32 { checksum(bytes[...]) }
}
