import CatdogSupport
import Dispatch

/// A directed acyclic graph of layers with all parameters in one flat buffer and all
/// gradients in a mirror of it (llm.c), so the all-reduce is one call and the optimizer
/// one loop. Node 0 is the input; nodes are stored in topological order.
public final class Network {
    public struct Node {
        public let layer: Layer?
        public let inputs: [Int]
        public let shape: FeatureShape
        public let name: String
    }

    /// Where one named tensor lives in the flat parameter or state buffer.
    public struct TensorSlot: Sendable {
        public let name: String
        public let shape: [Int]
        public let offset: Int
        public let count: Int
        public let decays: Bool
        public let initializer: Initializer
        /// No value may be negative (a variance).
        public var nonNegative = false
    }

    /// The first negative value of a slot that may hold none (a variance) in `buffer`, laid
    /// out as `slots` say (this network's parameters or state, or a copy of them).
    public static func firstNegative(in buffer: UnsafePointer<Float>, slots: [TensorSlot]) -> (slot: String, index: Int)? {
        for slot in slots where slot.nonNegative {
            if let bad = UnsafeBufferPointer(start: buffer + slot.offset, count: slot.count).firstIndex(where: { $0 < 0 }) {
                return (slot.name, bad)
            }
        }
        return nil
    }

    public let nodes: [Node]
    public let parameterSlots: [TensorSlot]
    public let stateSlots: [TensorSlot]
    public let parameters: FloatBuffer
    public let gradients: FloatBuffer
    /// Non-trainable state (BatchNorm moving statistics).
    public let state: FloatBuffer
    public private(set) var maxBatch = 0

    /// Each node's activation: a pointer into one of `activationPool`'s buffers (its own, or
    /// after `reserveForInference` one it shares with nodes not alive at the same time).
    private var activations: [UnsafeMutablePointer<Float>] = []
    private var activationPool: [FloatBuffer] = []
    /// Set by `reserveForInference`: activations share buffers and there are no gradients.
    public private(set) var inferenceOnly = false
    private var inferenceKeep: Set<Int> = []
    /// Gradient of each node's activation: a pointer into one of `gradientPool`'s buffers,
    /// which nodes whose gradients are never alive at the same time share.
    private var dActivations: [UnsafeMutablePointer<Float>] = []
    private var gradientPool: [FloatBuffer] = []
    /// Nodes whose gradient buffer must be zeroed just before node i's backward (their first writer).
    private var zeroBefore: [[Int]] = []
    /// Per node, the activation code its backward applies to its input gradient for the node
    /// that made that input (`PassContext.inputGradientMask`), and whether a node's output
    /// gradient arrives masked so (`outputGradientMasked`): `activationMaskPlan`.
    private var inputGradientMask: [Int32] = []
    private var outputGradientMasked: [Bool] = []
    /// Per node: a convolution that fills the 2x2 max pool reading it (`Conv2D.poolsInto`).
    private var poolsIntoReader: [Bool] = []
    /// Per node: a BatchNorm that writes the addition reading it (`BatchNorm.addsInto`).
    private var addsIntoReader: [Bool] = []
    /// Whether a layer's activation mask may be left to the one layer that reads its output
    /// (a ReLU before a max pool), and a layer may write the output of the one layer that reads
    /// it (a convolution pooling into its pool, a BatchNorm adding into its addition); off,
    /// every layer does its own pass (the same bits either way).
    public var handsOnActivationMasks = true
    private var inputPointers: [[UnsafeMutablePointer<Float>]] = []
    private var dInputPointers: [[UnsafeMutablePointer<Float>?]] = []
    private let scratch: Scratch
    public var convolution: ConvolutionOptions { scratch.convolution }

    /// Per-node seconds spent in forward and backward, summed while `profiling` is on.
    public var profiling = false
    public private(set) var forwardSeconds: [Double] = []
    public private(set) var backwardSeconds: [Double] = []

