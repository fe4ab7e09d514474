import CSignals
import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

/// The network side of a lab of many machines, measured on one small computer: each rank
/// stands for one whole machine of `cores` cores (the ranks of it that send, under a hierarchical all-reduce)
/// and emulates that machine's compute from a profile measured on this CPU (`bench --json` on
/// one rank at the per-core batch): it sleeps through forward, then through backward layer by
/// layer, starting each gradient bucket's reduction the moment backward has passed it, as
/// training does. The reductions are real: the real gradient buffers of the model, the real
/// fp32, fp16 or PowerSGD code, over whatever links the ranks run on (`cluster/netns-lab` with
/// `tc` rates). The update (AdamW and the moving average) is slept as well, for the time it
/// takes on this CPU (measured once): many emulated machines share this computer's cores, and
/// its real cost on every one of them would starve the others.
///
/// The ranks of one machine would first sum their gradients through shared memory and share
/// the result afterwards; that costs the machine two passes over each bucket at this CPU's
/// memory bandwidth (measured here), added before each bucket starts and after the last one.
/// A rank sleeps while it emulates compute, so many fit on two cores; each reports the CPU it
/// used per second of wall time, which says whether the emulation was starved. For the same
/// reason PowerSGD's arithmetic (the products with the factors, the error feedback) is
/// measured alone on this CPU and slept: the bytes it sends are real, their values are not.
/// A machine compresses as `--allreduce hierarchical` does, bucket b on its core b mod cores
/// (`HierarchicalReduction`): a bucket's rounds wait for its arithmetic, and what a core
/// computes while backward runs delays that core's backward, so the machine's backward ends
/// when its most charged core's does (`CoreCharges`).
/// Sleeps end within a microsecond of their deadline (the thread's timer slack), not 50.
public enum LabEmulator {
    public struct Result: Codable, Sendable {
        public var model: String
        public var image_size: Int
        public var machines: Int
        public var cores_per_machine: Int
        public var per_core_batch: Int
        public var global_batch: Int
        public var compression: String
        public var steps: Int
        public var step_ms: Double
        public var images_per_s: Double
        /// The machine's compute from the profile (forward, backward, the optimizer), per step.
        public var compute_ms: Double
        /// Shared-memory reduce and broadcast within the machine, per step.
        public var intra_machine_ms: Double
        /// Waiting for the network after backward, per step (mean over ranks).
        public var exposed_comm_ms: Double
        /// Bytes each machine sends into the all-reduces per step.
        public var wire_mb: Double
        /// PowerSGD's arithmetic per step, measured alone on this CPU and slept (0 without it).
        public var compression_arithmetic_ms: Double
        /// How much later backward ended, per step, for the arithmetic its cores computed meanwhile.
        public var arithmetic_delay_ms: Double?
        /// CPU seconds a rank used per wall second during the timed steps (max over ranks).
        public var cpu_per_rank: Double
        public var profile_step_ms: Double
        public var machine: MachineDescription
        public var blas_core: String
    }

    /// The arithmetic each of an emulated machine's cores computed while backward ran, this step.
    public final class CoreCharges {
        public let cores: Int
        public private(set) var charged: [Double]
        public var backwardRunning = true
        public init(cores: Int) {
            self.cores = max(cores, 1)
            charged = Array(repeating: 0, count: self.cores)
        }
        public func charge(bucket: Int, seconds: Double) {
            if backwardRunning { charged[bucket % cores] += seconds }
        }
        public func reset() {
            charged = Array(repeating: 0, count: cores)
            backwardRunning = true
        }
        public var most: Double { charged.max() ?? 0 }
    }

