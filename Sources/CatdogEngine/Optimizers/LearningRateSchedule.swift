import Foundation

/// Learning rate per step: linear warmup from lr/warmupSteps to lr, then a decay.
public struct LearningRateSchedule: Sendable, Codable, Equatable {
    public enum Decay: String, Sendable, Codable, CaseIterable {
        /// Half-cosine from lr to `minimumFactor`·lr over the remaining steps (Loshchilov & Hutter).
        case cosine
        /// Multiply by `stepFactor` every `stepEvery` steps.
        case step
        case constant
    }

    public var baseRate: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var decay: Decay
    public var minimumFactor: Float = 0.01
    public var stepEvery: Int = 1
    public var stepFactor: Float = 0.1

    public init(baseRate: Float, warmupSteps: Int = 0, totalSteps: Int, decay: Decay = .cosine) {
        self.baseRate = baseRate
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.decay = decay
    }

    /// The rate for update number `step` (0-based).
    public func rate(at step: Int) -> Float {
        if step < warmupSteps { return baseRate * Float(step + 1) / Float(warmupSteps) }
        switch decay {
        case .constant:
            return baseRate
        case .step:
            return baseRate * pow(stepFactor, Float((step - warmupSteps) / max(stepEvery, 1)))
        case .cosine:
            let span = max(totalSteps - warmupSteps, 1)
            let progress = min(Float(step - warmupSteps) / Float(span), 1)
            let cosine = 0.5 * (1 + cos(Float.pi * progress))
            return baseRate * (minimumFactor + (1 - minimumFactor) * cosine)
        }
    }
}