    public func resetProfile() {
        forwardSeconds = .init(repeating: 0, count: nodes.count)
        backwardSeconds = .init(repeating: 0, count: nodes.count)
    }

    @inline(__always) private func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    public var inputShape: FeatureShape { nodes[0].shape }
    public var outputShape: FeatureShape { nodes[nodes.count - 1].shape }
    public var parameterCount: Int { parameters.count }
    public var forwardFLOPs: Int { nodes.reduce(0) { $0 + ($1.layer?.forwardFLOPs ?? 0) } }
    /// Bytes `reserve` sets aside per sample of the batch: every node's activation, its
    /// gradient, and the layers' own workspaces (BatchNorm's x̂, dropout's mask, max pooling's
    /// winners). (The micro-batch size that fits a memory budget follows from it.)
    public var activationBytesPerSample: Int {
        (nodes.reduce(0) { $0 + $1.shape.count } + Network.gradientPlan(nodes).sizes.reduce(0, +)) * 4
            + workspaceBytesPerSample(training: true)
    }

    private func workspaceBytesPerSample(training: Bool) -> Int {
        nodes.reduce(0) { $0 + ($1.layer?.workspaceBytesPerSample(training: training) ?? 0) }
    }

    /// Which gradient buffer each node uses, and each buffer's size per sample. Backward runs
    /// from the last node down; node i's gradient is alive from the backward of its last
    /// consumer (which first adds into it) to its own, so nodes whose intervals do not meet
    /// can share one buffer (greedy interval colouring). The input (node 0) needs none.
    static func gradientPlan(_ nodes: [Node]) -> (buffer: [Int], sizes: [Int]) {
        var lastConsumer = nodes.indices.map { $0 }
        for (j, node) in nodes.enumerated() { for i in node.inputs { lastConsumer[i] = max(lastConsumer[i], j) } }
        var buffer = [Int](repeating: -1, count: nodes.count)
        var sizes: [Int] = []
        var freeAfter: [Int] = []  // per buffer: the lowest node index its current occupant is alive to
        // Interval of node i (in backward time, high to low): [lastConsumer[i], i].
        for i in nodes.indices.dropFirst().sorted(by: { (lastConsumer[$0], $0) > (lastConsumer[$1], $1) }) {
            let candidates = sizes.indices.filter { freeAfter[$0] > lastConsumer[i] }
            let count = nodes[i].shape.count
            // The free buffer closest in size (a larger one first), else a new one.
            let pick = candidates.min { a, b in
                let fa = sizes[a] >= count, fb = sizes[b] >= count
                if fa != fb { return fa }
                return fa ? sizes[a] < sizes[b] : sizes[a] > sizes[b]
            }
            if let pick {
                buffer[i] = pick
                sizes[pick] = max(sizes[pick], count)
                freeAfter[pick] = i
            } else {
                buffer[i] = sizes.count
                sizes.append(count)
                freeAfter.append(i)
            }
        }
        return (buffer, sizes)
    }

