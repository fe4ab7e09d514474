import CatdogData
import CatdogEngine
import CatdogSupport
import Foundation

/// Writes a trained network as an ONNX model (opset 13), so that it runs wherever onnxruntime
/// does. Its input is what a user has after resizing: `image`, float32 RGB pixel values 0–255 in
/// (batch, size, size, 3); the graph scales them as training did, turns them into the NCHW
/// layout ONNX's convolutions use, and ends in a sigmoid: `dog_probability`, (batch, 1).
/// How to get from a photo to that input (size, fit, crop) is in the model's metadata.
///
/// catdog-dist's tensors are NHWC with Keras's kernel layouts; the exporter transposes the
/// weights (conv (KH, KW, C, F) to (F, C, KH, KW), depthwise (KH, KW, C) to (C, 1, KH, KW)), and
/// before a Flatten it transposes the activations back to NHWC so a dense layer's weights keep
/// their order.
public enum ONNXExport {
    public struct UnsupportedLayer: Error, CustomStringConvertible {
        public var description: String
    }

    /// The model's bytes. `metadata` goes into `metadata_props` (key–value text).
    public static func model(_ network: Network, preprocessing: Preprocessing, modelName: String,
                             metadata: [(String, String)]) throws -> [UInt8] {
        var graph = Graph(network: network)
        let size = preprocessing.imageSize
        // Scaling: x·m + o per channel (broadcast over the last, channel, axis).
        let (multiplier, offsets) = preprocessing.affine()
        graph.constant("scale_multiplier", [multiplier], dims: [])
        graph.constant("scale_offset", offsets, dims: [3])
        graph.node("Mul", ["image", "scale_multiplier"], ["scaled_0"])
        graph.node("Add", ["scaled_0", "scale_offset"], ["scaled"])
        graph.node("Transpose", ["scaled"], ["input_nchw"], ints: ["perm": [0, 3, 1, 2]])
        var values: [String] = ["input_nchw"]
        var spatial: [Bool] = [true]
        for (index, node) in network.nodes.enumerated().dropFirst() {
            guard let layer = node.layer else { throw UnsupportedLayer(description: "node \(node.name) has no layer") }
            let inputs = node.inputs.map { values[$0] }
            let (output, isSpatial) = try graph.add(layer, index: index, name: node.name, inputs: inputs,
                                                    inputSpatial: node.inputs.map { spatial[$0] })
            values.append(output)
            spatial.append(isSpatial)
        }
        graph.node("Sigmoid", [values[values.count - 1]], ["dog_probability"])

        var g = ProtobufWriter()
        for n in graph.nodes { g.message(1, n) }
        g.string(2, modelName)
        for t in graph.initializers { g.message(5, t) }
        g.message(11, valueInfo("image", dims: [.symbolic("batch"), .fixed(size), .fixed(size), .fixed(3)]))
        g.message(12, valueInfo("dog_probability", dims: [.symbolic("batch"), .fixed(1)]))

        var model = ProtobufWriter()
        model.int(1, 8)  // IR version 8
        model.string(2, "catdog-dist")
        model.string(3, "1")
        model.string(6, "Dogs vs. cats classifier trained by catdog-dist: the probability that each image is a dog.")
        model.message(7, g)
        var opset = ProtobufWriter()
        opset.string(1, "")
        opset.int(2, 13)
        model.message(8, opset)
        for (key, value) in metadata {
            var entry = ProtobufWriter()
            entry.string(1, key)
            entry.string(2, value)
            model.message(14, entry)
        }
        return model.bytes
    }

    enum Dimension { case fixed(Int), symbolic(String) }

    static func valueInfo(_ name: String, dims: [Dimension]) -> ProtobufWriter {
        var shape = ProtobufWriter()
        for d in dims {
            var dim = ProtobufWriter()
            switch d {
            case .fixed(let n): dim.int(1, n)
            case .symbolic(let s): dim.string(2, s)
            }
            shape.message(1, dim)
        }
        var tensor = ProtobufWriter()
        tensor.int(1, 1)  // FLOAT
        tensor.message(2, shape)
        var type = ProtobufWriter()
        type.message(1, tensor)
        var info = ProtobufWriter()
        info.string(1, name)
        info.message(2, type)
        return info
    }

