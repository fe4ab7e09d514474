import CatdogData
import CatdogRun
import CatdogSupport
import Foundation

/// One rank's training batches, prepared one step ahead on a helper thread (double
/// buffering): while the network computes step s from one buffer, the helper decodes and
/// augments this rank's slice of step s+1 into the other. Memory is two local batches of
/// network input, whatever the size of the data set.
///
/// A file that passed the check before epoch 1 but fails now (changed on disk, a flaky
/// mount) is left out of its batch and counted; the rank still joins every collective, so
/// the ranks never disagree about a step.
public final class BatchLoader {
    public struct Batch {
        public let input: UnsafePointer<Float>
        public let labels: UnsafePointer<Float>
        /// Samples in the batch (fewer than the plan's slice when a file failed).
        public let count: Int
    }

    private let worker: Worker
    private let mainWriter: SampleWriter
    private let config: TrainingConfig
    private var lastSlot = 1
    /// Seconds the training thread waited for a batch that was not ready yet.
    public private(set) var waitSeconds = 0.0
    public let capacity: Int

    /// Prepares `rank`'s slices of at most `capacity` samples of `sampleFloats` floats each.
    public init(data: TrainingData, config: TrainingConfig, rank: Int, capacity: Int, sampleFloats: Int) {
        self.config = config
        self.capacity = capacity
        mainWriter = SampleWriter(data: data)
        worker = Worker(writer: SampleWriter(data: data), config: config, rank: rank, capacity: capacity,
                        sampleFloats: sampleFloats)
        let worker = self.worker
        let thread = Thread { worker.run() }
        thread.name = "catdog-loader"
        thread.start()
    }

    deinit { worker.stop() }

    /// Paths that failed to decode after the check, with the reason, since the start.
    public var lateFailures: [String] { worker.locked { worker.failures } }
    /// CPU seconds the helper spent preparing batches, and the samples it prepared in them.
    public var prepareSeconds: Double { worker.locked { worker.busySeconds } }
    public var preparedSamples: Int { worker.locked { worker.busySamples } }

    /// This rank's slice of `step` of `plan`, at input size `size` (nil: the working size;
    /// progressive resizing passes the epoch's); starts preparing the step after it (the next
    /// epoch's first when this is the last, unless that epoch is past the run's end, at the
    /// same size) before it returns. The batch stays valid until the next call.
    public func batch(plan: EpochPlan, step: Int, size: Int? = nil) -> Batch {
        let slot: Int
        let size = size ?? worker.writer.data.preprocessing.imageSize
        precondition(size * size * 3 <= worker.sampleFloats)
        worker.lock.lock()
        if let job = worker.requested, job.plan.epoch == plan.epoch, job.step == step, job.plan.shares == plan.shares,
           job.plan.order == plan.order, job.size == size {
            let start = Date()
            while !worker.done { worker.lock.wait() }
            waitSeconds += Date().timeIntervalSince(start)
            slot = job.slot
        } else {
            // Nothing (or something else) was prepared, e.g. at the first step or after a
            // resume: let the helper finish what it is doing, then prepare this step here.
            while worker.requested != nil, !worker.done { worker.lock.wait() }
            worker.lock.unlock()
            slot = 1 - lastSlot
            let start = Date()
            worker.fill(slot: slot, plan: plan, step: step, size: size, writer: mainWriter)
            waitSeconds += Date().timeIntervalSince(start)
            worker.lock.lock()
        }
        lastSlot = slot
        let count = worker.counts[slot]
        var next: (plan: EpochPlan, step: Int)? = (plan, step + 1)
        if step + 1 >= plan.steps { next = nil }
        // The next epoch's first batch, from the plan's own seed (the trainer's `planSeed`).
        if step + 1 >= plan.steps, plan.epoch + 1 < config.epochs, let following = try? plan.following() {
            next = (following, 0)
        }
        if let next {
            worker.requested = Worker.Job(plan: next.plan, step: next.step, slot: 1 - slot, size: size)
            worker.done = false
            worker.lock.signal()
        } else {
            worker.requested = nil
        }
        worker.lock.unlock()
        return Batch(input: UnsafePointer(worker.inputs[slot].pointer), labels: UnsafePointer(worker.labels[slot].pointer),
                     count: count)
    }

