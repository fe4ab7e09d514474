/// The shape of one sample's feature map, NHWC without the N: (height, width, channels).
/// A dense layer's output is (1, 1, units).
public struct FeatureShape: Hashable, Sendable, CustomStringConvertible {
    public var height: Int
    public var width: Int
    public var channels: Int

    public init(height: Int, width: Int, channels: Int) {
        self.height = height
        self.width = width
        self.channels = channels
    }

    public static func vector(_ units: Int) -> FeatureShape { .init(height: 1, width: 1, channels: units) }

    /// Floats per sample.
    public var count: Int { height * width * channels }
    public var description: String { "\(height)x\(width)x\(channels)" }
}
