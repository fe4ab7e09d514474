import CHalf

/// Float → IEEE half for a whole buffer, with F16C when the CPU has it (8 values per instruction;
/// Swift's `Float16(_:)` is a software routine on baseline x86-64).
public func convertToHalf(_ source: UnsafePointer<Float>, _ target: UnsafeMutablePointer<Float16>, count: Int) {
    target.withMemoryRebound(to: UInt16.self, capacity: count) { catdog_float_to_half(source, $0, count) }
}

/// IEEE half → Float for a whole buffer (F16C when available).
public func convertFromHalf(_ source: UnsafePointer<Float16>, _ target: UnsafeMutablePointer<Float>, count: Int) {
    source.withMemoryRebound(to: UInt16.self, capacity: count) { catdog_half_to_float($0, target, count) }
}

/// Whether the conversions above use F16C instructions on this CPU.
public var halfConversionUsesF16C: Bool { catdog_half_uses_f16c() != 0 }
