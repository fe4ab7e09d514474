import CatdogCheckpoint

/// The PyTorch reader (legacy pickles and the zip format): any input ends in tensors or an
/// error, never a crash, a hang or a large allocation.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPyTorch(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    _ = try? PyTorchReader.read(bytes: [UInt8](UnsafeRawBufferPointer(start: start, count: count)))
    return 0
}
