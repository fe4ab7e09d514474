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
            layer forward and backward, the all-reduce time and the exposed (not overlapped) \
            share of the step. Example:
              mpirun -np 2 catdog-dist bench --model vgg --image-size 64 --batch-size 64 --steps 30 --json
            With --decode DIR, each rank instead decodes its 1/N of DIR's images and reports images/s.
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

    func validate() throws {
        guard (1...1_000_000).contains(steps) else { throw ValidationError("--steps must be between 1 and 1000000") }
        guard (0...1_000_000).contains(warmupSteps) else { throw ValidationError("--warmup-steps must be between 0 and 1000000") }
        guard (1...(1 << 30)).contains(columnFloats) else { throw ValidationError("--column-floats must be between 1 and 2^30") }
    }

    func run() throws {
        try runDistributed(announce: !json) { comm in
            try compute.apply()
            if let decode {
                try benchDecode(decode, comm)
                return
            }
            let r = try Benchmark.run(model: shape.model, imageSize: shape.imageSize, globalBatch: shape.batchSize, steps: steps,
                                      warmupSteps: warmupSteps, overlap: allReduce.overlap, bucketMiB: allReduce.bucketMib,
                                      compression: allReduce.givenCompression ?? .none,
                                      convolution: ConvolutionOptions(algorithm: compute.convolution, columnFloats: columnFloats, multiply: compute.multiply),
                                      communicator: comm)
            guard comm.rank == 0 else { return }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                print(String(decoding: try encoder.encode(r), as: UTF8.self))
                return
            }
            print("\(r.model) at \(r.image_size)x\(r.image_size), global batch \(r.batch_size) on \(r.ranks) rank(s), overlap \(r.overlap ? "on" : "off")\(r.compression == "none" ? "" : ", compression \(r.compression)"), convolution \(r.convolution), \(r.steps) steps")
            print("  on \(r.machine.summary); OpenBLAS core \(r.blas_core); own kernels \(r.kernels)")
            print("  layer                    forward ms  backward ms")
            for l in r.layers {
                print("  \(l.name.padding(toLength: 22, withPad: " ", startingAt: 0)) \(String(format: "%10.2f  %11.2f", l.forward_ms, l.backward_ms))   \(l.summary)")
            }
            print(String(format: "  step %.1f ms; %.1f images/s; %.1f GFLOP/s achieved (all ranks)", r.step_ms, r.images_per_s, r.gflops))
            print(String(format: "  all-reduce of %.1f MB alone: %.2f ms; exposed communication %.1f%% of the step; %.2f MB sent into all-reduces per step (%.1fx fewer than fp32)",
                         r.gradient_mb, r.allreduce_ms, r.comm_fraction * 100, r.wire_mb, r.gradient_mb / max(r.wire_mb, 1e-9)))
        }
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
            print("  on \(MachineDescription.current().summary)")
        }
    }
}
