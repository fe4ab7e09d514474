import CatdogCheckpoint
import CatdogRun
import Foundation
import XCTest

/// The Swift pickle reader that replaced Python in `import`: both PyTorch formats, views with
/// offsets and strides, and refusal of everything a state dict does not need.
final class PyTorchReaderTests: XCTestCase {
    // MARK: - Hand-made legacy files

    static func string(_ s: String) -> [UInt8] {
        let utf8 = Array(s.utf8)
        return [0x58] + withUnsafeBytes(of: UInt32(utf8.count).littleEndian, Array.init) + utf8
    }

    static func global(_ module: String, _ name: String) -> [UInt8] { [0x63] + Array("\(module)\n\(name)\n".utf8) }

    static func small(_ i: Int) -> [UInt8] { [0x4B, UInt8(i)] }

    /// A legacy .pth holding one float tensor "w" viewing storage "0" (of `values`) with
    /// `offset`, `size` and `stride`; `claimed` is the element count written before the data.
    static func legacyFile(values: [Float], offset: Int, size: [Int], stride: [Int], claimed: Int? = nil) -> [UInt8] {
        var out: [UInt8] = [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E]
        out += [0x80, 0x02, 0x4D, 0xE9, 0x03, 0x2E]  // protocol 1001
        out += [0x80, 0x02, 0x7D, 0x2E]  // system info: {}
        out += [0x80, 0x02] + global("collections", "OrderedDict") + [0x29, 0x52]  // OrderedDict()
        out += string("w") + global("torch._utils", "_rebuild_tensor_v2") + [0x28]
        out += [0x28] + string("storage") + global("torch", "FloatStorage") + string("0") + string("cpu") + small(values.count) + [0x74, 0x51]
        out += small(offset) + [0x28] + size.flatMap(small) + [0x74] + [0x28] + stride.flatMap(small) + [0x74]
        out += [0x89] + global("collections", "OrderedDict") + [0x29, 0x52] + [0x74, 0x52, 0x73, 0x2E]
        out += [0x80, 0x02, 0x5D] + string("0") + [0x61, 0x2E]  // storage keys: ["0"]
        out += withUnsafeBytes(of: Int64(claimed ?? values.count).littleEndian, Array.init)
        for v in values { out += withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init) }
        return out
    }

    /// An 8-byte LONG1 integer (for counts beyond BININT's 32 bits).
    static func long(_ value: Int64) -> [UInt8] { [0x8A, 0x08] + withUnsafeBytes(of: value.littleEndian, Array.init) }

    /// A legacy .pth whose state dict has `names` tensors, each viewing all of one storage of
    /// `count` floats (declared as `declared`).
    static func viewsFile(names: Int, count: Int, declared: [UInt8]? = nil) -> [UInt8] {
        viewsFile(named: (0..<names).map { "w\($0)" }, count: count, declared: declared)
    }

    /// The same with the tensors named `names`.
    static func viewsFile(named names: [String], count: Int, declared: [UInt8]? = nil) -> [UInt8] {
        var out: [UInt8] = [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E]
        out += [0x80, 0x02, 0x4D, 0xE9, 0x03, 0x2E]
        out += [0x80, 0x02, 0x7D, 0x2E]
        out += [0x80, 0x02] + global("collections", "OrderedDict") + [0x29, 0x52, 0x28]
        for name in names {
            out += string(name) + global("torch._utils", "_rebuild_tensor_v2") + [0x28]
            out += [0x28] + string("storage") + global("torch", "FloatStorage") + string("0") + string("cpu")
                + (declared ?? long(Int64(count))) + [0x74, 0x51]
            out += small(0) + [0x28] + long(Int64(count)) + [0x74, 0x28] + small(1) + [0x74]
            out += [0x89] + global("collections", "OrderedDict") + [0x29, 0x52] + [0x74, 0x52]
        }
        out += [0x75, 0x2E]  // SETITEMS, STOP
        out += [0x80, 0x02, 0x5D] + string("0") + [0x61, 0x2E]
        out += withUnsafeBytes(of: Int64(count).littleEndian, Array.init)
        out += [UInt8](repeating: 0, count: count * 4)
        return out
    }

    /// Containers nested 50,000 deep (tuples, lists, dicts, MARK/TUPLE), and a list filled
    /// after it was nested (which would let a chain grow from the bottom): refused with a
    /// message, where releasing them once overflowed the stack (SIGSEGV).
    func testDeeplyNestedPicklesAreRefused() {
        let n = 50_000
        let cases: [(String, [UInt8])] = [
            ("TUPLE1", [0x80, 0x02, 0x29] + [UInt8](repeating: 0x85, count: n) + [0x2E]),
            ("lists", [0x80, 0x02] + [UInt8](repeating: 0x5D, count: n) + [UInt8](repeating: 0x61, count: n - 1) + [0x2E]),
            ("dicts", [0x80, 0x02] + (0..<30_000).flatMap { _ in [0x7D] + Self.small(1) } + [0x4E] + [UInt8](repeating: 0x73, count: 30_000) + [0x2E]),
            ("MARK/TUPLE", [0x80, 0x02] + [UInt8](repeating: 0x28, count: n) + [UInt8](repeating: 0x74, count: n) + [0x2E]),
            ("filled after nesting", [0x80, 0x02, 0x5D, 0x71, 0x00, 0x5D, 0x71, 0x01, 0x61, 0x68, 0x01, 0x5D, 0x61, 0x2E]),
            // A list appended to itself (found by fuzzing: a cycle that leaked).
            ("inside itself", [0x80, 0x02, 0x5D, 0x71, 0x00, 0x68, 0x00, 0x61, 0x2E]),
        ]
        for (what, bytes) in cases {
            XCTAssertThrowsError(try PyTorchReader.read(bytes: bytes), what) { error in
                XCTAssertTrue(["nests containers", "already inside another container", "inside itself"].contains { "\(error)".contains($0) }, "\(what): \(error)")
            }
        }
        // 64 deep is allowed (a state dict needs 4): the limit is not a false alarm.
        let allowed: [UInt8] = [0x80, 0x02, 0x29] + [UInt8](repeating: 0x85, count: 62) + [0x2E]
        XCTAssertThrowsError(try PyTorchReader.read(bytes: allowed)) { error in
            XCTAssertFalse("\(error)".contains("nests containers"), "\(error)")  // refused as no checkpoint, further on
        }
    }

    /// A storage that declares 2^61 elements (its byte count would overflow), and 500 names
    /// viewing one 1 MB storage (each copied apart: 500 MB from a 1 MB file): refused.
    func testStorageCountsAndViewsAreBoundedByTheFile() throws {
        let huge = Self.viewsFile(names: 1, count: 4, declared: Self.long(1 << 61))
        XCTAssertThrowsError(try PyTorchReader.read(bytes: huge)) { error in
            XCTAssertTrue("\(error)".contains("persistent id"), "\(error)")
        }
        let one = try PyTorchReader.read(bytes: Self.viewsFile(names: 1, count: 1 << 18))
        XCTAssertEqual(one["w0"]?.values.count, 1 << 18)
        XCTAssertNoThrow(try PyTorchReader.read(bytes: Self.viewsFile(names: 2, count: 1 << 18)), "two names on one storage (tied weights) are fine")
        XCTAssertThrowsError(try PyTorchReader.read(bytes: Self.viewsFile(names: 500, count: 1 << 18))) { error in
            XCTAssertTrue("\(error)".contains("past its size"), "\(error)")
        }
    }

    func testStridedViewIsMadeContiguous() throws {
        // A transposed 2x2 view from offset 1 of a 5-value storage: rows [1, 3], [2, 4].
        let file = Self.legacyFile(values: [0, 1, 2, 3, 4], offset: 1, size: [2, 2], stride: [1, 2])
        let tensors = try PyTorchReader.read(bytes: file)
        XCTAssertEqual(tensors["w"]?.shape, [2, 2])
        XCTAssertEqual(tensors["w"]?.values, [1, 3, 2, 4])
    }

    func testViewsAndLengthsOutsideTheDataAreRefused() {
        let cases: [(String, [UInt8])] = [
            ("past the storage", Self.legacyFile(values: [0, 1, 2, 3], offset: 1, size: [2, 2], stride: [1, 2])),
            ("larger than the storage", Self.legacyFile(values: [0, 1], offset: 0, size: [3, 3], stride: [0, 0])),
            ("truncated data", Self.legacyFile(values: [0, 1, 2, 3], offset: 0, size: [4], stride: [1], claimed: 200)),
            ("truncated pickle", Array(Self.legacyFile(values: [0, 1], offset: 0, size: [2], stride: [1]).prefix(60))),
        ]
        for (what, bytes) in cases {
            XCTAssertThrowsError(try PyTorchReader.read(bytes: bytes), what) { error in
                XCTAssertFalse("\(error)".isEmpty, what)
            }
        }
    }

    /// A pickle that would run `os.system` (what plain `pickle.load` does) is refused at its
    /// GLOBAL: nothing runs, no output file appears, and the message says why.
    func testPickleThatWouldRunCodeIsRefused() throws {
        let folder = try temporaryFolder(self)
        let marker = folder + "/pwned"
        var evil: [UInt8] = [0x80, 0x02] + Self.global("posix", "system") + Self.string("touch \(marker)") + [0x85, 0x52, 0x2E]
        evil += Array("more".utf8)
        let path = folder + "/evil.pth", out = folder + "/evil.safetensors.zst"
        try Data(evil).write(to: URL(fileURLWithPath: path))
        let result = try CLI.run(["import", path, "--out", out])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("refusing to load posix.system"), result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: marker))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertFalse(result.stderr.contains("Fatal error"), result.stderr)
    }

    /// The zip format (`torch.save` since PyTorch 1.6), written from the legacy download by a
    /// standard-library script, imports to exactly the same tensors; neither import needs
    /// python3 on the PATH.
    func testZipFormatImportsLikeTheLegacyFileWithoutPython() throws {
        let pth = EfficientNetImportTests.pth
        guard FileManager.default.fileExists(atPath: pth) else { throw EfficientNetImportTests.MissingWeights() }
        let folder = try temporaryFolder(self)
        let zip = folder + "/lite0-zip.pth"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Support/legacy_to_zip.py").path
        let convert = try runCommand(["python3", script, pth, zip])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: zip)).prefix(2), Data("PK".utf8))
        let noPython = ["PATH": "/nonexistent"]
        for (source, out) in [(pth, folder + "/legacy.safetensors.zst"), (zip, folder + "/zip.safetensors.zst")] {
            let result = try CLI.run(["import", source, "--out", out], environment: noPython)
            XCTAssertEqual(result.status, 0, result.output)
        }
        let legacy = try modelTensors(folder + "/legacy.safetensors.zst"), zipped = try modelTensors(folder + "/zip.safetensors.zst")
        XCTAssertEqual(legacy.count, zipped.count)
        XCTAssertGreaterThan(legacy.count, 100)
        for (name, values) in legacy { XCTAssertEqual(values, zipped[name], name) }

        // One bit of a stored tensor flipped (a damaged download): its entry's CRC-32 no longer
        // matches, and the file is refused in one line rather than imported as other weights.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: zip)))
        let middle = bytes.count / 2
        bytes[middle] ^= 1
        let damaged = folder + "/damaged.pth"
        try Data(bytes).write(to: URL(fileURLWithPath: damaged))
        let refused = try CLI.run(["import", damaged, "--out", folder + "/damaged.safetensors.zst"])
        XCTAssertEqual(refused.status, 1, refused.output)
        XCTAssertTrue(refused.stderr.contains("does not hold the bytes its CRC-32 says: the file is damaged"), refused.stderr)
        XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/damaged.safetensors.zst"))
    }
}