    /// With `sharing`, the network computes with that network's parameter, gradient and state
    /// buffers (the same objects, not copies), which must have the same layout: the same model
    /// at another input size, for models whose parameters do not depend on it (global pooling).
    /// Progressive resizing trains through such a network.
    init(input: FeatureShape, layers: [(Layer, [Int])], convolution: ConvolutionOptions, sharing: Network? = nil) throws {
        scratch = Scratch(convolution: convolution)
        let nodes = try Network.configure(input: input, layers: layers)
        self.nodes = nodes

        var parameterSlots: [TensorSlot] = []
        var stateSlots: [TensorSlot] = []
        var parameterOffsets: [Int] = []
        var stateOffsets: [Int] = []
        var p = 0, s = 0
        for node in nodes {
            parameterOffsets.append(p)
            stateOffsets.append(s)
            guard let layer = node.layer else { continue }
            for spec in layer.parameterSpecs {
                parameterSlots.append(.init(name: "\(node.name).\(spec.name)", shape: spec.shape, offset: p,
                                            count: spec.count, decays: spec.decays, initializer: spec.initializer,
                                            nonNegative: spec.nonNegative))
                p += spec.count
            }
            for spec in layer.stateSpecs {
                stateSlots.append(.init(name: "\(node.name).\(spec.name)", shape: spec.shape, offset: s,
                                        count: spec.count, decays: false, initializer: spec.initializer,
                                        nonNegative: spec.nonNegative))
                s += spec.count
            }
        }
        self.parameterSlots = parameterSlots
        self.stateSlots = stateSlots
        if let sharing {
            let same = { (a: [TensorSlot], b: [TensorSlot]) in
                a.count == b.count && zip(a, b).allSatisfy { $0.name == $1.name && $0.shape == $1.shape && $0.offset == $1.offset }
            }
            guard same(parameterSlots, sharing.parameterSlots), same(stateSlots, sharing.stateSlots) else {
                throw ShapeError("the network at \(input.height)x\(input.width) has other parameters than at \(sharing.inputShape.height)x\(sharing.inputShape.width): only a model with global pooling (e.g. resnet) can change its input size")
            }
            parameters = sharing.parameters
            gradients = sharing.gradients
            state = sharing.state
        } else {
            parameters = FloatBuffer(count: p)
            gradients = FloatBuffer(count: p)
            state = FloatBuffer(count: s)
        }
        for (index, node) in nodes.enumerated() {
            node.layer?.bind(parameters: parameters.pointer + parameterOffsets[index],
                             gradients: gradients.pointer + parameterOffsets[index],
                             state: state.pointer + stateOffsets[index])
        }
        if sharing == nil { initialize(seed: 0) }
    }

    /// Fixes every layer's shapes and names, in topological order; allocates no buffers.
    static func configure(input: FeatureShape, layers: [(Layer, [Int])]) throws -> [Node] {
        var nodes = [Node(layer: nil, inputs: [], shape: input, name: "input")]
        var counters: [String: Int] = [:]
        for (layer, inputs) in layers {
            guard !inputs.isEmpty, inputs.allSatisfy({ $0 >= 0 && $0 < nodes.count }) else {
                throw ShapeError("layer \(layer.kind) refers to a node that does not exist yet")
            }
            let shape = try layer.configure(inputs: inputs.map { nodes[$0].shape })
            counters[layer.kind, default: 0] += 1
            let name = "\(layer.kind)_\(counters[layer.kind]!)"
            if let dropout = layer as? Dropout { dropout.streamID = UInt64(nodes.count) }
            nodes.append(Node(layer: layer, inputs: inputs, shape: shape, name: name))
        }
        return nodes
    }

    /// Keras's initialisation: Glorot-uniform kernels, zero biases, BatchNorm γ = 1, β = 0,
    /// moving mean 0 and variance 1. Each tensor draws from its own keyed stream.
    public func initialize(seed: UInt64) {
        for (index, slot) in parameterSlots.enumerated() {
            fill(parameters.pointer + slot.offset, slot, Random(seed: seed, 0x1417, UInt64(index)))
        }
        for slot in stateSlots { fill(state.pointer + slot.offset, slot, Random(seed: seed)) }
    }

    private func fill(_ p: UnsafeMutablePointer<Float>, _ slot: TensorSlot, _ random: Random) {
        var random = random
        switch slot.initializer {
        case .zeros: p.update(repeating: 0, count: slot.count)
        case .ones: p.update(repeating: 1, count: slot.count)
        case .glorotUniform(let fanIn, let fanOut):
            let limit = (6 / Float(fanIn + fanOut)).squareRoot()
            for i in 0..<slot.count { p[i] = random.uniform(-limit, limit) }
        }
    }

