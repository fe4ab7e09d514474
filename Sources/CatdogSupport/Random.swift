/// A counter-based random stream: the same (seed, keys) always give the same numbers.
///
/// Keyed streams make dropout masks and augmentation depend on (seed, step, layer, sample)
/// rather than on how many numbers were drawn before, so they survive a change of rank
/// count and a resume. The generator is SplitMix64 (Steele, Lea & Flood, 2014). Its hot
/// members are `@inlinable`: dropout and augmentation draw from it in other modules' inner loops.
@frozen public struct Random: Sendable {
    public var state: UInt64

    @inlinable
    public init(seed: UInt64, _ a: UInt64 = 0, _ b: UInt64 = 0, _ c: UInt64 = 0) {
        var s = Random.mix(seed &+ 0x9E37_79B9_7F4A_7C15)
        s = Random.mix(s ^ (a &* 0xBF58_476D_1CE4_E5B9))
        s = Random.mix(s ^ (b &* 0x94D0_49BB_1331_11EB))
        s = Random.mix(s ^ (c &* 0xD6E8_FEB8_6659_FD93))
        state = s
    }

    @inlinable @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    @inlinable @inline(__always)
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Random.mix(state)
    }

    /// Uniform in [0, 1) with 24 random bits.
    @inlinable @inline(__always)
    public mutating func uniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform in [low, high).
    @inlinable @inline(__always)
    public mutating func uniform(_ low: Float, _ high: Float) -> Float { low + (high - low) * uniform() }

    /// Uniform integer in 0..<bound.
    @inlinable @inline(__always)
    public mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    /// A permutation of 0..<count (Fisher–Yates).
    public mutating func permutation(_ count: Int) -> [Int] {
        var values = Array(0..<count)
        if count > 1 {
            for i in stride(from: count - 1, to: 0, by: -1) { values.swapAt(i, below(i + 1)) }
        }
        return values
    }
}
