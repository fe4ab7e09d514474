import CatdogSupport
import Foundation

/// Writes a TensorBoard event file (`events.out.tfevents.<time>.<host>.<pid>`), so that
/// `tensorboard --logdir runs/` shows a run live: scalars and text, as TensorFlow's summary
/// writer does. Each record is written (and so visible) at once.
///
/// The format: records of `length` (UInt64 LE), masked CRC-32C of those 8 bytes, the data,
/// masked CRC-32C of the data; each record's data is a protobuf `tensorflow.Event`. The few
/// messages needed are encoded by hand (`ProtobufWriter`).
public final class TensorBoardWriter {
    public let path: String
    private let handle: FileHandle

    /// Creates a new event file in `directory` (which must exist); never overwrites one.
    public init(directory: String, hostName: String, now: Date = Date()) throws {
        let safeHost = String(hostName.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." ? $0 : "_" }.prefix(64))
        path = (directory as NSString).appendingPathComponent(
            "events.out.tfevents.\(Int(now.timeIntervalSince1970)).\(safeHost).\(getpid())")
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path,
                                                             NSLocalizedDescriptionKey: String(cString: strerror(errno))])
        }
        handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        var event = ProtobufWriter()
        event.double(1, now.timeIntervalSince1970)
        event.string(3, "brain.Event:2")
        try write(event.bytes)
    }

    /// A scalar `value` under `tag` at `step` (e.g. "loss/train" at epoch 3).
    public func scalar(_ tag: String, _ value: Double, step: Int, wallTime: Date = Date()) throws {
        var summaryValue = ProtobufWriter()
        summaryValue.string(1, tag)
        summaryValue.float(2, Float(value))
        try writeSummary(summaryValue, step: step, wallTime: wallTime)
    }

    /// Markdown text under `tag` (TensorBoard's Text tab), e.g. the run's configuration.
    public func text(_ tag: String, _ markdown: String, step: Int, wallTime: Date = Date()) throws {
        var plugin = ProtobufWriter()
        plugin.string(1, "text")
        var metadata = ProtobufWriter()
        metadata.message(1, plugin)
        var tensor = ProtobufWriter()
        tensor.varint(1, 7)  // DT_STRING
        tensor.message(2, ProtobufWriter())  // a scalar: no dimensions
        tensor.bytes(8, Array(markdown.utf8))
        var summaryValue = ProtobufWriter()
        summaryValue.string(1, tag)
        summaryValue.message(9, metadata)
        summaryValue.message(8, tensor)
        try writeSummary(summaryValue, step: step, wallTime: wallTime)
    }

    private func writeSummary(_ value: ProtobufWriter, step: Int, wallTime: Date) throws {
        var summary = ProtobufWriter()
        summary.message(1, value)
        var event = ProtobufWriter()
        event.double(1, wallTime.timeIntervalSince1970)
        event.varint(2, UInt64(bitPattern: Int64(step)))
        event.message(5, summary)
        try write(event.bytes)
    }

    private func write(_ data: [UInt8]) throws {
        var record = [UInt8]()
        record.reserveCapacity(data.count + 16)
        let length = withUnsafeBytes(of: UInt64(data.count).littleEndian) { Array($0) }
        record += length
        record += withUnsafeBytes(of: CRC32C.masked(length).littleEndian) { Array($0) }
        record += data
        record += withUnsafeBytes(of: CRC32C.masked(data).littleEndian) { Array($0) }
        try handle.write(contentsOf: Data(record))
    }
}

/// CRC-32C (Castagnoli), the checksum of TFRecord and TensorBoard files.
public enum CRC32C {
    public static func checksum(_ bytes: [UInt8]) -> UInt32 { CRC32.castagnoli.checksum(bytes) }

    /// TFRecord's masked CRC: rotated right by 15 bits plus a constant.
    public static func masked(_ bytes: [UInt8]) -> UInt32 {
        let c = checksum(bytes)
        return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
    }
}
