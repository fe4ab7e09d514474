import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

/// The "reduce" of a data-parallel step (accumulate → reduce → apply): how every rank's
/// gradient buckets become, on every rank, the sum the optimizer applies. The step starts the
/// buckets in backward order, the same on every rank, and tests them while backward runs;
/// `wait` leaves the bucket's (possibly approximated) sum in place in the gradient buffer.
public protocol GradientReduction: AnyObject {
    /// For logs: "fp32", "fp16", "PowerSGD rank 4".
    var name: String { get }
    /// The buckets, in the order they are started.
    var buckets: [Range<Int>] { get }
    /// Bytes this rank sends into the all-reduces of `bucket` at update `update`.
    func wireBytes(bucket: Int, update: Int) -> Int
    /// Starts reducing bucket `bucket` of `gradients` for global update `update`.
    func start(bucket: Int, gradients: UnsafeMutablePointer<Float>, update: Int) throws -> PendingReduction
}

/// Every bucket summed exactly in fp32: the result does not depend on the rank count.
public final class FP32Reduction: GradientReduction {
    public let buckets: [Range<Int>]
    let comm: Communicator
    public var name: String { "fp32" }

    public init(buckets: [Range<Int>], communicator: Communicator) {
        self.buckets = buckets
        comm = communicator
    }

    public func wireBytes(bucket: Int, update: Int) -> Int { buckets[bucket].count * 4 }

    public func start(bucket: Int, gradients: UnsafeMutablePointer<Float>, update: Int) throws -> PendingReduction {
        let range = buckets[bucket]
        return try comm.startAllReduceSum(gradients + range.lowerBound, count: range.count)
    }
}

/// Horovod's fp16 compression: half the bytes, each gradient rounded to fp16 (and flushed to
/// zero below 6e-8) on the way.
public final class FP16Reduction: GradientReduction {
    public let buckets: [Range<Int>]
    let comm: Communicator
    private let half: UnsafeMutablePointer<Float16>
    private let offset: Int
    public var name: String { "fp16" }

    public init(buckets: [Range<Int>], communicator: Communicator) {
        self.buckets = buckets
        comm = communicator
        offset = buckets.map(\.lowerBound).min() ?? 0
        half = .allocate(capacity: max((buckets.map(\.upperBound).max() ?? 0) - offset, 1))
    }

    deinit { half.deallocate() }

    public func wireBytes(bucket: Int, update: Int) -> Int { buckets[bucket].count * 2 }

    public func start(bucket: Int, gradients: UnsafeMutablePointer<Float>, update: Int) throws -> PendingReduction {
        let range = buckets[bucket]
        guard comm.size > 1 else { return try comm.startAllReduceSum(gradients + range.lowerBound, count: range.count) }
        let h = half + (range.lowerBound - offset), g = gradients + range.lowerBound
        convertToHalf(g, h, count: range.count)
        return Then(try comm.startAllReduceSumHalf(h, count: range.count)) { convertFromHalf(h, g, count: range.count) }
    }

    /// A reduction followed by work once it completes.
    final class Then: PendingReduction {
        let inner: PendingReduction
        var after: (() -> Void)?
        init(_ inner: PendingReduction, _ after: @escaping () -> Void) {
            self.inner = inner
            self.after = after
        }
        func test() throws -> Bool {
            guard after != nil else { return true }
            guard try inner.test() else { return false }
            finish()
            return true
        }
        func wait() throws {
            guard after != nil else { return }
            try inner.wait()
            finish()
        }
        private func finish() {
            after?()
            after = nil
        }
    }
}