    /// Allocates activations, their gradients and workspaces for batches of up to `maxBatch`
    /// samples, for training (`forward` and `backward`).
    public func reserve(maxBatch: Int) {
        guard maxBatch > self.maxBatch || inferenceOnly else { return }
        self.maxBatch = maxBatch
        inferenceOnly = false
        activationPool = nodes.map { FloatBuffer(count: maxBatch * $0.shape.count) }
        activations = activationPool.map(\.pointer)
        let plan = Network.gradientPlan(nodes)
        gradientPool = plan.sizes.map { FloatBuffer(count: maxBatch * $0) }
        let none = activations[0]  // node 0's gradient is never used
        dActivations = nodes.indices.map { plan.buffer[$0] < 0 ? none : gradientPool[plan.buffer[$0]].pointer }
        var lastConsumer = nodes.indices.map { $0 }
        for (j, node) in nodes.enumerated() { for i in node.inputs { lastConsumer[i] = max(lastConsumer[i], j) } }
        zeroBefore = nodes.map { _ in [] }
        for i in nodes.indices.dropFirst() { zeroBefore[lastConsumer[i]].append(i) }
        inputPointers = nodes.map { node in node.inputs.map { activations[$0] } }
        dInputPointers = nodes.map { node in node.inputs.map { $0 == 0 ? nil : dActivations[$0] } }
        let masks = Network.activationMaskPlan(nodes)
        (inputGradientMask, outputGradientMasked) = (masks.inputGradientMask, masks.outputGradientMasked)
        poolsIntoReader = masks.poolReader.map { $0 != nil }
        for (i, node) in nodes.enumerated() {
            guard let conv = node.layer as? Conv2D else { continue }
            conv.poolsInto = masks.poolReader[i].flatMap { nodes[$0].layer as? MaxPool2D }
            conv.poolOutput = masks.poolReader[i].map { activations[$0] }
        }
        let sums = Network.additionPlan(nodes)
        addsIntoReader = sums.map { $0 != nil }
        for (i, node) in nodes.enumerated() {
            guard let norm = node.layer as? BatchNorm else { continue }
            norm.addsInto = sums[i].flatMap { sum in
                (nodes[sum.add].layer as? Add).map { ($0, activations[sum.addend], activations[sum.add]) }
            }
        }
        for node in nodes { node.layer?.reserve(maxBatch: maxBatch, scratch: scratch, training: true) }
    }

    /// Where a node j that can mask its input gradient (`masksInputGradient`) is the only
    /// reader of node i, whose layer has a maskable activation: j masks (code per node) and i
    /// takes its output gradient as masked. Where i is a convolution and j a 2x2 max pool of
    /// stride 2, `poolReader[i]` = j: i may fill the pool itself (`Conv2D.poolsInto`), its own
    /// output then read by nothing (its backward reads it only for the mask).
    public static func activationMaskPlan(_ nodes: [Node])
        -> (inputGradientMask: [Int32], outputGradientMasked: [Bool], poolReader: [Int?]) {
        var mask = [Int32](repeating: 0, count: nodes.count), masked = [Bool](repeating: false, count: nodes.count)
        var poolReader = [Int?](repeating: nil, count: nodes.count)
        var readers = [Int](repeating: 0, count: nodes.count)
        for node in nodes { for i in node.inputs { readers[i] += 1 } }
        for (j, node) in nodes.enumerated() {
            guard let layer = node.layer, layer.masksInputGradient, node.inputs.count == 1 else { continue }
            let i = node.inputs[0]
            guard i > 0, readers[i] == 1, let activation = nodes[i].layer?.maskableActivation, activation != .linear else { continue }
            mask[j] = activation.kernelCode
            masked[i] = true
            if nodes[i].layer is Conv2D, (layer as? MaxPool2D)?.poolsTwoByTwo == true { poolReader[i] = j }
        }
        return (mask, masked, poolReader)
    }