    public struct ProfileError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Refuses a profile that is not a one-rank `bench --json` result of `model` with sane
    /// numbers: the file is untrusted, and its times become sleeps and its sizes allocations.
    static func check(_ profile: BenchmarkResult, compression: GradientCompression = .none, communicator comm: Communicator = LocalCommunicator()) throws -> Network {
        guard profile.ranks == 1 else {
            throw ProfileError(description: "the profile was measured on \(profile.ranks) ranks: measure it on one (bench --json without mpirun)")
        }
        let L = RunLimits.self
        let times = [("step_ms", profile.step_ms)] + profile.layers.flatMap { layer in
            [("\(layer.name.prefix(64)) forward_ms", layer.forward_ms), ("\(layer.name.prefix(64)) backward_ms", layer.backward_ms)]
        }
        let problems = [L.check("batch_size", profile.batch_size, L.globalBatch),
                        L.check("image_size", profile.image_size, 16...CheckpointLimits.maxImageSize)]
            + times.map { L.check($0.0, $0.1, profileMilliseconds) }
        if let problem = problems.compactMap({ $0 }).first {
            throw ProfileError(description: "the profile's \(problem): make it again with `catdog-dist bench --json` on one rank")
        }
        guard (try? ModelZoo.builder(profile.model, imageSize: profile.image_size).counts()) != nil else {
            throw ProfileError(description: "the profile's model \(profile.model.prefix(64)) at \(profile.image_size) px is not one catdog-dist builds (see `catdog-dist models`)")
        }
        try Benchmark.checkModelMemory(model: profile.model, imageSize: profile.image_size, update: .standard, compression: compression,
                                       communicator: comm)
        let network = try ModelZoo.build(profile.model, imageSize: profile.image_size)
        guard profile.layers.count == network.nodes.count - 1,
              zip(profile.layers, network.nodes.dropFirst()).allSatisfy({ $0.name == $1.name }) else {
            throw ProfileError(description: "the profile's layers are not those of \(profile.model.prefix(64)) at \(profile.image_size) px")
        }
        return network
    }

    /// Any time a profile gives, in milliseconds: 0 to 1,000 s (a layer or step longer than
    /// that is not a measurement of this program).
    static let profileMilliseconds = 0.0...1e6

    /// What one emulated machine costs besides its layers, measured on this CPU by one rank at
    /// a time (the ranks share this computer's cores): the real update as a bare `train` makes
    /// it (AdamW's weight decay and step, then the weights' moving average), one pass of a
    /// shared-memory sum per float, and PowerSGD's arithmetic on each bucket.
    static func measureLocalCosts(_ step: DataParallelStep, _ comm: Communicator) throws
        -> (optimizer: Double, perFloat: Double, arithmetic: [PowerSGDReduction.Arithmetic]?) {
        let network = step.network
        var optimizerSeconds = 0.0, secondsPerFloat = 0.0
        let powerSGD = step.reduction.powerSGD
        var arithmetic: [PowerSGDReduction.Arithmetic]?
        let scratch = FloatBuffer(count: network.parameterCount)
        scratch.zero()
        let update = BenchmarkUpdate.standard
        let average = BenchmarkAverage(network, ema: update.ema), decaying = network.decayingRanges()
        let decay = step.optimizer.kind.decouplesWeightDecay ? Float(1e-6) * update.weightDecay : 0
        for r in 0..<comm.size {
            try comm.barrier()
            guard r == comm.rank else { continue }
            var started = Date()
            for _ in 0..<3 {
                let weights = average.average
                step.optimizer.update(parameters: network.parameters.pointer, gradients: network.gradients.pointer,
                                      count: network.parameterCount, learningRate: 1e-6, decayFactor: decay, decaying: decaying,
                                      average: weights?.weights.pointer, averageDecay: weights?.decay ?? 0)
                average.updated()
            }
            optimizerSeconds = Date().timeIntervalSince(started) / 3
            started = Date()
            for _ in 0..<3 { PowerSGDReduction.axpy(1, network.gradients.pointer, scratch.pointer, network.parameterCount) }
            secondsPerFloat = Date().timeIntervalSince(started) / 3 / Double(network.parameterCount)
            if let powerSGD {
                let evicting = FloatBuffer(count: 16 << 20)  // 64 MiB: more than the last-level cache (32 MiB here)
                arithmetic = powerSGD.measureArithmetic(gradients: network.gradients.pointer) {
                    evicting.pointer.update(repeating: 1, count: evicting.count)
                }
            }
        }
        return (optimizerSeconds, secondsPerFloat, arithmetic)
    }

    /// One emulated step's clock: forward, then backward node by node with each bucket's
    /// shared-memory sum, in seconds from the start of the step.
    struct Schedule {
        var forward: Double
        var backward: [Double]  // by node
        var optimizer: Double
        var intraPerFloat: Double