    /// The graph under construction: nodes in order, weights as initializers.
    struct Graph {
        let network: Network
        var nodes: [ProtobufWriter] = []
        var initializers: [ProtobufWriter] = []
        private var constants: Set<String> = []

        init(network: Network) { self.network = network }

        mutating func constant(_ name: String, _ values: [Float], dims: [Int]) {
            guard constants.insert(name).inserted else { return }
            var t = ProtobufWriter()
            for d in dims { t.int(1, d) }
            t.int(2, 1)  // FLOAT
            t.string(8, name)
            var raw = [UInt8]()
            raw.reserveCapacity(values.count * 4)
            for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { raw += $0 } }
            t.bytes(9, raw)
            initializers.append(t)
        }

        mutating func node(_ op: String, _ inputs: [String], _ outputs: [String], ints: [String: [Int]] = [:],
                           int: [String: Int] = [:], float: [String: Float] = [:]) {
            var n = ProtobufWriter()
            for i in inputs { n.string(1, i) }
            for o in outputs { n.string(2, o) }
            n.string(3, outputs[0])
            n.string(4, op)
            // AttributeProto: name (1), then the value's field and its type (20): INTS 7, INT 2, FLOAT 1.
            func attribute(_ name: String, type: Int, _ value: (inout ProtobufWriter) -> Void) {
                var a = ProtobufWriter()
                a.string(1, name)
                value(&a)
                a.int(20, type)
                n.message(5, a)
            }
            for (name, list) in ints.sorted(by: { $0.key < $1.key }) { attribute(name, type: 7) { a in for v in list { a.int(8, v) } } }
            for (name, v) in int.sorted(by: { $0.key < $1.key }) { attribute(name, type: 2) { $0.int(3, v) } }
            for (name, v) in float.sorted(by: { $0.key < $1.key }) { attribute(name, type: 1) { $0.float(2, v) } }
            nodes.append(n)
        }

        /// A tensor of the network by its slot name ("conv2d_1.kernel"), from parameters or state.
        func values(_ slotName: String) throws -> [Float] {
            if let slot = network.parameterSlots.first(where: { $0.name == slotName }) {
                return Array(UnsafeBufferPointer(start: network.parameters.pointer + slot.offset, count: slot.count))
            }
            if let slot = network.stateSlots.first(where: { $0.name == slotName }) {
                return Array(UnsafeBufferPointer(start: network.state.pointer + slot.offset, count: slot.count))
            }
            throw UnsupportedLayer(description: "the network has no tensor \(slotName)")
        }

        mutating func activation(_ activation: Activation, _ input: String, name: String) -> String {
            switch activation {
            case .linear: return input
            case .relu:
                node("Relu", [input], [name + "_relu"])
                return name + "_relu"
            case .relu6:
                constant("zero", [0], dims: [])
                constant("six", [6], dims: [])
                node("Clip", [input, "zero", "six"], [name + "_relu6"])
                return name + "_relu6"
            }
        }

        /// Pads [top, left, bottom, right] of a convolution's geometry.
        static func pads(_ g: ConvGeometry) -> [Int] {
            let bottom = max((g.outHeight - 1) * g.strideHeight + g.kernelHeight - g.inHeight - g.padTop, 0)
            let right = max((g.outWidth - 1) * g.strideWidth + g.kernelWidth - g.inWidth - g.padLeft, 0)
            return [g.padTop, g.padLeft, bottom, right]
        }

