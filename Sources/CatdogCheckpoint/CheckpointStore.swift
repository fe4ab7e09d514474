import CatdogSupport
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
            throw CheckpointError(path: final, problem: "writing failed (\(describe(error))); the previous checkpoints are untouched")
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

    /// One run per folder at a time: an exclusive `flock` on `.lock`, held open for the run's
    /// life. The kernel releases it when its holder ends, however it ends (a crash, SIGKILL, a
    /// rank still being torn down after its `mpirun` returned is released the moment its files
    /// close), so a lock can never be left held by a process that is gone; on NFS, Linux
    /// maps it onto the lock manager's locks. The file also names its holder (host, pid, and
    /// the batch job when a scheduler started it), for the message a second run gets.
    ///
    /// A held lock of the same batch job (an earlier start of it that Slurm requeued, whose node
    /// may be gone with its lock not yet released by the server) is taken over: the file is
    /// replaced, and the earlier start keeps only a lock on a file no longer in the folder.
    public final class Lock {
        public let path: String
        /// Whether the lock was taken over from an earlier start of the same batch job.
        public private(set) var tookOverFromJob = false
        private let fd: Int32
        private init(path: String, fd: Int32) {
            self.path = path
            self.fd = fd
        }

        deinit {
            // Remove the file only while it is still ours (not replaced by a take-over).
            if Self.names(fd, path) { unlink(path) }
            close(fd)
        }

        /// Whether `path` names the file open as `fd`.
        private static func names(_ fd: Int32, _ path: String) -> Bool {
            var opened = stat(), named = stat()
            return fstat(fd, &opened) == 0 && lstat(path, &named) == 0
                && opened.st_dev == named.st_dev && opened.st_ino == named.st_ino
        }

        /// `job`: the scheduler's job id (e.g. Slurm's SLURM_JOB_ID), if any. `wait`: seconds
        /// to wait for a holder to let go before giving up (a run restarted right after its
        /// predecessor was killed may find it still being torn down); `waiting` is told once
        /// when the wait begins.
        public static func acquire(in directory: String, host: String, job: String? = nil, wait: Double = 0,
                                   waiting: (String) -> Void = { _ in }) throws -> Lock {
            let path = (directory as NSString).appendingPathComponent(".lock")
            let job = job.flatMap { id in id.count <= 32 && id.allSatisfy { $0.isASCII && ($0.isNumber || $0 == "_") } ? id : nil }
            let me = "\(host) \(getpid())" + (job.map { " job=\($0)" } ?? "") + "\n"
            let deadline = Date().addingTimeInterval(wait)
            var tookOver = false, toldWaiting = false
            for _ in 0..<10_000 {
                // Never through a link (a planted one would lock, truncate and name another file).
                let fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0o644)
                guard fd >= 0 else {
                    let reason = errno == ELOOP ? "it is a symbolic link: remove it" : String(cString: strerror(errno))
                    throw CheckpointError(path: path, problem: "cannot open the folder's lock file (\(reason)); is \(directory) writable?")
                }
                var info = stat()
                guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
                    close(fd)
                    throw CheckpointError(path: path, problem: "the folder's lock file is not a regular file: remove it")
                }
                if flock(fd, LOCK_EX | LOCK_NB) == 0 {
                    // A holder that was letting go may have removed the file after we opened it:
                    // then this lock is on a file no longer in the folder; start again.
                    guard names(fd, path) else { close(fd); continue }
                    _ = ftruncate(fd, 0)
                    _ = me.withCString { pwrite(fd, $0, strlen($0), 0) }
                    let lock = Lock(path: path, fd: fd)
                    lock.tookOverFromJob = tookOver
                    return lock
                }
                let failure = errno
                guard failure == EWOULDBLOCK || failure == EAGAIN else {
                    close(fd)
                    throw CheckpointError(path: path, problem: "cannot lock it (\(String(cString: strerror(failure)))): the folder's file system must support file locks (NFS needs its lock manager)")
                }
                // Held. Read at most 256 bytes of who holds it: the folder may be shared, the file anything.
                var buffer = [UInt8](repeating: 0, count: 256)
                let count = max(0, pread(fd, &buffer, buffer.count, 0))
                close(fd)
                let owner = String(decoding: buffer.prefix(count), as: UTF8.self).split(whereSeparator: \.isWhitespace)
                if let job, owner.count > 2, owner[2] == "job=\(job)" {
                    unlink(path)  // an earlier start of this same batch job
                    tookOver = true
                    continue
                }
                let holder = "host \(printable(owner.first.map { String($0.prefix(64)) } ?? "?")), pid \(printable(owner.count > 1 ? String(owner[1].prefix(16)) : "?"))"
                if Date() < deadline {
                    if !toldWaiting { waiting("waiting up to \(Int(wait)) s for the run holding \(path) (\(holder)) to let go") }
                    toldWaiting = true
                    usleep(100_000)
                    continue
                }
                throw CheckpointError(path: directory, problem: """
                    another run is using this folder (\(path): \(holder)); \
                    wait for it to end, or use another --checkpoint-dir
                    """)
            }
            throw CheckpointError(path: directory, problem: "cannot take its lock")
        }
    }

    private func prune() throws {
        for old in numbered().dropFirst(keep) { try? FileManager.default.removeItem(atPath: old) }
    }
}