        /// The profile's layer times, scaled so that forward + backward + this CPU's optimizer
        /// is the profile's step.
        init(profile: BenchmarkResult, optimizer: Double, perFloat: Double, cores: Int) {
            let layerTotal = profile.layers.reduce(0.0) { $0 + $1.forward_ms + $1.backward_ms } / 1000
            let scale = layerTotal > 0 ? max(profile.step_ms / 1000 - optimizer, 0) / layerTotal : 0
            forward = profile.layers.reduce(0.0) { $0 + $1.forward_ms } / 1000 * scale
            backward = [0.0] + profile.layers.map { $0.backward_ms / 1000 * scale }
            self.optimizer = optimizer
            // A machine of one core has nothing to sum within it.
            intraPerFloat = cores > 1 ? perFloat : 0
        }

        var compute: Double { forward + backward.reduce(0, +) + optimizer }
    }

    public static func run(profile: BenchmarkResult, coresPerMachine cores: Int, steps: Int, warmupSteps: Int,
                           bucketMiB: Double, compression: GradientCompression, allReduce: AllReduceTopology = .flat, overlap: Bool = true,
                           communicator comm: Communicator, progress: ((_ done: Int, _ total: Int) -> Void)? = nil) throws -> Result {
        let network = try check(profile, compression: compression, communicator: comm)
        network.initialize(seed: 1)
        let step = DataParallelStep(network: network, optimizer: BenchmarkUpdate.standard.makeOptimizer(network),
                                    communicator: comm, overlap: overlap, bucketBytes: Int(bucketMiB * 1_048_576),
                                    compression: compression, allReduce: allReduce)
        // Gradients: random at the start; afterwards each step reduces what the previous left
        // (the values do not change what crosses the network, and a refill would cost CPU).
        var random = Random(seed: 11, UInt64(comm.rank))
        for i in 0..<network.parameterCount { network.gradients.pointer[i] = random.uniform(-1e-3, 1e-3) }
        _ = catdog_set_timer_slack(1000)
        let costs = try measureLocalCosts(step, comm)
        step.reduction.powerSGD?.sleptArithmetic = costs.arithmetic
        let charges = CoreCharges(cores: cores)
        step.reduction.powerSGD?.charges = charges
        let schedule = Schedule(profile: profile, optimizer: costs.optimizer, perFloat: costs.perFloat, cores: cores)
        var exposed = 0.0, delay = 0.0

        // PowerSGD compresses from update 0 here (its warmup is not what is measured).
        for s in 0..<warmupSteps {
            _ = try emulatedStep(step, schedule, charges, update: s, exposed: &exposed, delay: &delay)
            progress?(s + 1, warmupSteps + steps)
        }
        exposed = 0
        delay = 0
        let cpuBefore = cpuSeconds()
        let wallStart = Date()
        var total = 0.0
        for s in 0..<steps {
            total += try emulatedStep(step, schedule, charges, update: warmupSteps + s, exposed: &exposed, delay: &delay)
            progress?(warmupSteps + s + 1, warmupSteps + steps)
        }
        // Each rank measured its own arithmetic: the mean over the ranks, as the delay it caused.
        let arithmetic = (costs.arithmetic ?? []).reduce(0) { $0 + $1.total }
        var figures = [total, exposed, (cpuSeconds() - cpuBefore) / Date().timeIntervalSince(wallStart), delay, arithmetic]
        var cpuMax = [figures[2]]
        try comm.allReduceMax(&cpuMax)
        try comm.allReduceSum(&figures)
        let n = Double(comm.size)
        let stepSeconds = figures[0] / n / Double(steps)
        let globalBatch = profile.batch_size * cores * comm.size
        return Result(
            model: profile.model, image_size: profile.image_size, machines: comm.size, cores_per_machine: cores,
            per_core_batch: profile.batch_size, global_batch: globalBatch, compression: compression.description, steps: steps,
            step_ms: stepSeconds * 1000, images_per_s: Double(globalBatch) / stepSeconds,
            compute_ms: schedule.compute * 1000,
            intra_machine_ms: 2 * Double(network.parameterCount) * schedule.intraPerFloat * 1000,
            exposed_comm_ms: figures[1] / n / Double(steps) * 1000,
            wire_mb: Double(step.buckets.indices.reduce(0) { $0 + step.reduction.wireBytes(bucket: $1, update: warmupSteps) }) / 1e6,
            compression_arithmetic_ms: figures[4] / n * 1000,
            arithmetic_delay_ms: figures[3] / n / Double(steps) * 1000,
            cpu_per_rank: cpuMax[0], profile_step_ms: profile.step_ms, machine: .current(), blas_core: blasCoreName)
    }

