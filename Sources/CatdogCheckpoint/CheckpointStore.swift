import Foundation

/// The checkpoint folder: numbered checkpoints (the newest `keep` are kept), plus
/// `last.safetensors.zst` and `best.safetensors.zst` as hard links to numbered ones.
/// Every file appears atomically: written to a temporary name in the same folder, fsynced,
/// renamed, and the folder fsynced, so a crash or a full disk never damages an existing one.
public struct CheckpointStore {
    public let directory: String
    public let keep: Int
    public static let suffix = ".safetensors.zst"

    public init(directory: String, keep: Int = 3) {
        self.directory = directory
        self.keep = max(keep, 1)
    }

    public var lastPath: String { path("last" + CheckpointStore.suffix) }
    public var bestPath: String { path("best" + CheckpointStore.suffix) }
    func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }

    /// Writes `bytes` (an uncompressed safetensors file) as a numbered checkpoint, points
    /// `last` (and `best` if asked) at it, and prunes old ones. Returns the path.
    @discardableResult
    public func write(_ bytes: [UInt8], epoch: Int, step: Int, best: Bool) throws -> String {
        let compressed = try bytes.withUnsafeBytes { try Zstd.compress($0) }
        let name = String(format: "ckpt-e%04d-s%08d", epoch, step) + CheckpointStore.suffix
        let final = path(name)
        try writeAtomically(compressed, to: final)
        try link(final, as: lastPath)
        if best { try link(final, as: bestPath) }
        try syncDirectory()
        try prune()
        return final
    }

    private func writeAtomically(_ bytes: [UInt8], to final: String) throws {
        let temporary = path(".tmp-\(getpid())-\(UUID().uuidString.prefix(8))")
        guard FileManager.default.createFile(atPath: temporary, contents: nil) else {
            throw CheckpointError(path: temporary, problem: "cannot create it (is \(directory) writable?)")
        }
        do {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            defer { try? handle.close() }
            try handle.write(contentsOf: bytes)
            try handle.synchronize()
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw CheckpointError(path: final, problem: "writing failed (\(error.localizedDescription)); the previous checkpoints are untouched")
        }
        guard rename(temporary, final) == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw CheckpointError(path: final, problem: "rename failed: \(String(cString: strerror(errno)))")
        }
    }

    /// Atomically makes `alias` another name of `target`.
    private func link(_ target: String, as alias: String) throws {
        let temporary = path(".tmp-link-\(getpid())-\(UUID().uuidString.prefix(8))")
        guard Foundation.link(target, temporary) == 0, rename(temporary, alias) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: temporary)
            throw CheckpointError(path: alias, problem: "cannot link it to \(target): \(reason)")
        }
    }

    private func syncDirectory() throws {
        let fd = open(directory, O_RDONLY)
        guard fd >= 0 else { return }
        defer { close(fd) }
        fsync(fd)
    }

    /// Numbered checkpoints, newest (highest step) first.
    public func numbered() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix("ckpt-") && $0.hasSuffix(CheckpointStore.suffix) }.sorted(by: >).map(path)
    }

    private func prune() throws {
        for old in numbered().dropFirst(keep) { try? FileManager.default.removeItem(atPath: old) }
    }
}

