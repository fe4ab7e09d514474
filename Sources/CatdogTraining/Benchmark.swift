import CatdogData
import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

/// Training throughput on synthetic data (random pixels and labels), with per-layer times and
/// the all-reduce's cost: what `catdog-dist bench` reports.
public struct BenchmarkResult: Codable, Sendable {
    public var model: String
    public var image_size: Int
    public var batch_size: Int
    public var ranks: Int
    public var steps: Int
    public var overlap: Bool
    public var fp16_allreduce: Bool
    /// `none`, `fp16` or `powersgd:R`.
    public var compression: String
    /// Bytes one rank sends into the all-reduces of one step.
    public var wire_mb: Double
    /// `ConvolutionOptions.Algorithm`: auto (Winograd where it applies) or im2col.
    public var convolution: String
    /// `Precision` of the convolutions' products: fp32 or bf16.
    public var precision: String?
    public var images_per_s: Double
    /// Achieved training GFLOP/s over all ranks (3 × forward FLOPs per image).
    public var gflops: Double
    public var step_ms: Double
    /// Share of the step spent waiting for gradients after backward (not hidden by overlap).
    public var comm_fraction: Double
    /// One blocking all-reduce of all gradients, measured alone.
    public var allreduce_ms: Double
    public var gradient_mb: Double
    public var layers: [Layer]
    /// Milliseconds a step, mean over ranks: where the step's time goes. (Both nil in results
    /// written before they were measured: profiles from older builds still load.)
    public var phases: Phases?
    /// Where it ran: CPU model, vector extensions, and the OpenBLAS kernel family.
    public var machine: MachineDescription
    public var blas_core: String
    /// The vector extension catdog-dist's own C kernels (Winograd F(4×4) transforms) run with.
    public var kernels: String
    /// The transparent huge pages large buffers were in (`HugePages.mode`; nil in results of
    /// builds before them).
    public var huge_pages: String?

    public struct Phases: Codable, Sendable {
        /// The convolutions' matrix products (`precision`), packing included.
        public var products_ms: Double
        /// Winograd F(4×4)'s transforms (input, output, filter, and their gradients').
        public var winograd_transforms_ms: Double
        /// im2col, col2im and kernel transposes.
        public var im2col_ms: Double
        /// The rest of forward and backward: BatchNorm, activations, pooling, bias, dense layers.
        public var other_layers_ms: Double
        /// The update (`BenchmarkUpdate`; `bench`'s is a bare `train`'s: AdamW with its
        /// weight decay and the weights' moving average).
        public var optimizer_ms: Double
        /// Waiting for gradients after backward (what overlap did not hide).
        public var allreduce_wait_ms: Double
        /// The convolutions' products, transforms and layout work by pass: forward, dX (the
        /// input's gradient) and dW (the kernel's). Absent from results of earlier builds.
        public var convolution_forward_ms: Double?
        public var convolution_input_gradient_ms: Double?
        public var convolution_kernel_gradient_ms: Double?
    }

    public struct Layer: Codable, Sendable {
        public var name: String
        public var summary: String
        public var forward_ms: Double
        public var backward_ms: Double
    }
}

/// The update a step is timed with: the optimizer, its weight decay and the weights' moving
/// average. `standard` is a bare `train`'s (`Recipe.standard`: AdamW, 0.05, 0.999); a run
/// measuring its own speed passes its own.
public struct BenchmarkUpdate: Sendable {
    public var optimizer: OptimizerKind
    public var momentum: Float
    public var weightDecay: Float
    public var ema: Double?
    public init(optimizer: OptimizerKind, momentum: Float = 0.9, weightDecay: Float, ema: Double?) {
        self.optimizer = optimizer
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.ema = ema.flatMap { $0 > 0 ? $0 : nil }
    }
    public static let standard = BenchmarkUpdate(optimizer: Recipe.standard.optimizer, weightDecay: Recipe.standard.weightDecay,
                                                 ema: Recipe.standard.ema)

    func makeOptimizer(_ network: Network) -> Optimizer {
        optimizer.make(count: network.parameterCount, momentum: momentum,
                       tensors: network.parameterSlots.map { $0.offset..<($0.offset + $0.count) })
    }
}

/// The weights' moving average of a `BenchmarkUpdate` (BatchNorm's statistics too), so that
/// `bench` and the lab emulator pay for it as training does: the weights' in the optimizer's
/// pass (`average` for the coming update), the statistics' after.
final class BenchmarkAverage {
    private let network: Network
    private let ema: Double?
    private let parameters: FloatBuffer, state: FloatBuffer
    private var updates = 0

