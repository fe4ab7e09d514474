import CatdogData
import CatdogSupport
import Foundation
import XCTest

/// Folders filled by someone else: links, pipes, odd names, duplicate ids, missing classes.
final class HostileFolderTests: XCTestCase {
    func testImageFilesAreMeasuredThroughLinksAndMustBeRegular() throws {
        let folder = try temporaryFolder(self)
        let big = folder + "/big.bin"
        XCTAssertTrue(FileManager.default.createFile(atPath: big, contents: nil))
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: big))
        try handle.truncate(atOffset: UInt64(JPEGCodec.maxFileBytes + 1))  // sparse: no disk used
        try handle.close()
        try FileManager.default.createSymbolicLink(atPath: folder + "/cat.1.jpg", withDestinationPath: big)
        XCTAssertEqual(mkfifo(folder + "/cat.2.jpg", 0o644), 0)
        let badName = folder + "/cat.\u{FFFD}.jpg"
        let cases: [(String, ImageProblem, String)] = [
            (folder + "/cat.1.jpg", .tooLarge, "limit"), (folder + "/cat.2.jpg", .unreadable, "not a regular file"),
            (badName, .unreadable, "not valid UTF-8"),
        ]
        for (path, problem, detail) in cases {
            XCTAssertThrowsError(try JPEGCodec.readFile(path), path) { error in
                let e = error as? ImageError
                XCTAssertEqual(e?.problem, problem, path)
                XCTAssertTrue(e?.detail.contains(detail) == true, "\(path): \(error)")
            }
        }
    }

    func testBoundedReadTakesTheWholeFileUpToTheLimit() throws {
        let folder = try temporaryFolder(self)
        var random = Random(seed: 3)
        for size in [0, 1, 4095, 4096, 70_000] {
            let bytes = Data((0..<size).map { _ in UInt8(random.below(256)) })
            let path = folder + "/f\(size)"
            try bytes.write(to: URL(fileURLWithPath: path))
            XCTAssertEqual(try readBoundedFile(path, limit: 70_000), bytes, "\(size) bytes")
        }
        XCTAssertThrowsError(try readBoundedFile(folder + "/f4096", limit: 4095)) { error in
            XCTAssertTrue("\(error)".contains("4096 bytes (limit 4095)"), "\(error)")
        }
        XCTAssertThrowsError(try readBoundedFile(folder, limit: 100)) { error in
            XCTAssertTrue("\(error)".contains("not a regular file"), "\(error)")
        }
        XCTAssertThrowsError(try readBoundedFile(folder + "/none", limit: 100)) { error in
            XCTAssertTrue("\(error)".contains("missing"), "\(error)")
        }
    }

    func testNumberedFilesRefuseSignsAndDuplicateIds() throws {
        let folder = try temporaryFolder(self)
        for name in ["1.jpg", "2.jpg", "-3.jpg", "+4.jpg"] {
            XCTAssertTrue(FileManager.default.createFile(atPath: folder + "/" + name, contents: Data([0xFF])))
        }
        XCTAssertEqual(try DataFolder.numberedFiles(in: folder).map(\.id), [1, 2])
        var notes: [String] = []
        _ = try DataFolder.numberedFiles(in: folder) { notes.append($0) }
        XCTAssertEqual(notes.count, 1, "\(notes)")
        XCTAssertTrue(notes.first?.contains("2 image(s) in '\(folder)' left out: their names are not plain numbers as Kaggle's test ids are (+4.jpg, -3.jpg)") == true, "\(notes)")
        XCTAssertTrue(FileManager.default.createFile(atPath: folder + "/01.jpg", contents: Data([0xFF])))
        XCTAssertThrowsError(try DataFolder.numberedFiles(in: folder)) { error in
            XCTAssertTrue("\(error)".contains("two images with id 1"), "\(error)")
        }
    }

    func testTrainingSplitNeedsValidationImagesAndWarnsOfAMissingClass() throws {
        let files = (0..<20).map { LabeledFile(path: "cat.\($0).jpg", label: 0) }
        var warnings: [String] = []
        XCTAssertThrowsError(try DataFolder.trainingSplit(files, validationFraction: 0.01, seed: 1, folder: "f") { warnings.append($0) }) { error in
            XCTAssertTrue("\(error)".contains("leaves no validation image"), "\(error)")
        }
        XCTAssertTrue(warnings.first?.contains("0 dogs") == true, "\(warnings)")
        let split = try DataFolder.trainingSplit(files, validationFraction: 0.1, seed: 1, folder: "f") { _ in }
        XCTAssertEqual(split.validation.count, 2)
    }
}
