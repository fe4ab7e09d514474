import CatdogSupport

/// How pixels become network input: the choices of the 2017 study, stored in checkpoints so
/// evaluation always matches training.
public struct Preprocessing: Sendable, Codable, Equatable {
    public enum Scale: String, Sendable, Codable, CaseIterable {
        /// x / 255 in [0, 1].
        case unit
        /// x / 127.5 − 1 in [−1, 1] (Keras's `preprocess_input`, "tf" mode).
        case symmetric
        /// (x − 127) / 128, as the EfficientNet-Lite port expects.
        case efficientnet
    }

    public var imageSize: Int
    public var fit: Resize.Fit
    public var scale: Scale
    /// Per-channel mean (in scaled units) subtracted after scaling, or nil.
    public var channelMean: [Float]?
    /// Extra pixels kept around the working size so random crops have room.
    public var cropMargin: Int

    public init(imageSize: Int, fit: Resize.Fit = .squash, scale: Scale = .unit, channelMean: [Float]? = nil,
                cropMargin: Int? = nil) {
        self.imageSize = imageSize
        self.fit = fit
        self.scale = scale
        self.channelMean = channelMean
        self.cropMargin = cropMargin ?? max(2, imageSize / 8)
    }

    /// Side of the stored (decoded) square: working size plus the crop margin.
    public var storedSize: Int { imageSize + cropMargin }

    /// The same preprocessing at input size `size`: the crop margin scaled in proportion, so
    /// the crop shows the same part of the image at more or fewer pixels.
    public func resized(to size: Int) -> Preprocessing {
        guard size != imageSize else { return self }
        var p = self
        p.imageSize = size
        p.cropMargin = cropMargin == 0 ? 0 : max(1, Int((Double(cropMargin) * Double(size) / Double(max(imageSize, 1))).rounded()))
        return p
    }

    /// (multiplier, offset) so that input = byte·multiplier + offset[channel].
    public func affine() -> (Float, [Float]) {
        let (m, o): (Float, Float) = switch scale {
        case .unit: (1 / 255, 0)
        case .symmetric: (1 / 127.5, -1)
        case .efficientnet: (1 / 128, -127 / 128)
        }
        let mean = channelMean ?? [0, 0, 0]
        return (m, mean.map { o - $0 })
    }
}

/// Per-sample augmentation, drawn from (seed, epoch, sample) so a sample is augmented the same
/// way on any number of ranks and after a resume.
public struct Augmentation: Sendable, Codable, Equatable {
    /// Random horizontal flip (p = 0.5).
    public var flip = false
    /// Per-channel colour offsets, each uniform in ±`colorShift` levels of 255 (the study
    /// shifted e.g. R+20 G−19 B+20).
    public var color = false
    public var colorShift: Float = 20
    /// Random crop of the working size out of the stored square (else the centre).
    public var crop = false
    /// Scale jitter: a crop of random area (`scaleRange` of the working size's, within the
    /// stored square) and aspect ratio (3:4 to 4:3) at a random place, resampled bilinearly to
    /// the working size (zoom 0.9–1.4×). nil (checkpoints written before it) = off.
    public var scale: Bool?
    public static let scaleRange: ClosedRange<Float> = 0.5...1.25
    /// Cutout (DeVries & Taylor 2017): a square whose side is this fraction of the input's,
    /// centred on a random pixel and clipped at the borders, set to mid-grey (the input a pixel
    /// of 127.5 in each channel becomes: 0.5 with the default unit scaling). Drawn
    /// after every other draw, so the rest of a sample's augmentation is the same with it or
    /// without. nil = off (and checkpoints written before it).
    public var cutout: Float?
    /// `cutout` in the list without a size.
    public static let defaultCutout: Float = 0.5
    public static let cutoutRange: ClosedRange<Float> = 0.01...1

    public init(flip: Bool = false, color: Bool = false, crop: Bool = false, scale: Bool = false, cutout: Float? = nil) {
        self.flip = flip
        self.color = color
        self.crop = crop
        self.scale = scale ? true : nil
        self.cutout = cutout
    }

    /// The random stream of one sample's augmentation in one epoch.
    public static func stream(seed: UInt64, epoch: Int, sample: Int) -> Random {
        Random(seed: seed, 0xA06, UInt64(epoch), UInt64(sample))
    }

    public static let none = Augmentation()
    public static let all = Augmentation(flip: true, color: true, crop: true)

    /// Parses a list of `flip`, `color`, `crop`, `scale`, `cutout` or `cutout:F` (the side as a
    /// fraction of the input's, 0.01–1), or `all` (the first three), or `none`.
    public init(parsing list: String) throws {
        self.init()
        let trimmed = list.trimmingCharacters(in: .whitespaces).lowercased()
        if trimmed == "none" || trimmed.isEmpty { return }
        if trimmed == "all" { self = .all; return }
        for item in trimmed.split(separator: ",") {
            switch item.trimmingCharacters(in: .whitespaces) {
            case "flip": flip = true
            case "color", "colour": color = true
            case "crop": crop = true
            case "scale": scale = true
            case "all": flip = true; color = true; crop = true
            case "cutout": cutout = Self.defaultCutout
            case let other where other.hasPrefix("cutout:"):
                let text = other.dropFirst("cutout:".count)
                guard let side = Float(text), Self.cutoutRange.contains(side) else {
                    throw DataFolderError(description: "cutout size '\(text.prefix(20))' is not a fraction of the input's side in \(Self.cutoutRange.lowerBound)...\(Self.cutoutRange.upperBound), e.g. cutout:0.5")
                }
                cutout = side
            default: throw DataFolderError(description: "unknown augmentation '\(item.prefix(40))'; use flip, color, crop, scale, cutout[:F], all or none")
            }
        }
    }

    public var description: String {
        let parts = [flip ? "flip" : nil, color ? "color" : nil, crop ? "crop" : nil, scale == true ? "scale" : nil,
                     cutout.map { "cutout:\($0)" }].compactMap { $0 }
        return parts.isEmpty ? "none" : parts.joined(separator: ",")
    }
}

import Foundation
