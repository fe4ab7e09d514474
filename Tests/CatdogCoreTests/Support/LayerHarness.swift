import CatdogEngine
import CatdogSupport
import XCTest

/// Runs one layer outside a network, with its own parameter, gradient and state buffers,
/// so tests can reach the input gradients that a network never computes for its input.
final class LayerHarness {
    let layer: Layer
    let batch: Int
    let inputShapes: [FeatureShape]
    let outputShape: FeatureShape
    let parameters: FloatBuffer
    let gradients: FloatBuffer
    let state: FloatBuffer
    let inputs: [FloatBuffer]
    let dInputs: [FloatBuffer]
    let output: FloatBuffer
    let dOutput: FloatBuffer
    let scratch: Scratch
    var context = PassContext(training: true, seed: 7, step: 3, firstSample: 0)

    init(_ layer: Layer, inputs shapes: [FeatureShape], batch: Int, seed: UInt64 = 1,
         convolution: ConvolutionOptions = .init()) throws {
        self.layer = layer
        scratch = Scratch(convolution: convolution)
        self.batch = batch
        inputShapes = shapes
        outputShape = try layer.configure(inputs: shapes)
        let parameterCount = layer.parameterSpecs.reduce(0) { $0 + $1.count }
        parameters = FloatBuffer(count: parameterCount)
        gradients = FloatBuffer(count: parameterCount)
        state = FloatBuffer(count: layer.stateSpecs.reduce(0) { $0 + $1.count })
        var random = Random(seed: seed, 1)
        var offset = 0
        for spec in layer.parameterSpecs {
            for i in offset..<(offset + spec.count) {
                parameters[i] = spec.initializer == .ones ? random.uniform(0.5, 1.5) : random.uniform(-0.5, 0.5)
            }
            offset += spec.count
        }
        offset = 0
        for spec in layer.stateSpecs {
            for i in offset..<(offset + spec.count) { state[i] = spec.initializer == .ones ? random.uniform(0.5, 1.5) : random.uniform(-0.5, 0.5) }
            offset += spec.count
        }
        layer.bind(parameters: parameters.pointer, gradients: gradients.pointer, state: state.pointer)
        layer.reserve(maxBatch: batch, scratch: scratch, training: true)
        inputs = shapes.map { shape in
            let b = FloatBuffer(count: batch * shape.count)
            for i in 0..<b.count { b[i] = random.uniform(-1, 1) }
            return b
        }
        dInputs = shapes.map { FloatBuffer(count: batch * $0.count) }
        output = FloatBuffer(count: batch * outputShape.count)
        dOutput = FloatBuffer(count: batch * outputShape.count)
    }

    func forward() {
        layer.forward(inputs: inputs.map(\.pointer), output: output.pointer, batch: batch, context: context)
    }

    /// Backward of upstream gradient `upstream` into zeroed input and parameter gradients.
    func backward(_ upstream: [Float]) {
        for (i, v) in upstream.enumerated() { dOutput[i] = v }
        gradients.zero()
        dInputs.forEach { $0.zero() }
        layer.backward(inputs: inputs.map(\.pointer), output: output.pointer, dOutput: dOutput.pointer,
                       dInputs: dInputs.map { Optional($0.pointer) }, batch: batch, context: context)
    }

    /// L = Σ r·y in double precision.
    func weightedSum(_ r: [Float]) -> Double {
        forward()
        var sum = 0.0
        for i in 0..<r.count { sum += Double(r[i]) * Double(output[i]) }
        return sum
    }

    /// Compares backward's gradients of L = Σ r·y with central differences of step `epsilon`
    /// for up to `samples` entries of every input and of the parameters. Passes when
    /// |analytic − numeric| ≤ absolute + relative·max(|analytic|, |numeric|).
    func checkGradients(epsilon: Float = 1e-2, absolute: Double = 2e-3, relative: Double = 2e-2,
                        samples: Int = 40, file: StaticString = #filePath, line: UInt = #line) {
        var random = Random(seed: 99)
        let r = (0..<output.count).map { _ in random.uniform(-1, 1) }
        forward()
        backward(r)
        var targets: [(String, FloatBuffer, FloatBuffer)] = zip(inputs, dInputs).enumerated().map { ("input \($0)", $1.0, $1.1) }
        if parameters.count > 0 { targets.append(("parameters", parameters, gradients)) }
        for (name, values, analytic) in targets {
            let indices = values.count <= samples ? Array(0..<values.count) : (0..<samples).map { _ in random.below(values.count) }
            for i in indices {
                let numeric = centralDifference(values, i, epsilon: epsilon) { weightedSum(r) }
                let a = Double(analytic[i])
                XCTAssertTrue(gradientAgrees(a, numeric, absolute: absolute, relative: relative),
                              "\(layer.kind): d\(name)[\(i)] analytic \(a) vs numeric \(numeric)", file: file, line: line)
            }
        }
    }
}
