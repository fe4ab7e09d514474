import Foundation

/// What `stats` reports about a folder: images per class, sizes, unreadable files
/// (the 2017 study's chapter 2 figures). Reads only the JPEG headers.
public struct DatasetStatistics: Sendable {
    public var folder: String
    public var cats = 0
    public var dogs = 0
    public var widths: [Int] = []
    public var heights: [Int] = []
    public var unreadable: [(path: String, reason: String)] = []

    /// `warn` hears of images left out of the folder's count (`DataFolder.labeledFiles`).
    public init(folder: String, warn: (String) -> Void = { _ in }) throws {
        self.folder = folder
        let files = try DataFolder.labeledFiles(in: folder, warn: warn)
        let codec = JPEGCodec()
        for file in files {
            do {
                let data = try JPEGCodec.readFile(file.path)
                let (w, h) = try codec.dimensions(of: data)
                widths.append(w)
                heights.append(h)
                if file.label == 1 { dogs += 1 } else { cats += 1 }
            } catch {
                unreadable.append((file.path, "\(error)"))
            }
        }
    }

    public var count: Int { cats + dogs }

    public static func describe(_ values: [Int]) -> String {
        guard !values.isEmpty else { return "-" }
        let sorted = values.sorted()
        let mean = Double(values.reduce(0, +)) / Double(values.count)
        return String(format: "min %d  median %d  mean %.1f  max %d", sorted[0], sorted[sorted.count / 2], mean, sorted.last!)
    }

    public var report: String {
        """
        \(folder): \(count) images (\(cats) cats, \(dogs) dogs), \(unreadable.count) unreadable
        width:  \(DatasetStatistics.describe(widths))
        height: \(DatasetStatistics.describe(heights))
        """
    }
}
