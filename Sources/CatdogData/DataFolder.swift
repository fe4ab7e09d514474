import CatdogSupport
import Foundation

/// One labelled image file: label 1 = dog, 0 = cat.
public struct LabeledFile: Sendable, Hashable {
    public var path: String
    public var label: Int
    public init(path: String, label: Int) {
        self.path = path
        self.label = label
    }
}

/// A folder that yielded no usable images, or could not be read.
public struct DataFolderError: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// Reading a training folder: the Kaggle layout (`cat.123.jpg`, `dog.456.jpg`, the label is
/// the case-insensitive prefix) or class subfolders (`cats/`, `dogs/`, as Keras's
/// `image_dataset_from_directory` reads them). Files without a label are ignored.
public enum DataFolder {
    static let imageExtensions: Set<String> = ["jpg", "jpeg", "jpe", "jfif"]

    /// Label of a Kaggle file name, or nil.
    public static func kaggleLabel(_ name: String) -> Int? {
        let lower = name.lowercased()
        if lower.hasPrefix("cat.") || lower.hasPrefix("cat_") { return 0 }
        if lower.hasPrefix("dog.") || lower.hasPrefix("dog_") { return 1 }
        return nil
    }

    /// Label of a class subfolder name, or nil.
    public static func folderLabel(_ name: String) -> Int? {
        switch name.lowercased() {
        case "cat", "cats": 0
        case "dog", "dogs": 1
        default: nil
        }
    }

