/// The protobuf wire format, enough to write the messages of TensorBoard's event files and of
/// ONNX models without generated code: fields in the order written, each with its number.
public struct ProtobufWriter {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    private mutating func raw(_ value: UInt64) {
        var v = value
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }

    private mutating func key(_ field: Int, _ wireType: UInt64) { raw(UInt64(field) << 3 | wireType) }

    public mutating func varint(_ field: Int, _ value: UInt64) { key(field, 0); raw(value) }

    /// A signed integer as protobuf's int64/int32 (two's complement, not zigzag).
    public mutating func int(_ field: Int, _ value: Int) { varint(field, UInt64(bitPattern: Int64(value))) }

    public mutating func double(_ field: Int, _ value: Double) {
        key(field, 1)
        bytes += withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) }
    }

    public mutating func float(_ field: Int, _ value: Float) {
        key(field, 5)
        bytes += withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) }
    }

    public mutating func bytes(_ field: Int, _ value: [UInt8]) {
        key(field, 2)
        raw(UInt64(value.count))
        bytes += value
    }

    public mutating func string(_ field: Int, _ value: String) { bytes(field, Array(value.utf8)) }

    public mutating func message(_ field: Int, _ value: ProtobufWriter) { bytes(field, value.bytes) }
}
