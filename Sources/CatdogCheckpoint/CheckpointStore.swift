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
        try bytes.withUnsafeBytes { try write(parts: [$0], epoch: epoch, step: step, best: best) }
    }

    /// The same for a file given as consecutive parts (`SafeTensors.encodeParts`), compressed
    /// on the way to the disk: no copy of the whole file is made in memory.
    @discardableResult
    public func write(parts: [UnsafeRawBufferPointer], epoch: Int, step: Int, best: Bool) throws -> String {
        let name = String(format: "ckpt-e%04d-s%08d", epoch, step) + CheckpointStore.suffix
        let final = path(name)
        try writeAtomically(parts, to: final)
        try link(final, as: lastPath)
        if best { try link(final, as: bestPath) }
        try syncDirectory()
        try prune()
        return final
    }

    private func writeAtomically(_ parts: [UnsafeRawBufferPointer], to final: String) throws {
        let temporary = path(".tmp-\(getpid())-\(UUID().uuidString.prefix(8))")
        guard FileManager.default.createFile(atPath: temporary, contents: nil) else {
            throw CheckpointError(path: temporary, problem: "cannot create it (is \(directory) writable?)")
        }
        do {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            defer { try? handle.close() }
            try Zstd.compress(parts, to: handle.fileDescriptor)
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

    /// Numbered checkpoints (exactly `ckpt-eEEEE-sSSSSSSSS.safetensors.zst`; other files that
    /// merely start with `ckpt-` are not ours and are never pruned), newest (highest step) first.
    public func numbered() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.wholeMatch(of: /ckpt-e\d{4}-s\d{8}\.safetensors\.zst/) != nil }.sorted(by: >).map(path)
    }

    /// Whether the folder already holds a run: checkpoints or metrics.
    public var holdsARun: Bool {
        !numbered().isEmpty || FileManager.default.fileExists(atPath: lastPath)
            || FileManager.default.fileExists(atPath: path("metrics.jsonl"))
    }

    /// Removes `.tmp-*` files that a killed writer left behind. Call while holding the lock.
    public func removeStaleTemporaries() -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var removed = 0
        for name in names where name.hasPrefix(".tmp-") {
            if (try? FileManager.default.removeItem(atPath: path(name))) != nil { removed += 1 }
        }
        return removed
    }

    /// One run per folder at a time: `.lock` holds the owner's host and pid, and its batch
    /// job when a scheduler started it. A lock whose owner is gone (same host, no such process)
    /// is stale and taken over; so is one of the same batch job: an earlier start of this job
    /// (requeued by Slurm after preemption or a failed node, maybe on another node), which the
    /// scheduler ended before starting it again.
    public final class Lock {
        public let path: String
        /// Whether the lock was taken over from an earlier start of the same batch job.
        public private(set) var tookOverFromJob = false
        private init(path: String) { self.path = path }
        deinit { unlink(path) }

        /// `job`: the scheduler's job id (e.g. Slurm's SLURM_JOB_ID), if any.
        public static func acquire(in directory: String, host: String, job: String? = nil) throws -> Lock {
            let path = (directory as NSString).appendingPathComponent(".lock")
            let job = job.flatMap { id in id.count <= 32 && id.allSatisfy { $0.isASCII && ($0.isNumber || $0 == "_") } ? id : nil }
            let me = "\(host) \(getpid())" + (job.map { " job=\($0)" } ?? "") + "\n"
            var tookOver = false
            for _ in 0..<2 {
                let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
                if fd >= 0 {
                    _ = me.withCString { Glibc.write(fd, $0, strlen($0)) }
                    close(fd)
                    let lock = Lock(path: path)
                    lock.tookOverFromJob = tookOver
                    return lock
                }
                guard errno == EEXIST else {
                    throw CheckpointError(path: directory, problem: "cannot create a lock file in it (errno \(errno)); is the folder writable?")
                }
                // Read at most 256 bytes: the folder may be shared, the file anything.
                let text = FileHandle(forReadingAtPath: path).map { handle in
                    defer { try? handle.close() }
                    return String(decoding: (try? handle.read(upToCount: 256)) ?? Data(), as: UTF8.self)
                } ?? ""
                let owner = text.split(separator: " ")
                let ownerHost = owner.first.map(String.init) ?? "", ownerPid = owner.count > 1 ? Int32(owner[1].trimmingCharacters(in: .whitespacesAndNewlines)) : nil
                if ownerHost == host, let pid = ownerPid, kill(pid, 0) != 0, errno == ESRCH {
                    unlink(path)  // stale: its process is gone
                    continue
                }
                if let job, owner.count > 2, owner[2].trimmingCharacters(in: .whitespacesAndNewlines) == "job=\(job)" {
                    unlink(path)  // an earlier start of this same batch job
                    tookOver = true
                    continue
                }
                throw CheckpointError(path: directory, problem: """
                    another run is using this folder (\(path): host \(ownerHost.isEmpty ? "?" : ownerHost), pid \(ownerPid.map(String.init) ?? "?")); \
                    wait for it, use another --checkpoint-dir, or remove the lock if that run is gone
                    """)
            }
            throw CheckpointError(path: directory, problem: "cannot take its lock")
        }
    }

    private func prune() throws {
        for old in numbered().dropFirst(keep) { try? FileManager.default.removeItem(atPath: old) }
    }
}