    /// Every labelled file in `path`, sorted by path so every rank sees the same order.
    /// Files are not opened here; a broken one is found when it is decoded. Loose images whose
    /// names carry no class (`bird.1.jpg`, `IMG_0001.jpg`) are left out, and `warn` names them.
    public static func labeledFiles(in path: String, warn: (String) -> Void = { _ in }) throws -> [LabeledFile] {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DataFolderError(description: "data folder '\(path)' does not exist or is not a folder")
        }
        let entries: [String]
        do { entries = try fm.contentsOfDirectory(atPath: path) } catch {
            throw DataFolderError(description: "cannot list data folder '\(path)': \(describe(error))")
        }
        var files: [LabeledFile] = [], unlabeled: [String] = []
        var looseExample: String?, classFolders: [(name: String, id: FileIdentity?)] = []
        for entry in entries.sorted() {
            let full = (path as NSString).appendingPathComponent(entry)
            var entryIsDirectory: ObjCBool = false
            _ = fm.fileExists(atPath: full, isDirectory: &entryIsDirectory)
            if entryIsDirectory.boolValue {
                guard let label = folderLabel(entry) else { continue }
                // Two class folders that are one folder (a link) would list each photo twice.
                let id = FileIdentity(full)
                if let id, let twin = classFolders.first(where: { $0.id == id }) {
                    throw DataFolderError(description: "data folder '\(printable(path))': \(printable(entry))/ and "
                        + "\(printable(twin.name))/ are the same folder (a link), so each of its photos would be read twice; keep one of them")
                }
                classFolders.append((entry, id))
                let inner = (try? fm.contentsOfDirectory(atPath: full)) ?? []
                for name in inner where !name.hasPrefix(".") {
                    files.append(LabeledFile(path: (full as NSString).appendingPathComponent(name), label: label))
                }
            } else if let label = kaggleLabel(entry) {
                looseExample = looseExample ?? entry
                files.append(LabeledFile(path: full, label: label))
            } else if imageExtensions.contains((entry as NSString).pathExtension.lowercased()) {
                unlabeled.append(entry)
            }
        }
        // Both layouts at once is most often the same photos twice (a folder sorted into
        // cats/ and dogs/ beside the files it was sorted from): a photo in both could land in
        // training and in validation, and the validation score would flatter the model.
        if let looseExample, let folder = classFolders.first {
            throw DataFolderError(description: "data folder '\(printable(path))' holds both Kaggle-named images "
                + "(\(printable(looseExample))) and a class subfolder (\(printable(folder.name))/); they may be the same photos twice, "
                + "which would put some in both training and validation: keep one layout (move the subfolders, or the loose files, elsewhere)")
        }
        guard !files.isEmpty else {
            throw DataFolderError(description: """
                no labelled images in '\(printable(path))': expected Kaggle names (cat.1.jpg, dog.2.jpg) or \
                subfolders cats/ and dogs/\(whereTheyAre(in: path, entries: entries))
                """)
        }
        if !unlabeled.isEmpty {
            warn("""
                note: \(unlabeled.count) image(s) in '\(path)' left out: their names carry no class (\(someNames(unlabeled))); \
                name them cat.N.jpg or dog.N.jpg, or move them into cats/ or dogs/, to use them
                """)
        }
        return files.sorted { $0.path < $1.path }
    }

    /// Where the images of a folder without any may be: a subfolder of Kaggle-named images
    /// (the folder Kaggle's zip unpacked into, `dogs-vs-cats/` holding `train/`), or a zip still
    /// packed; "" when neither. Looks into at most 16 subfolders.
    static func whereTheyAre(in path: String, entries: [String]) -> String {
        let fm = FileManager.default
        var looked = 0
        for entry in entries.sorted() where !entry.hasPrefix(".") && looked < 16 {
            let full = (path as NSString).appendingPathComponent(entry)
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: full, isDirectory: &isDirectory), isDirectory.boolValue else { continue }
            looked += 1
            if let inner = try? fm.contentsOfDirectory(atPath: full), inner.contains(where: { kaggleLabel($0) != nil }) {
                return "; its subfolder \(printable(entry))/ holds Kaggle-named images: pass --data \(printable(full))"
            }
        }
        if let zip = entries.sorted().first(where: { $0.lowercased().hasSuffix(".zip") }) {
            return "; it holds \(printable(zip)): unzip it first (README, \"Getting the data\")"
        }
        return ""
    }

    /// The numbered images of a Kaggle test folder (`1.jpg`, `2.jpg`, …), sorted by number.
    /// Images whose names are no plain number (`-3.jpg`, `1e5.jpg`, `cat.3.jpg`, more than 18
    /// digits) are left out, and `warn` names them: a submission without them has fewer rows
    /// than the folder has images.
    public static func numberedFiles(in path: String, warn: (String) -> Void = { _ in }) throws -> [(id: Int, path: String)] {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DataFolderError(description: "test folder '\(path)' does not exist or is not a folder")
        }
        let entries = (try? fm.contentsOfDirectory(atPath: path)) ?? []
        // Only plain numbers: "-1.jpg" or "+2.jpg" are not Kaggle ids.
        var skipped: [String] = []
        let numbered = entries.compactMap { name -> (Int, String)? in
            let stem = (name as NSString).deletingPathExtension
            guard imageExtensions.contains((name as NSString).pathExtension.lowercased()) else { return nil }
            guard !stem.isEmpty, stem.count <= 18, stem.allSatisfy({ $0.isASCII && $0.isNumber }), let id = Int(stem) else {
                skipped.append(name)
                return nil
            }
            return (id, (path as NSString).appendingPathComponent(name))
        }
        guard !numbered.isEmpty else {
            throw DataFolderError(description: "no numbered images (1.jpg, 2.jpg, ...) in test folder '\(path)'")
        }
        let sorted = numbered.sorted { ($0.0, $0.1) < ($1.0, $1.1) }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.0 == b.0 {
            throw DataFolderError(description: "test folder '\(path)' has two images with id \(a.0): \(a.1) and \(b.1); a submission needs one row per id")
        }
        if !skipped.isEmpty {
            warn("""
                note: \(skipped.count) image(s) in '\(path)' left out: their names are not plain numbers \
                as Kaggle's test ids are (\(someNames(skipped))); rename them N.jpg to score them
                """)
        }
        return sorted.map { (id: $0.0, path: $0.1) }
    }

    /// The JPEG files of `path` (by extension: .jpg, .jpeg, .jpe, .jfif, any case), sorted by
    /// name; subfolders and hidden files are not looked into. Their names need no class or number.
    /// Anything else so named (a broken link, a pipe) is listed, for its reader to refuse by name.
    public static func imageFiles(in path: String) throws -> [String] {
        let fm = FileManager.default
        let entries: [String]
        do { entries = try fm.contentsOfDirectory(atPath: path) } catch {
            throw DataFolderError(description: "cannot list folder '\(printable(path))': \(describe(error))")
        }
        let files = entries.sorted().compactMap { name -> String? in
            guard !name.hasPrefix("."), imageExtensions.contains((name as NSString).pathExtension.lowercased()) else { return nil }
            let full = (path as NSString).appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            _ = fm.fileExists(atPath: full, isDirectory: &isDirectory)
            return isDirectory.boolValue ? nil : full
        }
        guard !files.isEmpty else {
            throw DataFolderError(description: "no JPEG images (.jpg, .jpeg) in folder '\(printable(path))'")
        }
        return files
    }

    /// The first five of `names` in order (each escaped by `printable`: a line break in a name
    /// does not break the message), and "..." when there are more.
    static func someNames(_ names: [String]) -> String {
        names.sorted().prefix(5).map { printable($0) }.joined(separator: ", ") + (names.count > 5 ? ", ..." : "")
    }

    /// The stratified split a training run uses: refuses a split that leaves no training or no
    /// validation image (say which option to change), and warns through `warn` when a class
    /// is missing from the folder.
    public static func trainingSplit(_ files: [LabeledFile], validationFraction: Double, seed: UInt64, folder: String,
                                     warn: (String) -> Void) throws -> (train: [LabeledFile], validation: [LabeledFile]) {
        let cats = files.filter { $0.label == 0 }.count, dogs = files.count - cats
        if cats == 0 || dogs == 0 {
            warn("warning: '\(folder)' holds \(cats) cats and \(dogs) dogs: a model cannot learn a class it never sees")
        }
        let split = split(files, validationFraction: validationFraction, seed: seed)
        guard !split.train.isEmpty else {
            throw DataFolderError(description: "no training images left in '\(folder)' after the validation split: lower --val-fraction")
        }
        guard !split.validation.isEmpty else {
            throw DataFolderError(description: """
                --val-fraction \(validationFraction) of \(files.count) images in '\(folder)' leaves no validation image: \
                raise it to at least \(String(format: "%.3g", 0.5 / Double(max(cats, dogs, 1))))
                """)
        }
        return split
    }

    /// Stratified split: within each class, a seeded shuffle puts round(fraction·count) files
    /// into validation. Depends only on (files, fraction, seed), never on the rank count.
    public static func split(_ files: [LabeledFile], validationFraction: Double, seed: UInt64)
        -> (train: [LabeledFile], validation: [LabeledFile])
    {
        var train: [LabeledFile] = [], validation: [LabeledFile] = []
        for label in 0...1 {
            let members = files.filter { $0.label == label }
            var random = Random(seed: seed, 0x5B17, UInt64(label))
            let order = random.permutation(members.count)
            let validationCount = Int((validationFraction * Double(members.count)).rounded())
            for (position, index) in order.enumerated() {
                if position < validationCount { validation.append(members[index]) } else { train.append(members[index]) }
            }
        }
        return (train.sorted { $0.path < $1.path }, validation.sorted { $0.path < $1.path })
    }
}
