import CKernels
import CatdogSupport
import Foundation

/// An optimizer updates the flat parameter buffer from the flat gradient buffer, keeping
/// its per-parameter state (moments) in buffers of the same length.
///
/// Formulas follow Keras 3 (`keras/src/optimizers/*.py`) so the 2017 study's
/// hyperparameters mean the same here. Ordered from simplest to most complex, as tinygrad does.
public protocol Optimizer: AnyObject {
    var kind: OptimizerKind { get }
    /// Completed updates; Adam's bias correction uses iterations + 1.
    var iterations: Int { get set }
    /// Named state buffers (e.g. "m", "v"), each as long as the parameters.
    var slots: [(name: String, buffer: FloatBuffer)] { get }
    /// The slots that sum or average squared gradients, so never hold a negative value (a
    /// checkpoint's are checked: a square root of one would turn the weights into NaN).
    var squaredSlots: Set<String> { get }
    /// Scalar state beyond `iterations` (Nadam's running μ product), for checkpoints.
    var scalarState: [String: Double] { get set }
    var hyperparameters: [String: Double] { get }
    func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, learningRate: Float)
    /// A training update of these `count` parameters: decoupled weight decay first
    /// (`decayWeights(decayFactor, ranges: decaying)`, ranges relative to `parameters`), then
    /// `step`, then, with `average`, the moving average of the result
    /// (`WeightAverage.update` with `averageDecay`, the same offsets).
    func update(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float,
                decayFactor: Float, decaying: [Range<Int>], average: UnsafeMutablePointer<Float>?, averageDecay: Float)
    /// Whether `update(slice:…)` may update some of the parameters at a time: an update of each
    /// parameter from its own gradient and state alone (all but Nadam and LAMB). A step then
    /// updates each bucket of gradients as its sums arrive, while later buckets are still on the
    /// network.
    var updatesInSlices: Bool { get }
    /// `update`'s work on the parameters `slice` of `0..<count` alone, with the same bits, and
    /// `iterations` unchanged: a step passes every parameter in one slice or another, then calls
    /// `finishUpdate()` once.
    func update(slice: Range<Int>, parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int,
                learningRate: Float, decayFactor: Float, decaying: [Range<Int>], average: UnsafeMutablePointer<Float>?,
                averageDecay: Float)
}

extension Optimizer {
    public var scalarState: [String: Double] { get { [:] } set {} }
    public var squaredSlots: Set<String> { [] }

    public var updatesInSlices: Bool { false }

    public func update(slice: Range<Int>, parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int,
                       learningRate: Float, decayFactor: Float, decaying: [Range<Int>], average: UnsafeMutablePointer<Float>?,
                       averageDecay: Float) {
        preconditionFailure("\(kind.rawValue) updates all its parameters at once")
    }

    /// Ends an update made in slices.
    public func finishUpdate() { iterations += 1 }

    /// The three passes one after another (Adam makes them one).
    public func update(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float,
                       decayFactor: Float, decaying: [Range<Int>], average: UnsafeMutablePointer<Float>?, averageDecay: Float) {
        decayWeights(decayFactor, ranges: decaying, parameters: parameters)
        step(parameters: parameters, gradients: gradients, learningRate: learningRate)
        if let average { WeightAverage.update(average, toward: parameters, count: count, decay: averageDecay) }
    }
}

/// An optimizer whose step moves each parameter by its own gradient and state alone (SGD,
/// AdaGrad, RMSProp): it updates in slices, each slice's decay, step and average one after
/// another, the same operations on each parameter as the three passes over all of them.
public protocol ElementwiseOptimizer: Optimizer {
    /// `step`'s work on the parameters `slice` alone, `iterations` unchanged.
    func step(slice: Range<Int>, parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, learningRate: Float)
}

extension ElementwiseOptimizer {
    public var updatesInSlices: Bool { true }

