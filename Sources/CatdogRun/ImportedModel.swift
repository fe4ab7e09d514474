import CatdogCheckpoint
import CatdogData
import CatdogEngine

extension EfficientNetImport {
    /// The imported model (`lite`) as an (uncompressed) catdog-dist checkpoint at `imageSize`: the
    /// frozen-backbone configuration and preprocessing of the port (centre crop, (x - 127) / 128).
    public static func checkpointBytes(from source: TensorSource, variant lite: EfficientNetLite, imageSize: Int,
                                       seed: UInt64 = 1) throws -> [UInt8] {
        let network = try ModelZoo.build(lite.name, imageSize: imageSize)
        network.initialize(seed: seed)  // the new cat/dog head; everything else is overwritten
        let imagenet = try load(from: source, into: network, variant: lite)
        var config = TrainingConfig()
        config.model = lite.name
        config.imageSize = imageSize
        config.fit = .crop
        config.scale = .efficientnet
        config.seed = seed
        let preprocessing = Preprocessing(imageSize: imageSize, fit: .crop, scale: .efficientnet, cropMargin: 0)
        let metadata = CheckpointMetadata(model: network, config: config, preprocessing: preprocessing, history: [],
                                          bestValidationLoss: nil, finished: false, ranks: 1)
        return try imagenet.kernel.withUnsafeBufferPointer { kernel in
            try imagenet.bias.withUnsafeBufferPointer { bias in
                try metadata.encode(network: network,
                                    extra: [.init(name: "imagenet/fc.kernel", shape: [1280, 1000], values: kernel),
                                            .init(name: "imagenet/fc.bias", shape: [1000], values: bias)],
                                    extraMetadata: ["source": "\(lite.packageName) (Apache-2.0)"])
            }
        }
    }
}

extension Dictionary where Key == String, Value == PyTorchReader.Tensor {
    /// Looks a PyTorch state dict's tensors up by name for `EfficientNetImport`.
    public var tensorSource: EfficientNetImport.TensorSource {
        { name in self[name].map { ($0.shape, $0.values) } }
    }
}
