import CatdogData
import CatdogDistributed
import CatdogRun
import CatdogTraining
import Foundation
import XCTest

final class DataFolderTests: XCTestCase {
    func write(_ data: Data, _ path: String) throws { try data.write(to: URL(fileURLWithPath: path)) }

    func testKaggleLayoutLabelsByCaseInsensitivePrefixAndIgnoresOthers() throws {
        let folder = try temporaryFolder(self)
        let jpeg = try JPEGCodec().encode(pattern(width: 8, height: 8), width: 8, height: 8)
        for name in ["cat.1.jpg", "Cat.2.JPG", "dog.3.jpg", "DOG.4.jpeg", "bird.5.jpg", "notes.txt", "12.jpg"] {
            try write(jpeg, "\(folder)/\(name)")
        }
        var notes: [String] = []
        let files = try DataFolder.labeledFiles(in: folder) { notes.append($0) }
        XCTAssertEqual(files.map { ($0.path as NSString).lastPathComponent }, ["Cat.2.JPG", "DOG.4.jpeg", "cat.1.jpg", "dog.3.jpg"])
        XCTAssertEqual(files.map(\.label), [0, 1, 0, 1])
        // The images left out are named (not notes.txt, which is no image).
        XCTAssertEqual(notes.count, 1, "\(notes)")
        XCTAssertTrue(notes.first?.contains("2 image(s) in '\(folder)' left out: their names carry no class (12.jpg, bird.5.jpg)") == true, "\(notes)")
    }

    func testClassSubfoldersAsKerasReadsThem() throws {
        let folder = try temporaryFolder(self)
        let jpeg = try JPEGCodec().encode(pattern(width: 8, height: 8), width: 8, height: 8)
        for sub in ["cats", "dogs", "other"] {
            try FileManager.default.createDirectory(atPath: "\(folder)/\(sub)", withIntermediateDirectories: true)
            for i in 0..<3 { try write(jpeg, "\(folder)/\(sub)/img\(i).jpg") }
        }
        let files = try DataFolder.labeledFiles(in: folder)
        XCTAssertEqual(files.count, 6)
        XCTAssertEqual(files.filter { $0.label == 1 }.count, 3)
        XCTAssertTrue(files.filter { $0.label == 1 }.allSatisfy { $0.path.contains("/dogs/") })
    }

    /// Kaggle-named files beside class subfolders (most often the same photos sorted twice,
    /// which would leak validation photos into training), and two class folders that are one
    /// folder through a link, are refused with a one-line error naming both.
    func testTheSamePhotosTwiceAreRefused() throws {
        let jpeg = try JPEGCodec().encode(pattern(width: 8, height: 8), width: 8, height: 8)
        let mixed = try temporaryFolder(self)
        try FileManager.default.createDirectory(atPath: mixed + "/dogs", withIntermediateDirectories: true)
        try write(jpeg, mixed + "/cat.1.jpg")
        try write(jpeg, mixed + "/dogs/dog.1.jpg")
        XCTAssertThrowsError(try DataFolder.labeledFiles(in: mixed)) { error in
            XCTAssertTrue("\(error)".contains("holds both Kaggle-named images (cat.1.jpg) and a class subfolder (dogs/)"), "\(error)")
            XCTAssertFalse("\(error)".contains("\n"), "\(error)")
        }
        let linked = try temporaryFolder(self)
        for sub in ["cats", "dogs"] {
            try FileManager.default.createDirectory(atPath: "\(linked)/\(sub)", withIntermediateDirectories: true)
            try write(jpeg, "\(linked)/\(sub)/a.jpg")
        }
        XCTAssertEqual(try DataFolder.labeledFiles(in: linked).count, 2)
        try FileManager.default.createSymbolicLink(atPath: linked + "/cat", withDestinationPath: "cats")
        XCTAssertThrowsError(try DataFolder.labeledFiles(in: linked)) { error in
            XCTAssertTrue("\(error)".contains("cats/ and cat/ are the same folder"), "\(error)")
        }
    }

    func testNumberedTestFolderSortsById() throws {
        let folder = try temporaryFolder(self)
        for name in ["10.jpg", "2.jpg", "1.jpg", "cat.3.jpg", "x.jpg"] { try write(Data([1]), "\(folder)/\(name)") }
        XCTAssertEqual(try DataFolder.numberedFiles(in: folder).map(\.id), [1, 2, 10])
        let empty = try temporaryFolder(self)
        XCTAssertThrowsError(try DataFolder.numberedFiles(in: empty)) { XCTAssertTrue("\($0)".contains(empty)) }
    }

