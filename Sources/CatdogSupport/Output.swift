import Foundation

/// What went wrong, in words a user can act on: a library error's own description, or for
/// Foundation's errors the system's reason ("No space left on device") rather than "The
/// operation could not be completed".
public func describe(_ error: Error) -> String {
    if let decoding = error as? DecodingError { return describe(decoding) }
    let ns = error as NSError
    if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
        return String(cString: strerror(Int32(underlying.code)))
    }
    if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
    // A Swift error (not Foundation's): its own description.
    if !(type(of: error) is NSError.Type) { return String(describing: error) }
    return ns.localizedDescription
}

/// A JSON record that did not decode, said by the field it concerns, e.g. "config.epochs is
/// missing", "config.imageSize is not a whole number" (Swift's own text is a paragraph of
/// coding keys and debug descriptions).
public func describe(_ error: DecodingError) -> String {
    func field(_ path: [CodingKey], _ key: CodingKey? = nil) -> String {
        let keys = path + (key.map { [$0] } ?? [])
        guard !keys.isEmpty else { return "the record" }
        var name = ""
        for key in keys {
            if let index = key.intValue { name += "[\(index)]" } else { name += (name.isEmpty ? "" : ".") + printable(key.stringValue) }
        }
        return name
    }
    func kind(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt64.Type, is UInt32.Type, is UInt.Type: return "a whole number (in range)"
        case is Double.Type, is Float.Type: return "a number"
        case is String.Type: return "text"
        case is Bool.Type: return "true or false"
        default:
            let name = String(describing: type)
            return name.hasPrefix("Array") ? "a list" : name.hasPrefix("Dictionary") ? "an object" : "of type \(name)"
        }
    }
    switch error {
    case .keyNotFound(let key, let context): return "\(field(context.codingPath, key)) is missing"
    case .valueNotFound(let type, let context): return "\(field(context.codingPath)) is null, not \(kind(type))"
    case .typeMismatch(let type, let context): return "\(field(context.codingPath)) is not \(kind(type))"
    case .dataCorrupted(let context):
        if context.codingPath.isEmpty { return "not valid JSON, or a number that does not fit its field" }
        return "\(field(context.codingPath)): \(printable(context.debugDescription))"
    @unknown default: return printable(String(describing: error))
    }
}

/// Why an output file was not written.
public struct OutputError: Error, CustomStringConvertible {
    public var path: String
    public var problem: String
    public var description: String { "cannot write \(path): \(problem)" }
    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }
}

/// Refuses an output name whose extension says another format than the one written: `plot
/// --out curves.png` held SVG, and `import --out lite0.safetensors` a zstd frame, which no
/// viewer or safetensors reader opens. `suffixes` are the endings that say the format (".svg",
/// ".safetensors.zst"), compared without case; a name without any extension passes. `hint`
/// ends the message (how to get the other format, or an example name).
public func checkOutputFormat(_ path: String, writes format: String, suffixes: [String], hint: String) throws {
    let name = (path as NSString).lastPathComponent.lowercased()
    let ext = (name as NSString).pathExtension
    guard !ext.isEmpty, !suffixes.contains(where: { name.hasSuffix($0.lowercased()) }) else { return }
    throw OutputError(path: printable(path), problem: "the name says .\(printable(ext)), but this writes \(format); end the name in \(suffixes[0]) (\(hint))")
}