    /// Where node j, an addition, is the only reader of node i, a BatchNorm without activation,
    /// and j's other input k comes before i: `[i]` = (j, k). A training forward of i may then
    /// write j's output itself (`BatchNorm.addsInto`): resnet's blocks end BatchNorm → Add(skip).
    public static func additionPlan(_ nodes: [Node]) -> [(add: Int, addend: Int)?] {
        var plan = [(add: Int, addend: Int)?](repeating: nil, count: nodes.count)
        var readers = [Int](repeating: 0, count: nodes.count)
        for node in nodes { for i in node.inputs { readers[i] += 1 } }
        for (j, node) in nodes.enumerated() {
            guard node.layer is Add, node.inputs.count == 2 else { continue }
            for (slot, i) in node.inputs.enumerated() {
                let k = node.inputs[1 - slot]
                guard i > 0, k < i, readers[i] == 1, let norm = nodes[i].layer as? BatchNorm, norm.activation == .linear else { continue }
                plan[i] = (j, k)
                break
            }
        }
        return plan
    }

    /// Allocates for inference only (`forward`, no `backward`), in a fraction of `reserve`'s
    /// memory: no gradients, and activations share buffers where their lives do not meet
    /// (`activationPlan`). After `forward`, `activation(k)` holds node k's output only for the
    /// nodes in `keep`, the input and the last node. A later `reserve` allocates for training.
    public func reserveForInference(maxBatch: Int, keep: Set<Int> = []) {
        guard !inferenceOnly || maxBatch > self.maxBatch || !keep.isSubset(of: inferenceKeep) else { return }
        self.maxBatch = maxBatch
        inferenceOnly = true
        inferenceKeep = keep
        let plan = Network.activationPlan(nodes, keep: keep)
        activationPool = plan.sizes.map { FloatBuffer(count: maxBatch * $0) }
        activations = plan.buffer.map { activationPool[$0].pointer }
        gradientPool = []
        dActivations = []
        zeroBefore = nodes.map { _ in [] }
        inputPointers = nodes.map { node in node.inputs.map { activations[$0] } }
        dInputPointers = nodes.map { node in node.inputs.map { _ in nil } }
        for node in nodes { node.layer?.reserve(maxBatch: maxBatch, scratch: scratch, training: false) }
    }

    /// Bytes `reserveForInference` sets aside per sample of the batch, keeping `keep`.
    public func inferenceBytesPerSample(keep: Set<Int> = []) -> Int {
        Network.activationPlan(nodes, keep: keep).sizes.reduce(0, +) * 4 + workspaceBytesPerSample(training: false)
    }

    /// Which buffer each node's activation uses in inference, and each buffer's size per sample.
    /// Node i's activation lives from its forward to its last consumer's (inclusive, so no layer
    /// writes over its own input); the input, the last node and `keep` live to the end. Greedy
    /// interval colouring in node order, each node taking the smallest free buffer that fits
    /// (else growing the largest free one, else a new one).
    static func activationPlan(_ nodes: [Node], keep: Set<Int>) -> (buffer: [Int], sizes: [Int]) {
        var end = nodes.indices.map { $0 }
        for (j, node) in nodes.enumerated() { for i in node.inputs { end[i] = max(end[i], j) } }
        for i in keep.union([0, nodes.count - 1]) where nodes.indices.contains(i) { end[i] = nodes.count }
        var buffer = [Int](repeating: -1, count: nodes.count), sizes: [Int] = [], freeAt: [Int] = []
        for (i, node) in nodes.enumerated() {
            let need = node.shape.count
            let free = sizes.indices.filter { freeAt[$0] < i }
            let chosen = free.filter { sizes[$0] >= need }.min { sizes[$0] < sizes[$1] } ?? free.max { sizes[$0] < sizes[$1] }
            if let b = chosen {
                sizes[b] = max(sizes[b], need)
                buffer[i] = b
                freeAt[b] = end[i]
            } else {
                buffer[i] = sizes.count
                sizes.append(need)
                freeAt.append(end[i])
            }
        }
        return (buffer, sizes)
    }