    public func update(slice: Range<Int>, parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int,
                       learningRate: Float, decayFactor: Float, decaying: [Range<Int>], average: UnsafeMutablePointer<Float>?,
                       averageDecay: Float) {
        precondition(slice.lowerBound >= 0 && slice.upperBound <= count)
        decayWeights(decayFactor, ranges: decaying.map { $0.clamped(to: slice) }.filter { !$0.isEmpty }, parameters: parameters)
        step(slice: slice, parameters: parameters, gradients: gradients, learningRate: learningRate)
        if let average {
            WeightAverage.update(average + slice.lowerBound, toward: parameters + slice.lowerBound, count: slice.count, decay: averageDecay)
        }
    }
}

public enum OptimizerKind: String, CaseIterable, Sendable, Codable {
    case sgd, adagrad, rmsprop, adam, nadam
    /// Adam with decoupled weight decay (Loshchilov & Hutter; PyTorch's and Keras's AdamW):
    /// the kernels shrink by lr·λ each step, w ← w·(1 − lr·λ), instead of λ·w joining the
    /// gradient, whose effect Adam's scaling would undo.
    case adamw
    /// LAMB (You et al. 2019): Adam's step scaled per tensor by the trust ratio ‖w‖/‖step‖, for
    /// large batches; weight decay decoupled as with adamw.
    case lamb

    /// Keras's default learning rate for each.
    public var defaultLearningRate: Float {
        switch self {
        case .sgd: 0.01
        case .adagrad, .rmsprop, .adam, .nadam, .adamw, .lamb: 0.001
        }
    }

    /// Buffers as large as the weights that `make` allocates (SGD's velocity even without
    /// momentum), for a memory estimate before anything is built.
    public var weightSizedBuffers: Int {
        switch self {
        case .sgd, .adagrad, .rmsprop: 1
        case .adam, .adamw, .nadam, .lamb: 2
        }
    }

    /// Weight decay applied to the weights (w·(1 − lr·λ)) rather than as an L2 gradient term.
    public var decouplesWeightDecay: Bool { self == .adamw || self == .lamb }

    /// `tensors`: where each tensor lies in the `count` parameters (LAMB's trust ratio is per
    /// tensor; without them the whole buffer is one).
    public func make(count: Int, momentum: Float = 0.9, nesterov: Bool = false, tensors: [Range<Int>] = []) -> Optimizer {
        switch self {
        case .lamb: Lamb(count: count, tensors: tensors.isEmpty ? [0..<count] : tensors)
        case .sgd: SGD(count: count, momentum: momentum, nesterov: nesterov)
        case .adagrad: AdaGrad(count: count)
        case .rmsprop: RMSProp(count: count)
        case .adam: Adam(count: count)
        case .adamw: Adam(count: count, kind: .adamw)
        case .nadam: Nadam(count: count)
        }
    }
}

/// SGD with momentum: m = μ·m − lr·g; w += m, or with Nesterov w += μ·m − lr·g.
public final class SGD: ElementwiseOptimizer {
    public let kind = OptimizerKind.sgd
    public let momentum: Float
    public let nesterov: Bool
    public var iterations = 0
    private let velocity: FloatBuffer

    public init(count: Int, momentum: Float = 0, nesterov: Bool = false) {
        self.momentum = momentum
        self.nesterov = nesterov
        velocity = FloatBuffer(count: count)
    }

    public var slots: [(name: String, buffer: FloatBuffer)] { momentum > 0 ? [("momentum", velocity)] : [] }
    public var hyperparameters: [String: Double] { ["momentum": Double(momentum), "nesterov": nesterov ? 1 : 0] }

    public func step(parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, learningRate lr: Float) {
        step(slice: 0..<velocity.count, parameters: w, gradients: g, learningRate: lr)
        iterations += 1
    }

    public func step(slice: Range<Int>, parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, learningRate lr: Float) {
        let m = velocity.pointer
        let mu = momentum
        if mu == 0 {
            for i in slice { w[i] -= lr * g[i] }
        } else if nesterov {
            for i in slice {
                m[i] = mu * m[i] - lr * g[i]
                w[i] += mu * m[i] - lr * g[i]
            }
        } else {
            for i in slice {
                m[i] = mu * m[i] - lr * g[i]
                w[i] += m[i]
            }
        }
    }
}

