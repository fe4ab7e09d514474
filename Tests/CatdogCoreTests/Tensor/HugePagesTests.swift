import CatdogSupport
import Foundation
import XCTest

/// Large buffers in transparent huge pages (`HugePages`): the kernel's setting read, the
/// buffers aligned to and advised for huge pages, small ones left to the ordinary allocator.
final class HugePagesTests: XCTestCase {
    func testTheModeIsTheKernelsBracketedWord() {
        XCTAssertEqual(HugePages.mode(setting: "always [madvise] never\n"), "madvise")
        XCTAssertEqual(HugePages.mode(setting: "[always] madvise never\n"), "always")
        XCTAssertEqual(HugePages.mode(setting: "always madvise [never]\n"), "never")
        XCTAssertEqual(HugePages.mode(setting: nil), "unknown")
        XCTAssertEqual(HugePages.mode(setting: "always madvise never"), "unknown")
        XCTAssertEqual(HugePages.mode(setting: "[sometimes]"), "unknown")
        XCTAssertEqual(HugePages.mode(setting: "]always["), "unknown")
    }

    /// The flags of the mapping that holds `address`, from /proc/self/smaps ("hg": advised
    /// for huge pages), or nil when no mapping holds it.
    func mappingFlags(of address: UnsafeRawPointer) throws -> [String]? {
        // Read to its end: procfs reports no size, and a whole-file read stops after one page.
        let handle = try XCTUnwrap(FileHandle(forReadingAtPath: "/proc/self/smaps"))
        defer { try? handle.close() }
        let text = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        let at = UInt(bitPattern: address)
        var inside = false
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let bounds = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = bounds.count == 2 && bounds[0] <= at && at < bounds[1]
            } else if inside, fields.first == "VmFlags:" {
                return fields.dropFirst().map(String.init)
            }
        }
        return nil
    }

    func testLargeBuffersAreAlignedAndAdvisedSmallOnesAreNot() throws {
        let large = FloatBuffer(count: (3 << 20) / 4 + 5)  // 3 MiB and a few floats: two huge pages
        let small = FloatBuffer(count: 1000)
        XCTAssertTrue(large.buffer.allSatisfy { $0 == 0 } && small.buffer.allSatisfy { $0 == 0 }, "buffers start at zero")
        large[large.count - 1] = 7
        XCTAssertEqual(large[large.count - 1], 7)
        guard HugePages.enabled else {
            throw XCTSkip("this kernel gives no transparent huge pages (\(HugePages.mode)): nothing to check")
        }
        XCTAssertEqual(Int(bitPattern: large.pointer) % HugePages.pageBytes, 0, "a large buffer starts on a huge page")
        let flags = try XCTUnwrap(try mappingFlags(of: large.pointer), "no mapping in /proc/self/smaps holds the buffer")
        XCTAssertTrue(flags.contains("hg"), "a large buffer's mapping is not advised for huge pages: VmFlags \(flags)")
        XCTAssertNil(HugePages.allocate(bytes: HugePages.pageBytes - 1), "under one huge page: the ordinary allocator")
        XCTAssertNil(HugePages.allocate(bytes: Int.max - 10), "a size that overflows when rounded up")
    }
}
