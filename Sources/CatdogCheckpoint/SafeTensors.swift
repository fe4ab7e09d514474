import Foundation

/// The safetensors layout (Hugging Face): an 8-byte little-endian header length, a JSON header
/// mapping tensor names to dtype, shape and byte offsets (plus a string-to-string
/// `__metadata__`), then the raw little-endian tensor bytes. Only F32 tensors are written.
public enum SafeTensors {
    public struct Tensor {
        public var name: String
        public var shape: [Int]
        public var values: UnsafeBufferPointer<Float>

        public init(name: String, shape: [Int], values: UnsafeBufferPointer<Float>) {
            self.name = name
            self.shape = shape
            self.values = values
        }
    }

    public struct FormatError: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// A tensor that holds NaN or infinity (the first at `index`).
    public struct NotANumber: Error, CustomStringConvertible {
        public var tensor: String
        public var index: Int
        public var description: String {
            "tensor \(tensor) holds values that are not numbers (NaN or infinity, the first at index \(index)): the weights diverged or the file is damaged"
        }
    }

    public static func encode(_ tensors: [Tensor], metadata: [String: String]) throws -> [UInt8] {
        let (header, parts) = try encodeParts(tensors, metadata: metadata)
        var out = header
        out.reserveCapacity(header.count + parts.reduce(0) { $0 + $1.count })
        for part in parts { out += part }
        return out
    }

    /// The file as its header (length and JSON) and then each tensor's bytes where they lie,
    /// so a writer can stream it without a copy; the tensors' memory must outlive the parts.
    public static func encodeParts(_ tensors: [Tensor], metadata: [String: String]) throws
        -> (header: [UInt8], parts: [UnsafeRawBufferPointer]) {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        let tensors = tensors.filter { $0.values.count > 0 }  // nothing to store; readers treat absent as empty
        for t in tensors {
            precondition(t.shape.reduce(1, *) == t.values.count, "shape of \(t.name) does not match its values")
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.values.count]]
            offset += 4 * t.values.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }  // pad with spaces so tensors are 8-byte aligned
        var out = [UInt8]()
        out.reserveCapacity(8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out += $0 }
        out += json
        return (out, tensors.map { UnsafeRawBufferPointer($0.values) })  // x86-64 and arm64 are little-endian
    }

    /// A parsed file: metadata and, per tensor, its shape and byte range in `bytes`.
    public struct File {
        public let bytes: [UInt8]
        public let metadata: [String: String]
        public let tensors: [String: (dtype: String, shape: [Int], range: Range<Int>)]

        /// Copies tensor `name` into `destination`, checking its dtype, its size and that every
        /// value is a number: no state of a network or an optimizer holds NaN or infinity, and
        /// one read from a file would spread through everything computed from it.
        public func read(_ name: String, into destination: UnsafeMutablePointer<Float>, count: Int) throws {
            if count == 0 { return }
            guard let t = tensors[name] else { throw FormatError(description: "tensor \(name) is missing") }
            guard t.dtype == "F32", t.range.count == 4 * count else {
                throw FormatError(description: "tensor \(name) is \(t.dtype) \(t.shape), expected F32 with \(count) values")
            }
            bytes.withUnsafeBytes { raw in
                UnsafeMutableRawPointer(destination).copyMemory(from: raw.baseAddress! + t.range.lowerBound, byteCount: t.range.count)
            }
            if let bad = UnsafeBufferPointer(start: destination, count: count).firstIndex(where: { !$0.isFinite }) {
                throw NotANumber(tensor: name, index: bad)
            }
        }

        public func array(_ name: String) throws -> [Float] {
            guard let t = tensors[name] else { throw FormatError(description: "tensor \(name) is missing") }
            var values = [Float](repeating: 0, count: t.range.count / 4)
            try values.withUnsafeMutableBufferPointer { try read(name, into: $0.baseAddress!, count: $0.count) }
            return values
        }
    }

    public static func decode(_ bytes: [UInt8]) throws -> File {
        guard bytes.count >= 8 else { throw FormatError(description: "too short for a safetensors file") }
        let headerLength = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard headerLength <= UInt64(bytes.count - 8), headerLength < 16 << 20 else {
            throw FormatError(description: "header length \(headerLength) does not fit the file")
        }
        let headerEnd = 8 + Int(headerLength)
        guard let header = try? JSONSerialization.jsonObject(with: Data(bytes[8..<headerEnd])) as? [String: Any] else {
            throw FormatError(description: "the header is not JSON")
        }
        var metadata: [String: String] = [:]
        var tensors: [String: (String, [Int], Range<Int>)] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                metadata = value as? [String: String] ?? [:]
                continue
            }
            // Subtractions, not additions: offsets near Int.max must not wrap past the checks.
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], shape.count <= 8, shape.allSatisfy({ $0 >= 0 }),
                  let offsets = entry["data_offsets"] as? [Int], offsets.count == 2,
                  offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= bytes.count - headerEnd
            else { throw FormatError(description: "tensor \(name) has a bad header entry (shape or offsets outside the file)") }
            let elementSize = ["F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
                               "I8": 1, "U8": 1, "BOOL": 1][dtype]
            guard let elementSize else { throw FormatError(description: "tensor \(name) has an unknown dtype \(dtype)") }
            var elements = 1
            for s in shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: s)
                guard !overflow else { throw FormatError(description: "tensor \(name) has an absurd shape \(shape)") }
                elements = product
            }
            guard elements.multipliedReportingOverflow(by: elementSize) == (offsets[1] - offsets[0], false) else {
                throw FormatError(description: "tensor \(name): shape \(shape) of \(dtype) does not match its \(offsets[1] - offsets[0]) bytes")
            }
            guard offsets[0] % elementSize == 0 else { throw FormatError(description: "tensor \(name) is not aligned") }
            tensors[name] = (dtype, shape, (headerEnd + offsets[0])..<(headerEnd + offsets[1]))
        }
        // No two tensors may share bytes.
        let ranges = tensors.values.map(\.2).filter { !$0.isEmpty }.sorted { $0.lowerBound < $1.lowerBound }
        for (a, b) in zip(ranges, ranges.dropFirst()) where b.lowerBound < a.upperBound {
            throw FormatError(description: "two tensors overlap in the file")
        }
        return File(bytes: bytes, metadata: metadata, tensors: tensors)
    }
}

/// A checkpoint file that cannot be used: which file, what is wrong.
public struct CheckpointError: Error, CustomStringConvertible {
    public var path: String
    public var problem: String
    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }
    public var description: String { "checkpoint \(path): \(problem)" }
}
