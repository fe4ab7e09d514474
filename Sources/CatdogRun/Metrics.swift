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
    /// The side of the images the epoch trained on (it grows with progressive resizing);
    /// nil in files written before it was recorded.
    public var train_size: Int?

    /// One JSON object; a non-finite number (no JSON value exists for it) is written as null.
    public var jsonLine: String {
        func number(_ x: Double) -> String { x.isFinite ? "\(x)" : "null" }
        let fields: [(String, String)] = [
            ("elapsed_s", number(elapsed_s)), ("epoch", "\(epoch)"), ("images_per_s", number(images_per_s)), ("lr", number(lr)),
            ("ranks", "\(ranks)"), ("step", "\(step)"), ("train_acc", number(train_acc)), ("train_loss", number(train_loss)),
        ] + (train_size.map { [("train_size", "\($0)")] } ?? []) + [
            ("val_acc", number(val_acc)), ("val_loss", number(val_loss)),
        ]
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    public init(epoch: Int, step: Int, train_loss: Double, train_acc: Double, val_loss: Double, val_acc: Double, images_per_s: Double, elapsed_s: Double, lr: Double, ranks: Int, train_size: Int? = nil) {
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
        self.train_size = train_size
    }
}

/// Sums of the current epoch's training loss, correct predictions and samples so far.
public struct EpochTotals: Sendable, Codable {
    public var lossSum = 0.0, correct = 0.0, count = 0.0
    public init() {}
}

extension EpochMetrics {
    private enum Keys: String, CodingKey {
        case epoch, step, train_loss, train_acc, val_loss, val_acc, images_per_s, elapsed_s, lr, ranks, train_size
    }

    /// JSON has no NaN: a non-finite value is stored as null and read back as NaN.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        func put(_ x: Double, _ key: Keys) throws { if x.isFinite { try c.encode(x, forKey: key) } else { try c.encodeNil(forKey: key) } }
        try c.encode(epoch, forKey: .epoch)
        try c.encode(step, forKey: .step)
        try put(train_loss, .train_loss)
        try put(train_acc, .train_acc)
        try put(val_loss, .val_loss)
        try put(val_acc, .val_acc)
        try put(images_per_s, .images_per_s)
        try put(elapsed_s, .elapsed_s)
        try put(lr, .lr)
        try c.encode(ranks, forKey: .ranks)
        try c.encodeIfPresent(train_size, forKey: .train_size)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        func get(_ key: Keys) throws -> Double { try c.decodeIfPresent(Double.self, forKey: key) ?? .nan }
        self.init(epoch: try c.decode(Int.self, forKey: .epoch), step: try c.decode(Int.self, forKey: .step),
                  train_loss: try get(.train_loss), train_acc: try get(.train_acc), val_loss: try get(.val_loss),
                  val_acc: try get(.val_acc), images_per_s: try get(.images_per_s), elapsed_s: try get(.elapsed_s),
                  lr: try get(.lr), ranks: try c.decode(Int.self, forKey: .ranks),
                  train_size: try c.decodeIfPresent(Int.self, forKey: .train_size))
    }
}