    func testFolderWithoutLabelledImagesIsAClearErrorNamingIt() throws {
        let folder = try temporaryFolder(self)
        try write(Data([1, 2]), "\(folder)/readme.txt")
        XCTAssertThrowsError(try DataFolder.labeledFiles(in: folder)) { XCTAssertTrue("\($0)".contains(folder), "\($0)") }
        XCTAssertThrowsError(try DataFolder.labeledFiles(in: folder + "/missing")) { XCTAssertTrue("\($0)".contains("does not exist")) }
        // Kaggle's zip still packed, then unpacked one level down: the message says where to look.
        try write(Data([1, 2]), "\(folder)/train.zip")
        XCTAssertThrowsError(try DataFolder.labeledFiles(in: folder)) {
            XCTAssertTrue("\($0)".hasSuffix("; it holds train.zip: unzip it first (README, \"Getting the data\")"), "\($0)")
        }
        try FileManager.default.createDirectory(atPath: folder + "/test1", withIntermediateDirectories: true)
        try write(Data([1, 2]), "\(folder)/test1/1.jpg")
        try FileManager.default.createDirectory(atPath: folder + "/train", withIntermediateDirectories: true)
        try write(Data([1, 2]), "\(folder)/train/dog.7.jpg")
        XCTAssertThrowsError(try DataFolder.labeledFiles(in: folder)) {
            XCTAssertTrue("\($0)".hasSuffix("; its subfolder train/ holds Kaggle-named images: pass --data \(folder)/train"), "\($0)")
        }
    }

    func testSplitIsStratifiedSeededAndDisjoint() {
        let files = (0..<300).map { LabeledFile(path: String(format: "/d/%@.%03d.jpg", $0 < 100 ? "cat" : "dog", $0), label: $0 < 100 ? 0 : 1) }
        let a = DataFolder.split(files, validationFraction: 0.1, seed: 4)
        let b = DataFolder.split(files, validationFraction: 0.1, seed: 4)
        let c = DataFolder.split(files, validationFraction: 0.1, seed: 5)
        XCTAssertEqual(a.validation, b.validation)
        XCTAssertNotEqual(a.validation, c.validation)
        XCTAssertEqual(a.validation.filter { $0.label == 0 }.count, 10)
        XCTAssertEqual(a.validation.filter { $0.label == 1 }.count, 20)
        XCTAssertEqual(Set(a.train).intersection(a.validation).count, 0)
        XCTAssertEqual(a.train.count + a.validation.count, 300)
    }

    func testBrokenFilesAreSkippedCountedAndSummarised() throws {
        let folder = try temporaryFolder(self)
        let codec = JPEGCodec()
        let good = try codec.encode(pattern(width: 50, height: 40), width: 50, height: 40)
        for i in 0..<6 { try write(good, "\(folder)/\(i % 2 == 0 ? "cat" : "dog").\(i).jpg") }
        try write(Data(), "\(folder)/cat.100.jpg")
        try write(Data("not an image".utf8), "\(folder)/dog.101.jpg")
        try write(good.prefix(good.count / 3), "\(folder)/cat.102.jpg")
        try write(Data([0xFF, 0xD8, 0xFF, 0x00, 0x01]), "\(folder)/dog.103.jpg")
        let files = try DataFolder.labeledFiles(in: folder)
        let store = ImageStore(count: files.count, storedSize: 20, labels: files.map(\.label))
        let report = store.decode(files.map(\.path), indices: 0..<files.count, fit: .squash)
        XCTAssertEqual(report.attempted, 10)
        XCTAssertEqual(report.counts, [.empty: 1, .notJPEG: 1, .unreadable: 2])
        XCTAssertEqual(report.summary, "skipped 4 of 10 files: 1 empty, 1 not a JPEG, 2 unreadable")
        XCTAssertEqual(store.valid.filter { $0 == 1 }.count, 6)
        XCTAssertEqual(Set(report.skipped.map { ($0.path as NSString).lastPathComponent }),
                       ["cat.100.jpg", "dog.101.jpg", "cat.102.jpg", "dog.103.jpg"])
    }

    func testTrainingDataOnOneRankSkipsBrokenFilesAndKeepsTheRest() throws {
        let folder = try temporaryFolder(self)
        let codec = JPEGCodec()
        for i in 0..<20 {
            let shade = UInt8(i * 10)
            try write(try codec.encode([UInt8](repeating: shade, count: 30 * 30 * 3), width: 30, height: 30),
                      "\(folder)/\(i < 10 ? "cat" : "dog").\(i).jpg")
        }
        try write(Data("broken".utf8), "\(folder)/dog.99.jpg")
        var config = TrainingConfig()
        config.imageSize = 16
        config.validationFraction = 0.2
        let data = try TrainingData(folder: folder, config: config, communicator: LocalCommunicator())
        XCTAssertEqual(data.trainSamples.count + data.validationCount, 20)
        XCTAssertEqual(data.skippedSummary, "skipped 1 of 21 files: 1 not a JPEG")
        XCTAssertEqual(data.skippedDetails.count, 1)
        XCTAssertTrue(data.skippedDetails[0].contains("dog.99.jpg"))
    }
}