/// AdaGrad: a += g²; w −= lr·g/√(a + ε), a starts at 0.1, ε = 1e-7.
public final class AdaGrad: ElementwiseOptimizer {
    public let kind = OptimizerKind.adagrad
    public let epsilon: Float
    public var iterations = 0
    private let accumulator: FloatBuffer

    public init(count: Int, initialAccumulator: Float = 0.1, epsilon: Float = 1e-7) {
        self.epsilon = epsilon
        accumulator = FloatBuffer(count: count)
        accumulator.pointer.update(repeating: initialAccumulator, count: count)
    }

    public var slots: [(name: String, buffer: FloatBuffer)] { [("accumulator", accumulator)] }
    public var squaredSlots: Set<String> { ["accumulator"] }
    public var hyperparameters: [String: Double] { ["epsilon": Double(epsilon)] }

    public func step(parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, learningRate lr: Float) {
        step(slice: 0..<accumulator.count, parameters: w, gradients: g, learningRate: lr)
        iterations += 1
    }

    public func step(slice: Range<Int>, parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, learningRate lr: Float) {
        let a = accumulator.pointer
        for i in slice {
            a[i] += g[i] * g[i]
            w[i] -= lr * g[i] / (a[i] + epsilon).squareRoot()
        }
    }
}

/// RMSProp (Keras, not centred, no momentum): v = ρ·v + (1−ρ)·g²; w −= lr·g/√(v + ε),
/// ρ = 0.9, ε = 1e-7.
public final class RMSProp: ElementwiseOptimizer {
    public let kind = OptimizerKind.rmsprop
    public let rho: Float
    public let epsilon: Float
    public var iterations = 0
    private let velocity: FloatBuffer

    public init(count: Int, rho: Float = 0.9, epsilon: Float = 1e-7) {
        self.rho = rho
        self.epsilon = epsilon
        velocity = FloatBuffer(count: count)
    }

    public var slots: [(name: String, buffer: FloatBuffer)] { [("velocity", velocity)] }
    public var squaredSlots: Set<String> { ["velocity"] }
    public var hyperparameters: [String: Double] { ["rho": Double(rho), "epsilon": Double(epsilon)] }

    public func step(parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, learningRate lr: Float) {
        step(slice: 0..<velocity.count, parameters: w, gradients: g, learningRate: lr)
        iterations += 1
    }

    public func step(slice: Range<Int>, parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, learningRate lr: Float) {
        let v = velocity.pointer
        for i in slice {
            v[i] = rho * v[i] + (1 - rho) * g[i] * g[i]
            w[i] -= lr * g[i] / (v[i] + epsilon).squareRoot()
        }
    }
}

/// Adam (Kingma & Ba, Keras form): t = iterations + 1, α = lr·√(1−β₂ᵗ)/(1−β₁ᵗ),
/// m += (g − m)(1−β₁), v += (g² − v)(1−β₂), w −= α·m/(√v + ε); β₁ = 0.9, β₂ = 0.999, ε = 1e-7.
public final class Adam: Optimizer {
    /// `.adam`, or `.adamw` when the step's caller decays the weights (the update is the same).
    public let kind: OptimizerKind
    public let beta1, beta2, epsilon: Float
    public var iterations = 0
    private let m: FloatBuffer
    private let v: FloatBuffer

    public init(count: Int, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-7, kind: OptimizerKind = .adam) {
        self.kind = kind
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        m = FloatBuffer(count: count)
        v = FloatBuffer(count: count)
    }

    public var slots: [(name: String, buffer: FloatBuffer)] { [("m", m), ("v", v)] }
    public var squaredSlots: Set<String> { ["v"] }
    public var hyperparameters: [String: Double] {
        ["beta_1": Double(beta1), "beta_2": Double(beta2), "epsilon": Double(epsilon)]
    }

    public func step(parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, learningRate lr: Float) {
        // In C, vectorised for the CPU, with the same bits as the scalar formula on every one.
        catdog_adam_step(w, g, m.pointer, v.pointer, m.count, 1 - beta1, 1 - beta2, alpha(lr), epsilon)
        iterations += 1
    }

