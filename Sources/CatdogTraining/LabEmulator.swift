import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

/// The network side of a lab of many machines, measured on one small computer: each rank
/// stands for one whole machine of `cores` cores (its leader under a hierarchical all-reduce)
/// and emulates that machine's compute from a profile measured on this CPU (`bench --json` on
/// one rank at the per-core batch): it sleeps through forward, then through backward layer by
/// layer, starting each gradient bucket's reduction the moment backward has passed it, as
/// training does. The reductions are real: the real gradient buffers of the model, the real
/// fp32, fp16 or PowerSGD code, over whatever links the ranks run on (`cluster/netns-lab` with
/// `tc` rates). The optimizer step is slept as well, for the time it takes on this CPU
/// (measured once): many emulated machines share this computer's cores, and its real cost on
/// every one of them would starve the others.
///
/// The ranks of one machine would first sum their gradients through shared memory and share
/// the result afterwards; that costs the machine two passes over each bucket at this CPU's
/// memory bandwidth (measured here), added before each bucket starts and after the last one.
/// A rank sleeps while it emulates compute, so many fit on two cores; each reports the CPU it
/// used per second of wall time, which says whether the emulation was starved.
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
        /// CPU seconds a rank used per wall second during the timed steps (max over ranks).
        public var cpu_per_rank: Double
        public var profile_step_ms: Double
        public var machine: MachineDescription
        public var blas_core: String
    }

    public struct ProfileError: Error, CustomStringConvertible {
        public var description: String
    }

    public static func run(profile: BenchmarkResult, coresPerMachine cores: Int, steps: Int, warmupSteps: Int,
                           bucketMiB: Double, compression: GradientCompression,
                           communicator comm: Communicator) throws -> Result {
        guard profile.ranks == 1 else {
            throw ProfileError(description: "the profile was measured on \(profile.ranks) ranks: measure it on one (bench --json without mpirun)")
        }
        let network = try ModelZoo.build(profile.model, imageSize: profile.image_size)
        let nodes = network.nodes.count
        guard profile.layers.count == nodes - 1,
              zip(profile.layers, network.nodes.dropFirst()).allSatisfy({ $0.name == $1.name }) else {
            throw ProfileError(description: "the profile's layers are not those of \(profile.model) at \(profile.image_size) px")
        }
        network.initialize(seed: 1)
        let step = DataParallelStep(network: network, optimizer: Adam(count: network.parameterCount), communicator: comm,
                                    overlap: true, bucketBytes: Int(bucketMiB * 1_048_576), compression: compression)
        let reduction = step.reduction
        let buckets = step.buckets
        let optimizer = step.optimizer

        // Gradients: random at the start; afterwards each step reduces what the previous left
        // (the values do not change what crosses the network, and a refill would cost CPU).
        var random = Random(seed: 11, UInt64(comm.rank))
        for i in 0..<network.parameterCount { network.gradients.pointer[i] = random.uniform(-1e-3, 1e-3) }

        // This CPU's cost of the real optimizer step and of one pass of a shared-memory sum,
        // measured by one rank at a time (the ranks share this computer's cores).
        var optimizerSeconds = 0.0, secondsPerFloat = 0.0
        let scratch = FloatBuffer(count: network.parameterCount)
        scratch.zero()
        for r in 0..<comm.size {
            try comm.barrier()
            guard r == comm.rank else { continue }
            var started = Date()
            for _ in 0..<3 { optimizer.step(parameters: network.parameters.pointer, gradients: network.gradients.pointer, learningRate: 1e-6) }
            optimizerSeconds = Date().timeIntervalSince(started) / 3
            started = Date()
            for _ in 0..<3 { PowerSGDReduction.axpy(1, network.gradients.pointer, scratch.pointer, network.parameterCount) }
            secondsPerFloat = Date().timeIntervalSince(started) / 3 / Double(network.parameterCount)
        }
        // A machine of one core has nothing to sum within it.
        let intraPerFloat = cores > 1 ? secondsPerFloat : 0

        // The profile's layer times, scaled so that forward + backward + this optimizer is its step.
        let layerTotal = profile.layers.reduce(0.0) { $0 + $1.forward_ms + $1.backward_ms } / 1000
        let scale = layerTotal > 0 ? max(profile.step_ms / 1000 - optimizerSeconds, 0) / layerTotal : 0
        let forward = profile.layers.reduce(0.0) { $0 + $1.forward_ms } / 1000 * scale
        let backward = [0.0] + profile.layers.map { $0.backward_ms / 1000 * scale }  // by node

        var exposed = 0.0
        func waitUntil(_ deadline: Date, _ pending: [PendingReduction]) throws {
            while true {
                for p in pending { _ = try p.test() }
                let left = deadline.timeIntervalSinceNow
                if left <= 0 { return }
                usleep(UInt32(min(left, 0.0005) * 1e6))
            }
        }
        func oneStep(update: Int) throws -> Double {
            try comm.barrier()
            let t0 = Date()
            var clock = forward
            var pending: [PendingReduction] = []
            var next = 0
            try waitUntil(t0.addingTimeInterval(clock), pending)
            for node in stride(from: nodes - 1, through: 1, by: -1) {
                clock += backward[node]
                try waitUntil(t0.addingTimeInterval(clock), pending)
                while next < buckets.count, buckets[next].lastNode >= node {
                    // The machine's ranks sum this bucket through shared memory first.
                    clock += Double(buckets[next].range.count) * intraPerFloat
                    try waitUntil(t0.addingTimeInterval(clock), pending)
                    pending.append(try reduction.start(bucket: next, gradients: network.gradients.pointer, update: update))
                    next += 1
                }
            }
            let backwardDone = Date()
            // Waits by testing and sleeping, not spinning in MPI_Wait: many emulated machines
            // share this computer's cores.
            for p in pending { while try !p.test() { usleep(100) } }
            exposed += Date().timeIntervalSince(backwardDone)
            // The leader shares the result with its machine's ranks, which then update.
            clock = Date().timeIntervalSince(t0) + Double(network.parameterCount) * intraPerFloat + optimizerSeconds
            try waitUntil(t0.addingTimeInterval(clock), [])
            return Date().timeIntervalSince(t0)
        }

        // PowerSGD compresses from update 0 here (its warmup is not what is measured).
        for s in 0..<warmupSteps { _ = try oneStep(update: s) }
        exposed = 0
        let cpuBefore = cpuSeconds()
        let wallStart = Date()
        var total = 0.0
        for s in 0..<steps { total += try oneStep(update: warmupSteps + s) }
        var figures = [total, exposed, (cpuSeconds() - cpuBefore) / Date().timeIntervalSince(wallStart)]
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
            compute_ms: (forward + backward.reduce(0, +) + optimizerSeconds) * 1000,
            intra_machine_ms: 2 * Double(network.parameterCount) * intraPerFloat * 1000,
            exposed_comm_ms: figures[1] / n / Double(steps) * 1000,
            wire_mb: Double(buckets.indices.reduce(0) { $0 + reduction.wireBytes(bucket: $1, update: warmupSteps) }) / 1e6,
            cpu_per_rank: cpuMax[0], profile_step_ms: profile.step_ms, machine: .current(), blas_core: blasCoreName)
    }

    /// User and system CPU seconds of this process so far.
    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