    /// Writes this rank's validation samples `indices` (into `validationFiles`) to `input`
    /// and `labels`, on the calling thread; returns how many it wrote (a file that fails now
    /// is left out and counted).
    public func validationBatch(_ indices: ArraySlice<Int>, input: UnsafeMutablePointer<Float>,
                                labels: UnsafeMutablePointer<Float>, sampleFloats: Int) -> Int {
        var n = 0
        for index in indices {
            do {
                try mainWriter.writeValidation(index, to: input + n * sampleFloats)
                labels[n] = mainWriter.data.label(validation: index)
                n += 1
            } catch {
                worker.locked { worker.failures.append("\(mainWriter.data.validationFiles[index].path): \(error)") }
            }
        }
        return n
    }

    /// The helper thread and the two buffers it fills.
    final class Worker: @unchecked Sendable {
        struct Job {
            var plan: EpochPlan
            var step: Int
            var slot: Int
            /// Input size of the samples (side in pixels).
            var size: Int
        }
        let lock = NSCondition()
        // Guarded by `lock`:
        var requested: Job?
        var done = true
        var stopped = false
        var failures: [String] = []
        var busySeconds = 0.0
        var busySamples = 0

        let writer: SampleWriter
        let config: TrainingConfig
        let inputs: [FloatBuffer]
        let labels: [FloatBuffer]
        /// Samples in each buffer; a slot is written only by whoever fills it.
        let counts: UnsafeMutablePointer<Int>
        /// Floats a sample may take: the working size's (smaller sizes pack tighter).
        let sampleFloats: Int
        let rank: Int

        init(writer: SampleWriter, config: TrainingConfig, rank: Int, capacity: Int, sampleFloats: Int) {
            self.writer = writer
            self.config = config
            self.rank = rank
            self.sampleFloats = sampleFloats
            counts = .allocate(capacity: 2)
            counts.initialize(repeating: 0, count: 2)
            inputs = (0..<2).map { _ in FloatBuffer(count: max(capacity, 1) * sampleFloats) }
            labels = (0..<2).map { _ in FloatBuffer(count: max(capacity, 1)) }
        }

        deinit { counts.deallocate() }

        func locked<T>(_ body: () -> T) -> T {
            lock.lock()
            defer { lock.unlock() }
            return body()
        }

        func stop() { locked { stopped = true; lock.signal() } }

        func run() {
            while true {
                lock.lock()
                while !stopped, requested == nil || done { lock.wait() }
                if stopped { lock.unlock(); return }
                let job = requested!
                lock.unlock()
                let start = Worker.threadCPUSeconds()
                fill(slot: job.slot, plan: job.plan, step: job.step, size: job.size, writer: writer)
                lock.lock()
                busySeconds += Worker.threadCPUSeconds() - start
                busySamples += counts[job.slot]
                done = true
                lock.broadcast()
                lock.unlock()
            }
        }

        /// CPU time of the calling thread: what preparing costs, not how long it took while
        /// the training threads had the cores.
        static func threadCPUSeconds() -> Double {
            var t = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
            return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
        }

        /// Decodes and augments the slice of `step` into buffer `slot`, size × size × 3 floats a sample.
        func fill(slot: Int, plan: EpochPlan, step: Int, size: Int, writer: SampleWriter) {
            let floats = size * size * 3
            let outputSize = size == writer.data.preprocessing.imageSize ? nil : size
            let positions = plan.samples(step: step, rank: rank)
            let trainSamples = writer.data.trainSamples
            var n = 0
            var failed: [String] = []
            for position in positions {
                let sample = trainSamples[position]
                do {
                    try writer.writeTrain(sample, epoch: plan.epoch, config: config, size: outputSize, to: inputs[slot].pointer + n * floats)
                    labels[slot].pointer[n] = writer.data.label(train: sample)
                    n += 1
                } catch {
                    failed.append("\(writer.data.trainFiles[sample].path): \(error)")
                }
            }
            counts[slot] = n
            if !failed.isEmpty { locked { failures += failed } }
        }
    }
}
