import CatdogCheckpoint
import CatdogRun

/// The checkpoint reader: the input as a whole .safetensors.zst file (zstd frame, header,
/// metadata), and the input compressed by us, so the fuzzer reaches the safetensors header and
/// the metadata checks without first having to forge zstd checksums. A checkpoint that passes
/// also builds its model and loads its tensors.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCheckpoint(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
    var candidates = [bytes]
    if let compressed = try? bytes.withUnsafeBytes({ try Zstd.compress($0, level: 1) }) { candidates.append(compressed) }
    for input in candidates {
        guard let checkpoint = try? LoadedCheckpoint(compressed: input, path: "fuzz") else { continue }
        _ = try? checkpoint.makeNetwork()
    }
    _ = try? SafeTensors.decode(bytes)
    return 0
}