    /// The input buffer, (maxBatch, H, W, C): fill it, then call `forward`.
    public var input: UnsafeMutablePointer<Float> { activations[0] }

    /// Output of node `index` after `forward`, (batch, shape).
    public func activation(_ index: Int) -> UnsafeMutablePointer<Float> { activations[index] }

    /// Runs every layer on the first `batch` samples of `input`; returns the logits (batch,).
    /// With `from: k` (a cut, see `isCut`) it starts from node k's activation, which the
    /// caller has filled, and runs only the layers after it.
    @discardableResult
    public func forward(batch: Int, context: PassContext, from first: Int = 0) -> UnsafeMutablePointer<Float> {
        precondition(batch <= maxBatch, "reserve(maxBatch:) first")
        precondition(!(inferenceOnly && context.training), "reserveForInference keeps no training buffers: reserve(maxBatch:) to train")
        if profiling, forwardSeconds.count != nodes.count { resetProfile() }
        let pooling = handsOnActivationMasks && context.training && !inferenceOnly
        for index in (first + 1)..<nodes.count {
            let start = profiling ? now() : 0
            var layerContext = context
            layerContext.poolsIntoReader = pooling && poolsIntoReader[index]
            layerContext.addsIntoReader = pooling && addsIntoReader[index]
            nodes[index].layer!.forward(inputs: inputPointers[index], output: activations[index],
                                        batch: batch, context: layerContext)
            if profiling { forwardSeconds[index] += Double(now() - start) * 1e-9 }
        }
        return activations[nodes.count - 1]
    }

    /// Back-propagates dLoss/dLogits (batch,), adding into `gradients`. `layerDone(i)` is
    /// called after node i's backward, so a caller can start reducing gradients that are final.
    /// With `stopAt: k` it back-propagates only through the layers after node k (whose
    /// parameters then get no gradient).
    public func backward(dLogits: UnsafePointer<Float>, batch: Int, context: PassContext, stopAt first: Int = 0,
                         layerDone: ((Int) -> Void)? = nil) {
        precondition(!inferenceOnly, "reserveForInference allocates no gradients: reserve(maxBatch:) to train")
        let last = nodes.count - 1
        dActivations[last].update(from: dLogits, count: batch * nodes[last].shape.count)
        if profiling, backwardSeconds.count != nodes.count { resetProfile() }
        for index in stride(from: last, through: first + 1, by: -1) {
            let start = profiling ? now() : 0
            defer { if profiling { backwardSeconds[index] += Double(now() - start) * 1e-9 } }
            // A gradient buffer is shared with nodes that are not alive now: its first writer
            // (this node) writes it where the layer can (an input it reads once), else it is
            // zeroed first.
            let layer = nodes[index].layer!, inputs = nodes[index].inputs
            var layerContext = context
            layerContext.freshInputGradients = 0
            // Node i's reader j > i ran first, with i's gradient (i > first), and masked it.
            layerContext.inputGradientMask = handsOnActivationMasks ? inputGradientMask[index] : 0
            layerContext.outputGradientMasked = handsOnActivationMasks && outputGradientMasked[index]
            for i in zeroBefore[index] where i > first && i != last {
                if layer.writesFreshInputGradients, let k = inputs.firstIndex(of: i), k < 64, inputs.lastIndex(of: i) == k {
                    layerContext.freshInputGradients |= 1 << UInt64(k)
                } else {
                    dActivations[i].update(repeating: 0, count: batch * nodes[i].shape.count)
                }
            }
            // Nothing at or below the cut needs dInput: skip computing it.
            let dInputs = first > 0
                ? zip(inputs, dInputPointers[index]).map { $0 <= first ? nil : $1 } : dInputPointers[index]
            layer.backward(
                inputs: inputPointers[index], output: activations[index],
                dOutput: dActivations[index], dInputs: dInputs,
                batch: batch, context: layerContext)
            layerDone?(index)
        }
    }