    /// α = lr·√(1−β₂ᵗ)/(1−β₁ᵗ) for the coming update.
    private func alpha(_ lr: Float) -> Float {
        let t = Double(iterations + 1)
        return Float(Double(lr) * (1 - pow(Double(beta2), t)).squareRoot() / (1 - pow(Double(beta1), t)))
    }

    /// Decay, step and moving average in one pass over memory (`catdog_adam_average_step`):
    /// the weights, moments, gradients and average are read and written once instead of the
    /// weights three times. Run by stretches, the decaying ones with w·(1 − decayFactor) as
    /// `decayWeights` computes it, the rest with w·1; the same bits as the three passes.
    public func update(parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, count: Int, learningRate lr: Float,
                       decayFactor: Float, decaying: [Range<Int>], average: UnsafeMutablePointer<Float>?, averageDecay d: Float) {
        update(slice: 0..<count, parameters: w, gradients: g, count: count, learningRate: lr, decayFactor: decayFactor,
               decaying: decaying, average: average, averageDecay: d)
        finishUpdate()
    }

    /// Each parameter's update reads only its own gradient, moments and average.
    public var updatesInSlices: Bool { true }

    public func update(slice: Range<Int>, parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, count: Int,
                       learningRate lr: Float, decayFactor: Float, decaying: [Range<Int>], average: UnsafeMutablePointer<Float>?,
                       averageDecay d: Float) {
        precondition(count == m.count && slice.lowerBound >= 0 && slice.upperBound <= count)
        let alpha = alpha(lr), keep = decayFactor > 0 ? 1 - decayFactor : 1
        func run(_ stretch: Range<Int>, keep: Float) {
            let range = stretch.clamped(to: slice)
            guard !range.isEmpty else { return }
            let o = range.lowerBound
            catdog_adam_average_step(w + o, g + o, m.pointer + o, v.pointer + o, average.map { $0 + o }, range.count,
                                     1 - beta1, 1 - beta2, alpha, epsilon, keep, d)
        }
        var done = 0
        for range in decaying.map({ $0.clamped(to: 0..<count) }).sorted(by: { $0.lowerBound < $1.lowerBound }) where range.lowerBound >= done {
            run(done..<range.lowerBound, keep: 1)
            run(range, keep: keep)
            done = range.upperBound
        }
        run(done..<count, keep: 1)
    }
}

/// LAMB (You et al. 2019, with PyTorch's bias correction): per tensor, the Adam step
/// u = m̂/(√v̂ + ε) with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ), then w −= lr·(‖w‖/‖u‖)·u, the ratio 1
/// when either norm is zero. The step of each tensor is then about lr·‖w‖, whatever the
/// gradient's scale: layers learn at rates that suit their own weights, which keeps large
/// batches and their larger learning rates stable. Weight decay is decoupled (applied before,
/// as with adamw), not inside the ratio.
public final class Lamb: Optimizer {
    public let kind = OptimizerKind.lamb
    public let beta1, beta2, epsilon: Float
    public var iterations = 0
    /// Ranges of the parameters (relative to the buffer `step` gets), one trust ratio each.
    public let tensors: [Range<Int>]
    private let m: FloatBuffer
    private let v: FloatBuffer

    public init(count: Int, tensors: [Range<Int>], beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-6) {
        precondition(tensors.allSatisfy { $0.lowerBound >= 0 && $0.upperBound <= count })
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.tensors = tensors
        m = FloatBuffer(count: count)
        v = FloatBuffer(count: count)
    }

    public var slots: [(name: String, buffer: FloatBuffer)] { [("m", m), ("v", v)] }
    public var squaredSlots: Set<String> { ["v"] }
    public var hyperparameters: [String: Double] {
        ["beta_1": Double(beta1), "beta_2": Double(beta2), "epsilon": Double(epsilon)]
    }

