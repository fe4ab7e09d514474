/// The networks `train --model NAME` knows, each buildable at any input size.
public enum ModelZoo {
    public struct Entry: Sendable {
        public let name: String
        public let description: String
        /// Adds the network's layers after a builder's input (the image).
        let layers: @Sendable (inout NetworkBuilder) -> Void
    }

    /// Every network, its name, what it is and how it is built, in one place.
    public static let entries: [Entry] = [
        .init(name: "resnet", description: "4-stage residual net with BatchNorm and global average pooling, each later stage entered by a stride-2 conv",
              layers: { resnet(&$0) }),
        .init(name: "resnet-wide", description: "resnet with 1.5x the filters (48-96-192-384); at a 15-minute budget it scored below resnet (docs/results.md)",
              layers: { resnet(&$0, filters: [48, 96, 192, 384]) }),
        .init(name: "resnet-narrow", description: "resnet with 0.75x the filters (24-48-96-192); at a 15-minute budget no better than resnet (docs/results.md)",
              layers: { resnet(&$0, filters: [24, 48, 96, 192]) }),
        .init(name: "resnet-deep", description: "resnet with two residual blocks a stage; at a 15-minute budget it scored below resnet (docs/results.md)",
              layers: { resnet(&$0, blocks: 2) }),
        .init(name: "resnet-pool", description: "default: resnet whose later stages shrink by 2x2 max pooling before a stride-1 conv (Winograd: a quarter of the stride-2 conv's products); 30 minutes on a Zen 4 score higher (docs/results.md)",
              layers: { resnet(&$0, poolFirst: true) }),
        .init(name: "vgg", description: "the 2017 study's VGG13-like net: 8 conv 3x3, 2 dense 256 with dropout 0.5",
              layers: { vgg(&$0) }),
        .init(name: "simple", description: "the 2017 study's first net: conv 8x8x32, conv 4x4x16, dense 512-256-64",
              layers: { simple(&$0) }),
    ] + EfficientNetLite.variants.map { lite in
        .init(name: lite.name, description: "ImageNet backbone for transfer learning (weights imported from PyTorch); trained at \(lite.resolution)x\(lite.resolution)",
              layers: { _ = lite.add(to: &$0, classes: 1) })
    }

    public static var names: [String] { entries.map(\.name) }
    public static let defaultModel = "resnet-pool"

    public struct UnknownModel: Error, CustomStringConvertible {
        public let name: String
        public init(name: String) { self.name = name }
        public var description: String {
            "unknown model '\(name)'; choose one of: \(ModelZoo.names.joined(separator: ", "))"
        }
    }

    /// Builds `name` for RGB images of `imageSize`×`imageSize`.
    public static func build(_ name: String, imageSize: Int, convolution: ConvolutionOptions = .init(),
                             sharing: Network? = nil) throws -> Network {
        try builder(name, imageSize: imageSize).build(convolution: convolution, sharing: sharing)
    }

    /// The layers of `name` at `imageSize`, not yet built: `counts()` checks the size cheaply.
    public static func builder(_ name: String, imageSize: Int) throws -> NetworkBuilder {
        let input = FeatureShape(height: imageSize, width: imageSize, channels: 3)
        var b = NetworkBuilder(input: input)
        if let entry = entries.first(where: { $0.name == name }) {
            entry.layers(&b)
        } else if let lite = EfficientNetLite(model: name) {
            // A backbone with its ImageNet classifier (NAME-imagenet), for checking an import.
            _ = lite.add(to: &b, classes: name.hasSuffix(EfficientNetLite.imageNetSuffix) ? 1000 : 1)
        } else {
            throw UnknownModel(name: name)
        }
        return b
    }

    /// The study's first network (§3.1).
    static func simple(_ b: inout NetworkBuilder) {
        b.add(Conv2D(32, 8, activation: .relu))
        b.add(MaxPool2D(2))
        b.add(Dropout(0.25))
        b.add(Conv2D(16, 4, activation: .relu))
        b.add(MaxPool2D(2))
        b.add(Dropout(0.25))
        b.add(Flatten())
        for units in [512, 256, 64] {
            b.add(Dense(units, activation: .relu))
            b.add(Dropout(0.5))
        }
        b.add(Dense(1))
    }

    /// The study's VGG13-like network (§3.2): 2,287,137 parameters at 64×64, as Keras counts.
    static func vgg(_ b: inout NetworkBuilder) {
        for filters in [32, 64, 128, 256] {
            b.add(Conv2D(filters, 3, activation: .relu))
            b.add(Conv2D(filters, 3, activation: .relu))
            b.add(MaxPool2D(2))
        }
        b.add(Flatten())
        b.add(Dense(256, activation: .relu))
        b.add(Dropout(0.5))
        b.add(Dense(256, activation: .relu))
        b.add(Dropout(0.5))
        b.add(Dense(1))
    }

    /// The default: a ResNet-style net (He et al., 2016) sized for CPUs. A stride-2 stem halves
    /// the image at once, so most FLOPs run at ≤ 1/4 of the input's pixels; four stages of one
    /// basic block (two conv 3×3 + BatchNorm, identity skip; a stride-2 conv 3×3 enters each new
    /// stage); global average pooling makes the head independent of the image size.
    /// About half vgg's FLOPs at 64×64.
    /// `filters` are the four stages' widths (the stem has the first); `blocks` the residual
    /// blocks in each stage.
    /// `activation` is ReLU in every model; `.linear` makes a net whose gradient is continuous in
    /// its activations, for tests that compare summation orders (`BalanceTests`).
    public static func resnet(_ b: inout NetworkBuilder, filters widths: [Int] = [32, 64, 128, 256], blocks: Int = 1,
                              activation: Activation = .relu, poolFirst: Bool = false) {
        func convBN(_ b: inout NetworkBuilder, _ filters: Int, stride: Int = 1, relu: Bool = true) {
            b.add(Conv2D(filters, 3, stride: stride, useBias: false))
            // Momentum 0.9 (PyTorch's default) rather than Keras's 0.99: with 0.99 the moving
            // variance still carries a third of its initial 1.0 after 100 steps, and on small
            // data sets validation then sees badly scaled activations.
            // ReLU in BatchNorm's own pass (one layer, no pass of its own).
            b.add(BatchNorm(momentum: 0.9, activation: relu ? activation : .linear))
        }
        convBN(&b, widths[0], stride: 2)
        for (stage, filters) in widths.enumerated() {
            if stage > 0 && poolFirst {
                b.add(MaxPool2D(2))
                convBN(&b, filters)
            } else if stage > 0 {
                convBN(&b, filters, stride: 2)
            }
            for _ in 0..<blocks {
                let skip = b.last
                convBN(&b, filters)
                convBN(&b, filters, relu: false)
                b.add(Add(activation: activation), inputs: [b.last, skip])
            }
        }
        b.add(GlobalAveragePool())
        b.add(Dropout(0.2))
        b.add(Dense(1))
    }

}