    init(_ network: Network, ema: Double?) {
        self.network = network
        self.ema = ema
        parameters = FloatBuffer(ema == nil ? [] : network.parameters.array)
        state = FloatBuffer(ema == nil ? [] : network.state.array)
    }

    /// The weights' average and its decay for the coming update, nil without one.
    var average: (weights: FloatBuffer, decay: Float)? {
        ema.map { (parameters, WeightAverage.decay($0, step: updates + 1)) }
    }

    /// After the update: BatchNorm's statistics.
    func updated() {
        updates += 1
        guard let ema else { return }
        WeightAverage.update(state, toward: network.state, decay: WeightAverage.decay(ema, step: updates))
    }
}

public enum Benchmark {
    /// A benchmark times one pass of a rank's whole batch (training splits a large one into
    /// micro-batches), so its activations grow with the batch: `bench --batch-size 65536` was
    /// killed by the kernel at 24 GB. Refused, before anything is allocated, when they would
    /// take more than `Trainer.batchMemoryShare` of this rank's part of the memory the kernel
    /// says is available (as `Trainer.checkBatchMemory`).
    public struct TooLarge: Error, CustomStringConvertible {
        public let description: String
    }

    static func checkMemory(_ network: Network, model: String, imageSize: Int, globalBatch: Int, batch: Int, ranksOnMachine: Int = 1,
                            available: AvailableMemory? = MemoryStatus.available()) throws {
        guard let available, let limit = Trainer.batchMemoryLimit(available: available.bytes, ranksOnMachine: ranksOnMachine) else { return }
        let bytes = Double(batch) * Double(network.activationBytesPerSample)
        guard bytes > limit else { return }
        throw TooLarge(description: String(
            format: "--batch-size %d times one pass of %d images a rank, whose activations (%@ at %dx%d) would take %.1f GiB, more than %@: use a smaller --batch-size (train splits a large batch into micro-batches; bench times one pass)%@",
            globalBatch, batch, model, imageSize, imageSize, bytes / 1_073_741_824,
            Trainer.describeShare("a quarter", of: available, ranksOnMachine: ranksOnMachine), available.raiseLimit))
    }

    /// The weights and what is kept beside them, refused before they are built as `train`
    /// refuses them (`Trainer.checkModelMemory`).
    static func checkModelMemory(model: String, imageSize: Int, update: BenchmarkUpdate, compression: GradientCompression,
                                 communicator comm: Communicator) throws {
        var config = TrainingConfig()
        config.model = model
        config.imageSize = imageSize
        config.optimizer = update.optimizer
        config.ema = update.ema
        if case .powerSGD(let rank, _) = compression { config.powerSGDRank = rank }
        let counts = try ModelZoo.builder(model, imageSize: imageSize).counts()
        try Trainer.checkModelMemory(config, parameters: counts.parameters, state: counts.state, ranks: comm.size, rank: comm.rank,
                                     ranksOnMachine: comm.ranksOnMachine, available: MemoryStatus.available())
    }

    /// A lone blocking all-reduce of every gradient (the mean of 5), for the scaling model.
    static func loneAllReduceSeconds(_ network: Network, _ comm: Communicator) throws -> Double {
        let repeats = 5
        try comm.barrier()
        let start = Date()
        for _ in 0..<repeats { try comm.allReduceSum(network.gradients.pointer, count: network.parameterCount) }
        return Date().timeIntervalSince(start) / Double(repeats)
    }