    /// Whether node `k` separates the graph: every later node reads only node k or later ones,
    /// so the layers after it can run (and train) from node k's activation alone.
    public func isCut(_ k: Int) -> Bool {
        nodes.indices.contains(k) && nodes[(k + 1)...].allSatisfy { $0.inputs.allSatisfy { $0 >= k } }
    }

    /// The parameters of the layers after node `k`: a suffix of the flat buffer, because
    /// parameters are laid out in node order.
    public func parameterRange(after k: Int) -> Range<Int> {
        let start = nodes.indices.dropFirst(k + 1).lazy.map { self.parameterRange(ofNode: $0) }.first { !$0.isEmpty }
        return (start?.lowerBound ?? parameterCount)..<parameterCount
    }

    /// Where the tensors that take L2 weight decay (kernels) lie in the flat buffers, from
    /// offset `start` on.
    public func decayingRanges(from start: Int = 0) -> [Range<Int>] {
        parameterSlots.filter { $0.decays && $0.offset >= start }.map { $0.offset..<($0.offset + $0.count) }
    }

    /// Parameter range [start, end) owned by node `index`.
    public func parameterRange(ofNode index: Int) -> Range<Int> {
        let prefix = nodes[index].name + "."
        let slots = parameterSlots.filter { $0.name.hasPrefix(prefix) }
        guard let first = slots.first, let last = slots.last else { return 0..<0 }
        return first.offset..<(last.offset + last.count)
    }

    /// Layer-by-layer description for `models --verbose` and logs.
    public var layerSummary: [String] { Network.layerSummary(nodes) }

    static func layerSummary(_ nodes: [Node]) -> [String] {
        nodes.dropFirst().map { node in
            "\(node.name.padding(toLength: 24, withPad: " ", startingAt: 0)) \(node.layer!.summary.padding(toLength: 34, withPad: " ", startingAt: 0)) -> \(node.shape)"
        }
    }
}

/// Builds a network layer by layer; `add` chains onto the previous node unless told otherwise.
public struct NetworkBuilder {
    public let input: FeatureShape
    private var layers: [(Layer, [Int])] = []

    public init(input: FeatureShape) { self.input = input }

    /// Index of the most recently added node (0 = the input).
    public var last: Int { layers.count }

    @discardableResult
    public mutating func add(_ layer: Layer, inputs: [Int]? = nil) -> Int {
        layers.append((layer, inputs ?? [last]))
        return last
    }

    public func build(convolution: ConvolutionOptions = .init(), sharing: Network? = nil) throws -> Network {
        try Network(input: input, layers: layers, convolution: convolution, sharing: sharing)
    }

    /// What `catdog-dist models` lists (the parameters, the forward FLOPs of an image, each
    /// layer's line), found by configuring the layers' shapes only: `simple` at 1024 px built
    /// would allocate 4 GB.
    public func outline() throws -> (parameters: Int, forwardFLOPs: Int, layers: [String]) {
        let nodes = try Network.configure(input: input, layers: layers)
        return (nodes.reduce(0) { $0 + ($1.layer?.parameterSpecs.reduce(0) { $0 + $1.count } ?? 0) },
                nodes.reduce(0) { $0 + ($1.layer?.forwardFLOPs ?? 0) }, Network.layerSummary(nodes))
    }

    /// The parameter and state counts `build` would allocate, found by configuring the layers'
    /// shapes only: a cheap check of an image size, or of what a file may hold for this model.
    public func counts() throws -> (parameters: Int, state: Int) {
        let nodes = try Network.configure(input: input, layers: layers)
        return nodes.reduce((0, 0)) { total, node in
            (total.0 + (node.layer?.parameterSpecs.reduce(0) { $0 + $1.count } ?? 0),
             total.1 + (node.layer?.stateSpecs.reduce(0) { $0 + $1.count } ?? 0))
        }
    }
}
