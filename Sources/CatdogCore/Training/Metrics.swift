import Foundation

/// One epoch's line in `metrics.jsonl`.
public struct EpochMetrics: Sendable, Codable, Equatable {
    public var epoch: Int
    public var step: Int
    public var train_loss: Double
    public var train_acc: Double
    public var val_loss: Double
    public var val_acc: Double
    public var images_per_s: Double
    public var elapsed_s: Double
    public var lr: Double
    public var ranks: Int

    public var jsonLine: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try! encoder.encode(self), as: UTF8.self)
    }
}

/// Formats seconds as h:mm:ss or m:ss.
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
}

/// Appends `line` and a newline to the file at `path`, creating it if needed.
public func appendLine(_ line: String, to path: String) throws {
    let data = Data((line + "\n").utf8)
    if let handle = FileHandle(forWritingAtPath: path) {
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: data)
    } else {
        try data.write(to: URL(fileURLWithPath: path))
    }
}
