import Foundation

/// Formats seconds as h:mm:ss or m:ss.
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
}

/// Appends `line` and a newline to the regular file at `path`, creating it if needed. Never
/// through a symbolic link (a run folder may be shared: a planted link must not make training
/// append to the file it points to), and never to a device or a FIFO.
public func appendLine(_ line: String, to path: String) throws {
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
        let reason = errno == ELOOP ? "it is a symbolic link; remove it" : String(cString: strerror(errno))
        throw OutputError(path: path, problem: reason)
    }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
        throw OutputError(path: path, problem: "it is not a regular file; remove it")
    }
    let bytes = Array((line + "\n").utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0, errno == EINTR { continue }
        guard n > 0 else { throw OutputError(path: path, problem: String(cString: strerror(errno))) }
        done += n
    }
}

/// Why `readBoundedFile` refused a path.
public enum BoundedReadError: Error, CustomStringConvertible {
    case missing, notValidUTF8Name, notRegular, tooLarge(size: Int, limit: Int)

    public var description: String {
        switch self {
        case .missing: "cannot read the file (missing or no permission)"
        case .notValidUTF8Name: "its name is not valid UTF-8: rename the file"
        case .notRegular: "not a regular file"
        case .tooLarge(let size, let limit): "\(size) bytes (limit \(limit))"
        }
    }
}

/// Reads a file someone else may have put there, of at most `limit` bytes: the size is that of
/// what the path leads to (links are followed, not measured), only regular files are read (a
/// FIFO or a device would block or never end), and no more than `limit` bytes are ever read.
/// The checks are made on the opened file, not on the path, so a swap between check and read
/// cannot slip anything past them; opening does not block (a FIFO is refused, not waited on).
public func readBoundedFile(_ path: String, limit: Int) throws -> Data {
    let (fd, size) = try openBoundedFile(path, limit: limit)
    defer { close(fd) }
    // One byte more than the size, to see the end (or a file that grew since).
    var data = Data(count: size + 1)
    var filled = 0
    while true {
        if filled == data.count {
            guard data.count <= limit else { throw BoundedReadError.tooLarge(size: filled, limit: limit) }
            data.count = min(2 * data.count, limit + 1)
        }
        let n = data.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
        if n == 0 { break }
        if n < 0 {
            if errno == EINTR { continue }
            throw BoundedReadError.missing
        }
        filled += n
    }
    data.count = filled
    return data
}

/// Opens `path` without blocking and checks the opened file (so a swap between check and read
/// cannot slip past): a regular file of at most `limit` bytes. Returns the descriptor, which
/// the caller closes, and the size.
func openBoundedFile(_ path: String, limit: Int) throws -> (fd: Int32, size: Int) {
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else {
        // Foundation lists a name that is not UTF-8 with U+FFFD in it, which then names no file.
        throw path.contains("\u{FFFD}") ? BoundedReadError.notValidUTF8Name : BoundedReadError.missing
    }
    var info = stat()
    guard fstat(fd, &info) == 0 else { close(fd); throw BoundedReadError.missing }
    guard info.st_mode & S_IFMT == S_IFREG else { close(fd); throw BoundedReadError.notRegular }
    guard Int(info.st_size) <= limit else { close(fd); throw BoundedReadError.tooLarge(size: Int(info.st_size), limit: limit) }
    return (fd, Int(info.st_size))
}

/// `text` safe to print on a terminal: control characters (C0, DEL, C1, which can move the
/// cursor, clear the screen or set the window title when they come from a file) and the
/// bidirectional overrides (which reorder what is shown) are written as `\u00XX` escapes, the
/// same in JSON, so printed JSON stays valid. `keepingLines` keeps newlines and tabs.
public func printable(_ text: some StringProtocol, keepingLines: Bool = false) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for scalar in text.unicodeScalars {
        let v = scalar.value
        let kept = keepingLines && (v == 0x0A || v == 0x09)
        let control = v < 0x20 || (0x7F...0x9F).contains(v)
        let bidi = (0x202A...0x202E).contains(v) || (0x2066...0x2069).contains(v) || v == 0x200E || v == 0x200F
        if (control || bidi) && !kept {
            out += String(format: "\\u%04x", v)
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}

/// A file someone else may have put there, read in pieces: opened without blocking, only a
/// regular file of at most `limit` bytes (checked on the opened file), so that a caller can look
/// at its first bytes (a magic number, a declared size) before it reads, and allocates for,
/// the rest.
public final class BoundedFileReader {
    /// The file's size when opened.
    public let size: Int
    public private(set) var offset = 0
    private let fd: Int32

    public init(_ path: String, limit: Int) throws {
        (fd, size) = try openBoundedFile(path, limit: limit)
    }

    deinit { close(fd) }

    /// Appends the next `count` bytes (fewer only where the file ends) to `bytes`.
    public func read(_ count: Int, appendingTo bytes: inout [UInt8]) throws {
        let want = min(max(count, 0), size - offset)
        let start = bytes.count
        bytes.reserveCapacity(start + want)
        bytes.append(contentsOf: repeatElement(0, count: want))
        var filled = 0
        while filled < want {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + start + filled, want - filled) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw BoundedReadError.missing
            }
            filled += n
        }
        bytes.removeLast(want - filled)
        offset += filled
    }

    /// The next `count` bytes (fewer only where the file ends).
    public func read(_ count: Int) throws -> [UInt8] {
        var bytes: [UInt8] = []
        try read(count, appendingTo: &bytes)
        return bytes
    }
}
