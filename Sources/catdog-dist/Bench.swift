import ArgumentParser
import CatdogData
import CatdogDistributed
import CatdogEngine
import CatdogSupport
import CatdogTraining
import Foundation

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure training throughput on synthetic data, or decoding speed on a folder.",
        discussion: """
            Runs alone or under mpirun; reports aggregate images/s, achieved GFLOP/s, time per \
            layer forward and backward, where a step's time goes (the convolutions' products, \
            Winograd transforms and im2col, and the same by pass: forward, dX, dW; the other \
            layers; the update, as a bare `train` makes it: AdamW with weight decay 0.05, then \
            the weights' moving average), the all-reduce time and the exposed (not overlapped) \
            share of the step. Example:
              mpirun -np 2 catdog-dist bench --model vgg --image-size 64 --batch-size 64 --steps 30 --json
            With --decode DIR, each rank instead decodes its 1/N of DIR's images and reports images/s.
            A run longer than 10 s shows its progress (steps done, seconds a step, ETA) on stderr; \
            stdout holds the result alone.
            """)

    @OptionGroup var shape: ModelOptions

    @Option(help: "Timed steps.")
    var steps = 20

    @Option(help: "Untimed steps first.")
    var warmupSteps = 3

    @OptionGroup var allReduce: AllReduceOptions
    @OptionGroup var compute: ComputeOptions


    @Option(help: "Floats per im2col chunk (default 262144 = 1 MB).")
    var columnFloats = ConvolutionOptions().columnFloats

    @Option(help: "Benchmark decoding this folder's images instead of training.")
    var decode: String?

    @Flag(help: "Print one JSON object (rank 0).")
    var json = false

    @Flag(help: """
        Measure one core instead: its peak from register-only loops (AVX-512 fp32 FMAs, bf16 \
        vdpbf16ps), and OpenBLAS's sgemm, our fp32 gemm and our bf16 gemm on the products \
        Winograd makes in resnet at 64 px, as GFLOP/s and shares of the peak (3 alternating rounds).
        """)
    var gemm = false

    @Flag(help: """
        Print only what this machine's figures are measured on and exit: the CPU (name, family \
        and model), cores, vector flags, OPENBLAS_CORETYPE, OpenBLAS's core and our kernels' \
        instruction set; one line, or one JSON object with --json. The benchmark scripts print it \
        above their figures.
        """)
    var machine = false

    @Option(help: """
        Emulate a lab: each rank stands for a whole machine of --machine-cores cores, sleeps \
        through the compute this profile measured (the --json output of a one-rank bench at the \
        per-core batch) and runs the real gradient reductions over its real links. Run one rank \
        per cluster/netns-lab host; --batch-size is then the lab's global batch \
        (ranks x cores x the profile's batch). See benchmarks/lab-scaling.
        """)
    var emulate: String?

    @Option(help: "Cores of each emulated machine (one rank per core). (with --emulate)")
    var machineCores = 8

    func validate() throws {
        guard (1...1_000_000).contains(steps) else { throw ValidationError("--steps must be between 1 and 1000000") }
        guard (0...1_000_000).contains(warmupSteps) else { throw ValidationError("--warmup-steps must be between 0 and 1000000") }
        guard (1...(1 << 30)).contains(columnFloats) else { throw ValidationError("--column-floats must be between 1 and 2^30") }
        guard (1...4096).contains(machineCores) else { throw ValidationError("--machine-cores must be between 1 and 4096") }
    }

    /// The machine line lists the CPU's own flags; under CATDOG_KERNELS=avx2 or baseline it
    /// also says that the kernels were capped, so a figure is not read as this CPU's best.
    static var kernelCapNote: String {
        guard let cap = KernelInstructionSet.cap else { return "" }
        return " (capped by CATDOG_KERNELS=\(cap.rawValue))"
    }

    func run() throws {
        try runDistributed(announce: !json && !machine, machineRanks: allReduce.machineRanks) { comm in
            try compute.apply()
            if machine {
                if comm.rank == 0 { try printMachine() }
                return
            }
            if gemm {
                if comm.rank == 0 { try benchGemm() }
                return
            }
            if let decode {
                try benchDecode(decode, comm)
                return
            }
            if let emulate {
                try benchEmulated(profilePath: emulate, comm)
                return
            }
            let r = try Benchmark.run(model: shape.model, imageSize: shape.imageSize, globalBatch: shape.batchSize, steps: steps,
                                      warmupSteps: warmupSteps, overlap: allReduce.overlap, bucketMiB: allReduce.bucketMib,
                                      compression: allReduce.givenCompression ?? .none,
                                      allReduce: allReduce.givenTopology ?? .flat,
                                      convolution: compute.convolutionOptions(columnFloats: columnFloats),
                                      communicator: comm, progress: stepProgress(comm))
            guard comm.rank == 0 else { return }
            if json {
                return try printJSON(r)
            }
            print("\(r.model) at \(r.image_size)x\(r.image_size), global batch \(r.batch_size) on \(r.ranks) rank(s), overlap \(r.overlap ? "on" : "off")\(r.compression == "none" ? "" : ", compression \(r.compression)"), convolution \(r.convolution), \(r.precision ?? "fp32") products, \(r.steps) steps")
            print("  on \(MachineLine.current.text)")
            print("  layer                    forward ms  backward ms")
            for l in r.layers {
                print("  \(l.name.padding(toLength: 22, withPad: " ", startingAt: 0)) \(String(format: "%10.2f  %11.2f", l.forward_ms, l.backward_ms))   \(l.summary)")
            }
            print(String(format: "  step %.1f ms; %.1f images/s; %.1f GFLOP/s achieved (all ranks)", r.step_ms, r.images_per_s, r.gflops))
            if let p = r.phases {
                print(String(format: "  a step, ms (mean of the ranks): products %.1f", p.products_ms) + " (\(r.precision ?? "fp32"))"
                      + String(format: ", Winograd transforms %.1f, im2col/col2im %.1f, other layers %.1f, optimizer %.1f, waiting for the all-reduce %.1f",
                               p.winograd_transforms_ms, p.im2col_ms, p.other_layers_ms, p.optimizer_ms, p.allreduce_wait_ms))
                if let forward = p.convolution_forward_ms, let dx = p.convolution_input_gradient_ms, let dw = p.convolution_kernel_gradient_ms {
                    print(String(format: "  the convolutions' products, transforms and im2col by pass, ms: forward %.1f, dX %.1f, dW %.1f", forward, dx, dw))
                }
            }
            print(String(format: "  all-reduce of %.1f MB alone: %.2f ms; exposed communication %.1f%% of the step; %.2f MB sent into all-reduces per step (%.1fx fewer than fp32)",
                         r.gradient_mb, r.allreduce_ms, r.comm_fraction * 100, r.wire_mb, r.gradient_mb / max(r.wire_mb, 1e-9)))
        }
    }

    /// What figures here are measured on, as `bench --machine` prints it; every text report of
    /// `bench` names its machine with the same `text`.
    struct MachineLine: Encodable {
        var machine: MachineDescription
        var openblas_coretype: String?
        var blas_core: String
        var kernels: String
        /// The kernel's transparent huge pages for large buffers (`HugePages.mode`): a step
        /// without them took 8–15% longer on a Zen 5 (docs/performance.md).
        var huge_pages: String

        /// This process's machine, OpenBLAS core, kernels and huge pages.
        static var current: MachineLine {
            let coreType = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"].flatMap { $0.isEmpty ? nil : String($0.prefix(64)) }
            return MachineLine(machine: .current(), openblas_coretype: coreType, blas_core: blasCoreName,
                               kernels: KernelInstructionSet.active.rawValue, huge_pages: HugePages.mode)
        }

        var text: String {
            "\(machine.summary); OPENBLAS_CORETYPE \(openblas_coretype ?? "unset"), OpenBLAS core \(blas_core); own kernels \(kernels)\(Bench.kernelCapNote); huge pages \(huge_pages)"
        }
    }

    func printMachine() throws {
        let line = MachineLine.current
        if json { return try printJSON(line) }
        print("machine: \(line.text)")
    }

    /// Rank 0's progress through the steps on stderr (stdout keeps the result alone, for
    /// --json), from 10 s on: a short bench prints none.
    func stepProgress(_ comm: Communicator) -> ((Int, Int) -> Void)? {
        guard comm.rank == 0 else { return nil }
        let line = ProgressLine(quietSeconds: 10)
        let start = Date()
        let warmup = warmupSteps
        return { done, total in
            let elapsed = Date().timeIntervalSince(start)
            let perStep = elapsed / Double(max(done, 1))
            line.update(String(format: "bench: step %d/%d%@  %.2f s a step  ETA %@", done, total, done <= warmup ? " (warm-up)" : "",
                               perStep, formatDuration(perStep * Double(total - done))))
            if done == total { line.clear() }
        }
    }

    func benchEmulated(profilePath: String, _ comm: Communicator) throws {
        let data: Data
        do { data = try readBoundedFile(profilePath, limit: 16 << 20) } catch {
            throw ValidationError("cannot read the profile \(profilePath): \(describe(error))")
        }
        let profile: BenchmarkResult
        do { profile = try JSONDecoder().decode(BenchmarkResult.self, from: data) } catch {
            throw ValidationError("\(profilePath) is not a `catdog-dist bench --json` result (\(describe(error))): make one with `catdog-dist bench --json --batch-size B` on one rank")
        }
        let expected = profile.batch_size.multipliedReportingOverflow(by: machineCores * comm.size)
        guard !expected.overflow, expected.partialValue == shape.batchSize else {
            throw ValidationError("--batch-size \(shape.batchSize) is not \(comm.size) machines x \(machineCores) cores x the profile's per-core batch \(profile.batch_size)")
        }
        let r = try LabEmulator.run(profile: profile, coresPerMachine: machineCores, steps: steps, warmupSteps: warmupSteps,
                                    bucketMiB: allReduce.bucketMib, compression: allReduce.givenCompression ?? .none,
                                    allReduce: allReduce.givenTopology ?? .flat, overlap: allReduce.overlap, communicator: comm,
                                    progress: stepProgress(comm))
        guard comm.rank == 0 else { return }
        if json {
            return try printJSON(r)
        }
        print("emulated lab: \(r.machines) machines of \(r.cores_per_machine) cores, \(r.model) at \(r.image_size) px, global batch \(r.global_batch) (\(r.per_core_batch) a core), compression \(r.compression)")
        print("  on \(MachineLine.current.text) (the network side; compute as the profile measured it)")
        print(String(format: "  step %.1f ms (compute %.1f, within a machine %.1f, exposed network %.1f); %.0f images/s; %.2f MB sent a step; CPU %.2f s per second per rank at most",
                     r.step_ms, r.compute_ms, r.intra_machine_ms, r.exposed_comm_ms, r.images_per_s, r.wire_mb, r.cpu_per_rank))
    }

    func benchGemm() throws {
        let r = GemmBenchmark.run()
        if json { return try printJSON(r) }
        func span(_ values: [Double]) -> String {
            guard let low = values.min(), let high = values.max(), high > 0 else { return "-" }
            return String(format: "%.0f–%.0f", low, high)
        }
        func share(_ values: [Double], of peak: [Double]) -> String {
            guard let best = values.max(), let top = peak.max(), best > 0, top > 0 else { return "-" }
            return String(format: "%.0f%%", 100 * best / top)
        }
        print("one core of: \(MachineLine.current.text)")
        print("  peak GFLOP/s (3 rounds): fp32 FMA \(span(r.peak_fp32)), bf16 vdpbf16ps \(span(r.peak_bf16))")
        print("  product (m x k x n)       OpenBLAS fp32     our fp32           our bf16 (packed)   our bf16 (packing)")
        for row in r.rows {
            let name = "\(row.shape.m) x \(row.shape.k) x \(row.shape.n)".padding(toLength: 24, withPad: " ", startingAt: 0)
            print("  \(name)  \(span(row.openblas).padding(toLength: 7, withPad: " ", startingAt: 0)) \(share(row.openblas, of: r.peak_fp32).padding(toLength: 5, withPad: " ", startingAt: 0))    \(span(row.own).padding(toLength: 7, withPad: " ", startingAt: 0)) \(share(row.own, of: r.peak_fp32).padding(toLength: 5, withPad: " ", startingAt: 0))    \(span(row.bf16).padding(toLength: 7, withPad: " ", startingAt: 0)) \(share(row.bf16, of: r.peak_bf16).padding(toLength: 5, withPad: " ", startingAt: 0))       \(span(row.bf16_packing).padding(toLength: 7, withPad: " ", startingAt: 0)) \(share(row.bf16_packing, of: r.peak_bf16))")
        }
        print("  (GFLOP/s lowest–highest of the rounds; shares: the best round against the best peak of its precision;")
        print("   packed: operands in bf16 pairs beforehand; packing: rounded and packed from fp32 in every product, as training does)")
    }

    func benchDecode(_ folder: String, _ comm: Communicator) throws {
        let files = try DataFolder.labeledFiles(in: folder)
        let preprocessing = Preprocessing(imageSize: shape.imageSize)
        let store = ImageStore(count: files.count, storedSize: preprocessing.storedSize, labels: files.map(\.label))
        try comm.barrier()
        let start = Date()
        let block = comm.block(of: files.count)
        let report = store.decode(files.map(\.path), indices: block, fit: .squash)
        let mine = Date().timeIntervalSince(start)
        try comm.barrier()
        let wall = Date().timeIntervalSince(start)
        var totals = [Double(block.count) / mine, Double(report.skipped.count)]
        try comm.allReduceSum(&totals)
        guard comm.rank == 0 else { return }
        if json {
            print(#"{"images": \#(files.count), "ranks": \#(comm.size), "seconds": \#(wall), "images_per_s": \#(Double(files.count) / wall), "images_per_s_per_rank": \#(totals[0] / Double(comm.size)), "skipped": \#(Int(totals[1]))}"#)
        } else {
            print(String(format: "decoded %d images to %dx%d on %d rank(s) in %.2f s: %.0f images/s (%.0f per rank), %d skipped",
                         files.count, preprocessing.storedSize, preprocessing.storedSize, comm.size, wall,
                         Double(files.count) / wall, totals[0] / Double(comm.size), Int(totals[1])))
            print("  on \(MachineLine.current.text)")
        }
    }
}