        /// Adds one layer; returns its output's name and whether it is still a feature map (NCHW).
        mutating func add(_ layer: Layer, index: Int, name: String, inputs: [String], inputSpatial: [Bool]) throws -> (String, Bool) {
            switch layer {
            case let conv as Conv2D:
                let g = conv.geometry!
                let kernel = try values(name + ".kernel")
                let (kh, kw, c, f) = (conv.kernelSize.0, conv.kernelSize.1, g.channels, conv.filters)
                var w = [Float](repeating: 0, count: kernel.count)
                for i in 0..<kh { for j in 0..<kw { for ch in 0..<c { for o in 0..<f {
                    w[((o * c + ch) * kh + i) * kw + j] = kernel[((i * kw + j) * c + ch) * f + o]
                } } } }
                constant(name + ".weight", w, dims: [f, c, kh, kw])
                var args = [inputs[0], name + ".weight"]
                if conv.useBias {
                    constant(name + ".bias", try values(name + ".bias"), dims: [f])
                    args.append(name + ".bias")
                }
                node("Conv", args, [name], ints: ["kernel_shape": [kh, kw], "strides": [conv.strides.0, conv.strides.1],
                                                  "pads": Self.pads(g)])
                return (activation(conv.activation, name, name: name), true)
            case let depthwise as DepthwiseConv2D:
                let g = depthwise.geometry!
                let kernel = try values(name + ".kernel")
                let (k, c) = (depthwise.kernelSize, g.channels)
                var w = [Float](repeating: 0, count: kernel.count)
                for i in 0..<k { for j in 0..<k { for ch in 0..<c { w[(ch * k + i) * k + j] = kernel[(i * k + j) * c + ch] } } }
                constant(name + ".weight", w, dims: [c, 1, k, k])
                var args = [inputs[0], name + ".weight"]
                if depthwise.useBias {
                    constant(name + ".bias", try values(name + ".bias"), dims: [c])
                    args.append(name + ".bias")
                }
                node("Conv", args, [name], ints: ["kernel_shape": [k, k], "strides": [depthwise.stride, depthwise.stride],
                                                  "pads": Self.pads(g)], int: ["group": c])
                return (activation(depthwise.activation, name, name: name), true)
            case let bn as BatchNorm:
                let c = try values(name + ".gamma").count
                for (part, slot) in [("scale", "gamma"), ("bias", "beta"), ("mean", "moving_mean"), ("var", "moving_variance")] {
                    constant("\(name).\(part)", try values("\(name).\(slot)"), dims: [c])
                }
                node("BatchNormalization", [inputs[0], name + ".scale", name + ".bias", name + ".mean", name + ".var"], [name],
                     float: ["epsilon": bn.epsilon])
                return (activation(bn.activation, name, name: name), inputSpatial[0])
            case let dense as Dense:
                let kernel = try values(name + ".kernel")
                let units = dense.units
                constant(name + ".weight", kernel, dims: [kernel.count / units, units])
                constant(name + ".bias", try values(name + ".bias"), dims: [units])
                node("Gemm", [inputs[0], name + ".weight", name + ".bias"], [name])
                return (activation(dense.activation, name, name: name), false)
            case let pool as MaxPool2D:
                node("MaxPool", inputs, [name], ints: ["kernel_shape": [pool.poolSize, pool.poolSize],
                                                      "strides": [pool.stride, pool.stride]])
                return (name, true)
            case is GlobalAveragePool:
                node("GlobalAveragePool", inputs, [name + "_pooled"])
                node("Flatten", [name + "_pooled"], [name], int: ["axis": 1])
                return (name, false)
            case is Flatten:
                guard inputSpatial[0] else { return (inputs[0], false) }
                // Back to NHWC first, so the features come in the order the next dense layer learned.
                node("Transpose", inputs, [name + "_nhwc"], ints: ["perm": [0, 2, 3, 1]])
                node("Flatten", [name + "_nhwc"], [name], int: ["axis": 1])
                return (name, false)
            case let add as Add:
                node("Add", inputs, [name])
                return (activation(add.activation, name, name: name), inputSpatial[0])
            case let a as ActivationLayer:
                return (activation(a.activation, inputs[0], name: name), inputSpatial[0])
            case is Dropout:
                return (inputs[0], inputSpatial[0])  // the identity at inference
            default:
                throw UnsupportedLayer(description: "ONNX export does not know the layer \(name) (\(layer.kind))")
            }
        }
    }
}
