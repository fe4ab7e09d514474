import Foundation

/// A float32 buffer allocated once and freed with its owner.
///
/// Hot loops take `pointer`; tests and metadata use the safe accessors.
public final class FloatBuffer {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    /// Whether the buffer came from `HugePages` (freed with `free`, not `deallocate`).
    private let inHugePages: Bool

    /// `count` zeros; 2 MiB or more of them in huge pages (`HugePages`).
    public init(count: Int) {
        self.count = count
        let bytes = count.multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
        if !bytes.overflow, let raw = HugePages.allocate(bytes: bytes.partialValue) {
            pointer = raw.bindMemory(to: Float.self, capacity: count)
            inHugePages = true
        } else {
            pointer = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            inHugePages = false
        }
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit {
        if inHugePages { free(pointer) } else { pointer.deallocate() }
    }

    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: pointer, count: count) }
    public var array: [Float] { Array(buffer) }

    @inlinable
    public subscript(index: Int) -> Float {
        get { precondition(index >= 0 && index < count); return pointer[index] }
        set { precondition(index >= 0 && index < count); pointer[index] = newValue }
    }

    public func zero() { pointer.update(repeating: 0, count: count) }
    public func copy(from other: FloatBuffer) {
        precondition(other.count == count)
        pointer.update(from: other.pointer, count: count)
    }
}