    /// Sleeps until `deadline` (a short sleep ends late by the thread's timer slack, which
    /// `run` sets to 1 µs).
    static func sleep(until deadline: Date) {
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return }
            usleep(UInt32(min(left, 0.01) * 1e6))
        }
    }

    /// Sleeps (testing the pending reductions as it goes) until `deadline`.
    static func wait(until deadline: Date, _ pending: [PendingReduction]) throws {
        while true {
            for p in pending { _ = try p.test() }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return }
            usleep(UInt32(min(left, 0.0005) * 1e6))
        }
    }

    /// One step of one emulated machine; returns its wall time and adds the time it waited
    /// for the network after backward to `exposed`, and how much later its backward ended for
    /// the arithmetic computed meanwhile to `delay`.
    static func emulatedStep(_ step: DataParallelStep, _ schedule: Schedule, _ charges: CoreCharges, update: Int,
                             exposed: inout Double, delay: inout Double) throws -> Double {
        let comm = step.comm, buckets = step.buckets, nodes = step.network.nodes.count
        let gradients = step.network.gradients.pointer
        try comm.barrier()
        charges.reset()
        let t0 = Date()
        var clock = schedule.forward
        var pending: [PendingReduction] = []
        var next = 0
        try wait(until: t0.addingTimeInterval(clock), pending)
        for node in stride(from: nodes - 1, through: 1, by: -1) {
            clock += schedule.backward[node]
            try wait(until: t0.addingTimeInterval(clock), pending)
            while step.overlap, next < buckets.count, buckets[next].lastNode >= node {
                // The machine's ranks sum this bucket through shared memory first.
                clock += Double(buckets[next].range.count) * schedule.intraPerFloat
                try wait(until: t0.addingTimeInterval(clock), pending)
                pending.append(try step.reduction.start(bucket: next, gradients: gradients, update: update))
                next += 1
            }
        }
        // Each core's backward ran as long as the profile's plus the arithmetic it computed.
        charges.backwardRunning = false
        delay += charges.most
        clock += charges.most
        try wait(until: t0.addingTimeInterval(clock), pending)
        let backwardDone = Date()
        if !step.overlap {
            // Without overlap the buckets start after backward; exact fp32 sums are one blocking
            // all-reduce of everything (where Open MPI's own algorithms, e.g. `han`, apply).
            if step.reduction is FP32Reduction {
                try comm.allReduceSum(gradients + buckets.last!.range.lowerBound,
                                      count: buckets[0].range.upperBound - buckets.last!.range.lowerBound)
            } else {
                for b in buckets.indices { pending.append(try step.reduction.start(bucket: b, gradients: gradients, update: update)) }
            }
        }
        // Waits by testing and sleeping, not spinning in MPI_Wait: many emulated machines
        // share this computer's cores.
        if step.updatesAsSumsArrive {
            // As each bucket's sums arrive, the rank that summed them shares them with its machine's ranks,
            // which update those parameters while the later buckets are still on the network.
            let perFloat = schedule.intraPerFloat + schedule.optimizer / Double(max(step.network.parameterCount, 1))
            var done = [Bool](repeating: false, count: pending.count), updated = done, updating = 0.0
            while updated.contains(false) {
                for (index, p) in pending.enumerated() where !done[index] { done[index] = try p.test() }
                guard let index = updated.indices.first(where: { done[$0] && !updated[$0] }) else {
                    usleep(100)
                    continue
                }
                let seconds = Double(buckets[index].range.count) * perFloat
                try wait(until: Date().addingTimeInterval(seconds), pending)
                updating += seconds
                updated[index] = true
            }
            exposed += Date().timeIntervalSince(backwardDone) - updating
            return Date().timeIntervalSince(t0)
        }
        for p in pending { while try !p.test() { usleep(100) } }
        exposed += Date().timeIntervalSince(backwardDone)
        // The ranks that summed the buckets share the result with its machine's ranks, which then update.
        clock = Date().timeIntervalSince(t0) + Double(step.network.parameterCount) * schedule.intraPerFloat + schedule.optimizer
        sleep(until: t0.addingTimeInterval(clock))
        return Date().timeIntervalSince(t0)
    }

    /// User and system CPU seconds of this process so far.
    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
