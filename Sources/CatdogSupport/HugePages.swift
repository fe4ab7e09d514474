#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Large buffers in the kernel's transparent huge pages (2 MiB instead of 4 KiB), asked for
/// with `madvise(MADV_HUGEPAGE)`: Debian's default (`/sys/kernel/mm/transparent_hugepage/enabled`
/// at `madvise`) gives them only to memory that asks. A step reads and writes its activations,
/// Winograd's 36 matrices and the packed operands through hundreds of 4 KiB pages at once; in
/// those pages a step took 8–15% longer on a Zen 5 (docs/performance.md). Buffers of
/// 2 MiB or more start on a huge page and are rounded up to whole ones (at most 2 MiB more
/// memory each, once touched); smaller ones, and every buffer when the kernel gives no huge
/// pages or the program turned them off (`turnOff(because:)`), come from the ordinary allocator.
public enum HugePages {
    /// The size of one huge page on x86-64 and the least buffer placed in them.
    public static let pageBytes = 1 << 21

    /// Why large buffers are, or are not, in huge pages: "madvise" or "always" (the kernel's
    /// mode; buffers are advised), "never", "unknown" (no such setting: not Linux, or a kernel
    /// without transparent huge pages), or "off (REASON)" after `turnOff(because:)`.
    public static var mode: String { offBecause.map { "off (\($0))" } ?? kernelMode }

    /// Keeps every buffer allocated from now on in ordinary pages; `reason` is what `mode` then
    /// says (the command line turns them off for `CATDOG_HUGE_PAGES=0`). Call it before any
    /// buffer is made, on the main thread.
    public static func turnOff(because reason: String) { offBecause = reason }
    nonisolated(unsafe) private static var offBecause: String?

    /// The kernel's setting, read once.
    static let kernelMode: String = {
        let setting = FileHandle(forReadingAtPath: "/sys/kernel/mm/transparent_hugepage/enabled").map { handle in
            defer { try? handle.close() }
            return String(decoding: (try? handle.read(upToCount: 256)) ?? Data(), as: UTF8.self)
        }
        return mode(setting: setting)
    }()

    /// The mode for the kernel's `setting`: its file's text, "always [madvise] never", the
    /// bracketed word in force; nil when there is no such file.
    public static func mode(setting: String?) -> String {
        guard let text = setting, let open = text.firstIndex(of: "["),
              let close = text[open...].firstIndex(of: "]") else { return "unknown" }
        let word = String(text[text.index(after: open)..<close])
        return ["always", "madvise", "never"].contains(word) ? word : "unknown"
    }

    /// Whether large buffers are placed in huge pages.
    public static var enabled: Bool { mode == "madvise" || mode == "always" }

    /// Memory for `bytes` bytes starting on a huge page, rounded up to whole huge pages and
    /// advised to be backed by them; release it with `free`. Nil when `bytes` is under one huge
    /// page, huge pages are not enabled, or the allocation fails: the caller then allocates as
    /// usual.
    public static func allocate(bytes: Int) -> UnsafeMutableRawPointer? {
        guard enabled, bytes >= pageBytes else { return nil }
        let rounded = bytes.addingReportingOverflow(pageBytes - 1)
        guard !rounded.overflow else { return nil }
        let size = rounded.partialValue & ~(pageBytes - 1)
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, pageBytes, size) == 0, let raw else { return nil }
        // Advice only: a kernel that declines it leaves ordinary pages, which work the same.
        _ = madvise(raw, size, MADV_HUGEPAGE)
        return raw
    }
}