    public static func run(model: String, imageSize: Int, globalBatch: Int, steps: Int, warmupSteps: Int,
                           overlap: Bool, bucketMiB: Double, compression: GradientCompression = .none, allReduce: AllReduceTopology = .flat,
                           convolution: ConvolutionOptions = .init(), update: BenchmarkUpdate = .standard,
                           communicator comm: Communicator, progress: ((_ done: Int, _ total: Int) -> Void)? = nil) throws -> BenchmarkResult {
        guard globalBatch % comm.size == 0 else {
            throw EpochPlan.BatchSizeError(description: "the global batch size \(globalBatch) does not divide among \(comm.size) ranks")
        }
        let batch = globalBatch / comm.size
        try checkModelMemory(model: model, imageSize: imageSize, update: update, compression: compression, communicator: comm)
        let network = try ModelZoo.build(model, imageSize: imageSize, convolution: convolution)
        try checkMemory(network, model: model, imageSize: imageSize, globalBatch: globalBatch, batch: batch, ranksOnMachine: comm.ranksOnMachine)
        network.reserve(maxBatch: batch)
        network.initialize(seed: 1)
        let step = DataParallelStep(network: network, optimizer: update.makeOptimizer(network), communicator: comm,
                                    overlap: overlap, bucketBytes: Int(bucketMiB * 1_048_576), compression: compression,
                                    allReduce: allReduce)
        var random = Random(seed: 7, UInt64(comm.rank))
        for i in 0..<(batch * network.inputShape.count) { network.input[i] = random.uniform() }
        for i in 0..<batch { step.labels[i] = Float(random.below(2)) }
        let context = PassContext(training: true, seed: 1)
        let average = BenchmarkAverage(network, ema: update.ema)
        var averageSeconds = 0.0
        var done = 0
        /// One training step with the moving average (BatchNorm's, after it, timed with the
        /// optimizer), then the progress through the warm-up and timed steps together.
        func trainingStep() throws {
            _ = try step.run(batch: batch, normalizer: globalBatch, context: context, learningRate: 1e-4, weightDecay: update.weightDecay,
                             average: average.average)
            let averaging = Date()
            average.updated()
            averageSeconds += Date().timeIntervalSince(averaging)
            done += 1
            progress?(done, warmupSteps + steps)
        }
        for _ in 0..<warmupSteps { try trainingStep() }
        try comm.barrier()
        step.resetTimers()
        averageSeconds = 0
        network.profiling = true
        network.resetProfile()
        ConvolutionPhases.reset()
        ConvolutionPhases.enabled = true
        defer { ConvolutionPhases.enabled = false }
        let start = Date()
        for _ in 0..<steps { try trainingStep() }
        try comm.barrier()
        let seconds = Date().timeIntervalSince(start)
        network.profiling = false
        ConvolutionPhases.enabled = false
        let allReduceSeconds = try loneAllReduceSeconds(network, comm)
        let layerSeconds = network.forwardSeconds.reduce(0, +) + network.backwardSeconds.reduce(0, +)
        var totals = [seconds, step.exposedCommSeconds, allReduceSeconds, step.optimizerSeconds + averageSeconds, layerSeconds] + ConvolutionPhases.seconds
            + ConvolutionPhases.passSeconds
        try comm.allReduceSum(&totals)
        /// Milliseconds a step, mean over ranks.
        func perStep(_ total: Double) -> Double { total / Double(comm.size) / Double(steps) * 1000 }
        let products = perStep(totals[5]), transforms = perStep(totals[6]), layout = perStep(totals[7])
        let phases = BenchmarkResult.Phases(products_ms: products, winograd_transforms_ms: transforms, im2col_ms: layout,
                                            other_layers_ms: perStep(totals[4]) - products - transforms - layout,
                                            optimizer_ms: perStep(totals[3]), allreduce_wait_ms: perStep(totals[1]),
                                            convolution_forward_ms: perStep(totals[8]), convolution_input_gradient_ms: perStep(totals[9]),
                                            convolution_kernel_gradient_ms: perStep(totals[10]))
        let meanSeconds = totals[0] / Double(comm.size)
        let imagesPerSecond = Double(globalBatch * steps) / meanSeconds
        let layers = network.nodes.indices.dropFirst().map { i in
            BenchmarkResult.Layer(name: network.nodes[i].name, summary: network.nodes[i].layer!.summary,
                                  forward_ms: network.forwardSeconds[i] * 1000 / Double(steps),
                                  backward_ms: network.backwardSeconds[i] * 1000 / Double(steps))
        }
        return BenchmarkResult(
            model: model, image_size: imageSize, batch_size: globalBatch, ranks: comm.size, steps: steps, overlap: overlap, fp16_allreduce: compression == .fp16,
            compression: compression.description,
            wire_mb: Double(step.reduction.buckets.indices.reduce(0) { $0 + step.reduction.wireBytes(bucket: $1, update: warmupSteps) }) / 1e6,
            convolution: convolution.algorithm.rawValue, precision: convolution.precision.rawValue,
            images_per_s: imagesPerSecond, gflops: imagesPerSecond * 3 * Double(network.forwardFLOPs) / 1e9,
            step_ms: meanSeconds * 1000 / Double(steps),
            comm_fraction: totals[1] / totals[0], allreduce_ms: totals[2] / Double(comm.size) * 1000,
            gradient_mb: Double(network.parameterCount * 4) / 1e6, layers: layers, phases: phases,
            machine: .current(), blas_core: blasCoreName, kernels: kernelInstructionSet, huge_pages: HugePages.mode)
    }
}