    public func step(parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, learningRate lr: Float) {
        let t = Double(iterations + 1)
        let c1 = Float(1 / (1 - pow(Double(beta1), t))), c2 = Float(1 / (1 - pow(Double(beta2), t)))
        let mp = m.pointer, vp = v.pointer
        var norms = [0.0, 0.0]
        // Two C passes per tensor (vectorised; the same bits on every instruction set): Adam's
        // moments with the norms of the weights and of the step, then the scaled step.
        for range in tensors {
            let o = range.lowerBound
            catdog_lamb_moments(w + o, g + o, mp + o, vp + o, range.count, 1 - beta1, 1 - beta2, c1, c2, epsilon, &norms)
            let (weightNorm, stepNorm) = (norms[0], norms[1])
            let ratio = weightNorm > 0 && stepNorm > 0 ? Float((weightNorm / stepNorm).squareRoot()) : 1
            catdog_lamb_apply(w + o, mp + o, vp + o, range.count, lr * ratio, c1, c2, epsilon)
        }
        iterations += 1
    }
}

/// Nadam (Dozat 2016, Keras form): μ_t = β₁(1 − ½·0.96ᵗ), Π_t = Π μ_i,
/// m̂ = μ_{t+1}·m/(1 − Π_t·μ_{t+1}) + (1 − μ_t)·g/(1 − Π_t), v̂ = v/(1 − β₂ᵗ), w −= lr·m̂/(√v̂ + ε).
public final class Nadam: Optimizer {
    public let kind = OptimizerKind.nadam
    public let beta1, beta2, epsilon: Float
    public var iterations = 0
    /// Π of μ_i over the steps taken so far.
    public private(set) var uProduct = 1.0
    private let m: FloatBuffer
    private let v: FloatBuffer

    public init(count: Int, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-7) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        m = FloatBuffer(count: count)
        v = FloatBuffer(count: count)
    }

    public var slots: [(name: String, buffer: FloatBuffer)] { [("m", m), ("v", v)] }
    public var squaredSlots: Set<String> { ["v"] }
    public var scalarState: [String: Double] {
        get { ["u_product": uProduct] }
        set { uProduct = newValue["u_product"] ?? 1 }
    }
    public var hyperparameters: [String: Double] {
        ["beta_1": Double(beta1), "beta_2": Double(beta2), "epsilon": Double(epsilon)]
    }

    public func step(parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, learningRate lr: Float) {
        let t = Double(iterations + 1)
        let b1 = Double(beta1)
        let uT = b1 * (1 - 0.5 * pow(0.96, t))
        let uNext = b1 * (1 - 0.5 * pow(0.96, t + 1))
        uProduct *= uT
        let uProductNext = uProduct * uNext
        let cm = Float(uNext / (1 - uProductNext))
        let cg = Float((1 - uT) / (1 - uProduct))
        let cv = Float(1 / (1 - pow(Double(beta2), t)))
        let mp = m.pointer, vp = v.pointer
        let ob1 = 1 - beta1, ob2 = 1 - beta2
        for i in 0..<m.count {
            mp[i] += (g[i] - mp[i]) * ob1
            vp[i] += (g[i] * g[i] - vp[i]) * ob2
            let mHat = cm * mp[i] + cg * g[i]
            w[i] -= lr * mHat / ((vp[i] * cv).squareRoot() + epsilon)
        }
        iterations += 1
    }
}

/// Decoupled weight decay over `ranges` (the kernels): w ← w·(1 − `factor`), factor = lr·λ.
public func decayWeights(_ factor: Float, ranges: [Range<Int>], parameters: UnsafeMutablePointer<Float>) {
    guard factor > 0 else { return }
    let keep = 1 - factor
    for range in ranges {
        for i in range { parameters[i] *= keep }
    }
}

/// L2 weight decay as a loss term (λ/2)·‖w‖² over `ranges` of the flat buffers (the kernels,
/// `Network.decayingRanges`): g += λ·w.
public func addWeightDecay(_ lambda: Float, ranges: [Range<Int>], parameters: UnsafePointer<Float>,
                           gradients: UnsafeMutablePointer<Float>) {
    guard lambda > 0 else { return }
    for range in ranges {
        for i in range { gradients[i] += lambda * parameters[i] }
    }
}