/// Refuses, before anything is written or computed, an output path that is a device, a FIFO,
/// a folder or a symbolic link (as root, `--out /dev/null` would otherwise be replaced by a
/// regular file); a file with other names (a run folder's `last`/`best` checkpoints are hard
/// links); a file that is one of `inputs`; an existing file of a run folder (one holding
/// metrics.jsonl, `.lock` or numbered checkpoints), unless `runOutput` (train's own outputs,
/// such as its timeline, which a resume writes again) and the file is not one the run folder
/// itself keeps (`isRunFolderFile`); a folder that does not exist or in which no file can be
/// made (the write goes through a new file there). A new file in a writable folder, or an
/// ordinary one to replace, passes.
public func checkOutputPath(_ path: String, inputs: [String] = [], runOutput: Bool = false) throws {
    func refuse(_ problem: String) -> OutputError { OutputError(path: path, problem: problem) }
    let folder = (path as NSString).deletingLastPathComponent
    let directory = folder.isEmpty ? "." : folder
    var info = stat()
    guard stat(directory, &info) == 0 else {
        throw refuse("its folder \(directory) does not exist (\(String(cString: strerror(errno)))); create it or name a file in another folder")
    }
    guard info.st_mode & S_IFMT == S_IFDIR else { throw refuse("\(directory) is not a folder") }
    guard access(directory, W_OK | X_OK) == 0 else {
        throw refuse("no file can be made in its folder \(directory) (\(String(cString: strerror(errno)))); name a file in another folder")
    }
    var existing = stat()
    guard lstat(path, &existing) == 0 else { return }
    switch existing.st_mode & S_IFMT {
    case S_IFREG: break
    case S_IFLNK: throw refuse("it is a symbolic link; name a new file")
    case S_IFDIR: throw refuse("it is a folder; name a file in it")
    default: throw refuse("it is not a regular file (a device or a FIFO); name a new file")
    }
    if existing.st_nlink > 1 { throw refuse("the file has other names (hard links, as a run folder's checkpoints do); name a new file") }
    for input in inputs {
        if FileIdentity(input) == FileIdentity(existing) {
            throw refuse("it is the input \(input); name another file")
        }
    }
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    if names.contains(where: { $0 == "metrics.jsonl" || $0 == ".lock" || $0.hasPrefix("ckpt-e") }),
       !runOutput || isRunFolderFile((path as NSString).lastPathComponent) {
        throw refuse("it is an existing file of a training run's folder; name a new file")
    }
}

/// A name a training run's folder keeps for itself: its checkpoints, metrics, machines, lock,
/// TensorBoard events, list of skipped files and temporary files.
public func isRunFolderFile(_ name: String) -> Bool {
    ["metrics.jsonl", "machines.jsonl", "skipped-files.log"].contains(name)
        || ["ckpt-", "last.", "best.", "events.out.tfevents.", "."].contains { name.hasPrefix($0) }
}

/// Writes `bytes` as the regular file `path` (checked by `checkOutputPath`), through a
/// temporary file in the same folder that is synced and renamed over it: a reader never sees
/// half a file, and a failure (a full disk) leaves the old one and says why.
public func writeOutputFile(_ bytes: some Collection<UInt8>, to path: String, inputs: [String] = [], runOutput: Bool = false) throws {
    try checkOutputPath(path, inputs: inputs, runOutput: runOutput)
    let folder = (path as NSString).deletingLastPathComponent
    let temporary = (folder.isEmpty ? "." : folder) + "/.\((path as NSString).lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw OutputError(path: path, problem: String(cString: strerror(errno))) }
    var failure: Int32 = 0
    Array(bytes).withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
            let n = write(fd, raw.baseAddress! + done, raw.count - done)
            if n < 0, errno == EINTR { continue }
            if n <= 0 { failure = n < 0 ? errno : EIO; return }
            done += n
        }
    }
    if failure == 0, fsync(fd) != 0 { failure = errno }
    if close(fd) != 0, failure == 0 { failure = errno }
    if failure == 0, rename(temporary, path) != 0 { failure = errno }
    if failure != 0 {
        unlink(temporary)
        throw OutputError(path: path, problem: String(cString: strerror(failure)))
    }
}

/// A file's device and inode: the same file whatever path or link leads to it.
public struct FileIdentity: Equatable, Sendable {
    public let device: UInt64, inode: UInt64

    public init(_ info: stat) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }

    /// What `path` leads to (links followed), nil when nothing does.
    public init?(_ path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        self.init(info)
    }
}
