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

    public init(epoch: Int, step: Int, train_loss: Double, train_acc: Double, val_loss: Double, val_acc: Double, images_per_s: Double, elapsed_s: Double, lr: Double, ranks: Int) {
        self.epoch = epoch
        self.step = step
        self.train_loss = train_loss
        self.train_acc = train_acc
        self.val_loss = val_loss
        self.val_acc = val_acc
        self.images_per_s = images_per_s
        self.elapsed_s = elapsed_s
        self.lr = lr
        self.ranks = ranks
    }
}

/// Sums of the current epoch's training loss, correct predictions and samples so far.
public struct EpochTotals: Sendable, Codable {
    public var lossSum = 0.0, correct = 0.0, count = 0.0
    public init() {}
}
