import ArgumentParser
import CatdogData
import CatdogDistributed
import CatdogEngine
import CatdogInference
import CatdogRun
import CatdogSupport
import CatdogTraining
import Foundation

/// What network `train` and `bench` build, and how big a step is.
struct ModelOptions: ParsableArguments {
    // Optional underneath, so that a resume can tell an option given from its default.
    @Option(name: .customLong("model"), help: "Model: \(ModelZoo.names.joined(separator: ", ")) (see `catdog-dist models`). (default: \(ModelZoo.defaultModel))")
    var givenModel: String?

    @Option(name: .customLong("image-size"), help: "Square input size in pixels; train: the size the model validates, checkpoints and predicts at (see --train-size). (default: \(TrainingConfig().imageSize); train from scratch with the resnets: \(Recipe.standard.imageSize), trained at \(Recipe.standard.trainSize), or \(Recipe.standard.longRun!.imageSize) when a budget holds enough epochs (see train --train-size))")
    var givenImageSize: Int?

    @Option(name: .customLong("batch-size"), help: "Global batch size, divided among the ranks (each rank takes batch/N). (default: \(TrainingConfig().globalBatch))")
    var givenBatchSize: Int?

    var model: String { givenModel ?? ModelZoo.defaultModel }
    var imageSize: Int { givenImageSize ?? TrainingConfig().imageSize }
    var batchSize: Int { givenBatchSize ?? TrainingConfig().globalBatch }

    func validate() throws {
        guard ModelZoo.names.contains(model) else { throw ValidationError(ModelZoo.UnknownModel(name: model).description + " (see `catdog-dist models`)") }
        guard (16...1024).contains(imageSize) else { throw ValidationError("--image-size must be between 16 and 1024") }
        guard RunLimits.globalBatch.contains(batchSize) else {
            throw ValidationError("--batch-size must be between 1 and \(RunLimits.globalBatch.upperBound)")
        }
        do { _ = try ModelZoo.builder(model, imageSize: imageSize).counts() } catch {
            throw ValidationError("--image-size \(imageSize) does not suit \(model) (\(error)); use a larger --image-size")
        }
    }
}

/// How gradients cross the ranks, for `train` and `bench`.
struct AllReduceOptions: ParsableArguments {
    @Flag(name: .customLong("overlap"), inversion: .prefixedNo, help: "Overlap the gradient all-reduce with backward (Horovod/DDP-style buckets). (default: --overlap)")
    var givenOverlap: Bool?
    var overlap: Bool { givenOverlap ?? TrainingConfig().overlap }

    @Option(name: .customLong("bucket-mib"), help: "Gradient bucket size for the overlapped all-reduce, in MiB. (default: \(TrainingConfig().bucketMiB), or \(TrainingConfig.powerSGDBucketMiB) with --compress powersgd:R, whose last bucket's two rounds come after backward)")
    var givenBucketMib: Double?
    /// The bucket size given, else the default for the compression asked for.
    var bucketMib: Double {
        if let givenBucketMib { return givenBucketMib }
        if case .powerSGD = givenCompression { return TrainingConfig.powerSGDBucketMiB }
        return TrainingConfig().bucketMiB
    }

    @Flag(help: "All-reduce gradients in fp16 (Horovod-style compression): half the bytes on slow networks. The same as --compress fp16.")
    var fp16Allreduce = false

    @Option(help: """
        Gradient compression: `none` (exact fp32 sums), `fp16` (half the bytes), or `powersgd:R` \
        (PowerSGD of rank R, e.g. 8: each weight matrix's gradient sent as two rank-R factors, \
        10-100x fewer bytes; exact during the learning-rate warmup; biases and BatchNorm exact; at \
        batch 512, rank 8 reached 95% in as many updates as exact sums, rank 4 in 3 epochs more); \
        `powersgd:R:bf16` sends the two factors in bf16, half their bytes (the error feedback keeps \
        what the rounding drops). PowerSGD's factors and error feedback follow the ranks' summed \
        gradients, so like the exact sums its result depends on the rank count only through \
        rounding; a resume on the same rank count is bit-exact (up to 16 ranks, whose error \
        feedback checkpoints hold; larger runs keep its sum), on another the written ranks' error \
        feedback goes on summed, which continues the run to rounding. Eight machines on 1 Gbit/s \
        reached 95% soonest with --batch-size 1024, powersgd:16:bf16 and --allreduce hierarchical \
        (docs/across-machines.md). \
        With --allreduce hierarchical, PowerSGD runs between machines: each machine's ranks sum \
        every bucket exactly through shared memory into one of them, in turn, which compresses it \
        (one error feedback a machine) and exchanges its factors with its counterparts on the \
        other machines. (default: none)
        """)
    var compress: String?

    @Option(name: .customLong("allreduce"), help: """
        How gradients are summed: `flat` (one all-reduce over every rank), \
        `hierarchical` (the ranks of each machine sum through shared memory into one, those \
        all-reduce across the network, and each shares the sum with its machine: one rank per \
        machine sends, once) or `parted` (each rank adds up a part of every bucket in proportion \
        to its share of the batch and sends the sum to the others, all at once: a slow rank \
        sums little and waits on the others twice a bucket, not at every step of a ring; for \
        labs of unequal machines with --balance). The sums are the same up to the order of \
        additions; measured on machines of 2 ranks, flat was as fast as hierarchical \
        (docs/across-machines.md). With --compress powersgd:R, `hierarchical` compresses between \
        machines only, each machine's ranks taking the buckets in turn; `parted` takes no \
        compression, and neither takes fp16. (default: flat)
        """)
    var givenTopology: AllReduceTopology?

    @Option(help: ArgumentHelp("Group consecutive ranks into machines of this many for --allreduce hierarchical (to emulate machines of several cores on one computer); default: the ranks that share memory.", visibility: .hidden))
    var machineRanks: Int?

    /// The compression asked for, or nil when neither --compress nor --fp16-allreduce was given.
    var givenCompression: GradientCompression? {
        if let compress { return GradientCompression(parsing: compress) }
        return fp16Allreduce ? .fp16 : nil
    }

    func validate() throws {
        if let compress {
            guard let parsed = GradientCompression(parsing: compress) else {
                throw ValidationError("--compress \(compress) is not none, fp16, powersgd:R or powersgd:R:bf16 with R from 1 to \(GradientCompression.maxPowerSGDRank)")
            }
            if fp16Allreduce, parsed != .fp16 { throw ValidationError("--fp16-allreduce and --compress \(compress) contradict each other: give one") }
        }
        if let machineRanks, !(1...4096).contains(machineRanks) { throw ValidationError("--machine-ranks must be between 1 and 4096") }
        if let topology = givenTopology, let compression = givenCompression, !topology.takes(compression) {
            throw ValidationError("--allreduce \(topology) sums exact fp32 gradients\(topology == .hierarchical ? " or PowerSGD" : ""); it contradicts --compress \(compress ?? "fp16"): give one")
        }
        guard bucketMib > 0, bucketMib <= RunLimits.bucketMiB.upperBound else {
            throw ValidationError("--bucket-mib must be a positive number of at most \(Int(RunLimits.bucketMiB.upperBound))")
        }
    }
}

/// Per-process compute settings, for every command that runs a network.
struct ComputeOptions: ParsableArguments {
    @Option(help: "BLAS threads per rank (one per rank is fastest: run one rank per core).")
    var threads = 1

    @Option(help: "Convolution algorithm: auto (for forward, dX and dW of stride-1 3x3 layers with >= 16 channels in and out: Winograd F(4x4,3x3) in passes large enough for it (see --winograd-min-tiles), F(2x2,3x3) in smaller passes of at least 16 tiles of 2x2; im2col + gemm for the rest), winograd2 (F(2x2,3x3) in every pass of those layers) or im2col (everywhere); the last two for comparison. Not recorded in checkpoints: a run may resume with another.")
    var convolution = ConvolutionOptions.Algorithm.auto

    @Option(help: "Who multiplies the convolutions' matrices: own (our gemm, AVX-512 or AVX2, where the width is a multiple of 16: Winograd's and im2col's products, and 1x1 convolutions' with AVX-512; OpenBLAS elsewhere) or blas (OpenBLAS everywhere, for comparison).")
    var multiply = ConvolutionOptions.Multiply.own

    @Option(help: "Instruction set of our C kernels: auto (the best this CPU has), avx512f, avx2 or baseline; the narrower ones measure how a machine without AVX-512 would fare. CATDOG_KERNELS=avx2 or baseline in the environment makes the process behave as on a CPU without the wider sets, AVX512_BF16 included (docs/testing.md).")
    var kernels = KernelInstructionSet.auto

    @Option(help: "With --convolution auto: Winograd F(4x4) only in passes with at least this many 4x4 output tiles (images x tiles an image; more on maps that do not divide into 4x4 tiles, where F(4x4) computes past the edge); below, F(2x2) (where the pass has at least 16 tiles of 2x2) or im2col, where they are faster. 0 = F(4x4) at every size, for comparison.")
    var winogradMinTiles = ConvolutionOptions().winogradMinimumTiles

    @Option(help: """
        Precision of the convolutions' matrix products: auto, fp32, or bf16 (operands rounded to \
        bf16, products summed in fp32 by AVX512_BF16's vdpbf16ps: forward, dX and dW of every \
        convolution, Winograd's products included; weights, gradient sums, optimizer, loss, \
        BatchNorm, the Winograd transforms and the first layer's forward and weight gradient, \
        direct convolutions on the image's 3 channels, stay fp32). auto (the default, but for \
        bench: fp32) is bf16 for the networks trained from scratch (the resnets, vgg, simple) when every \
        rank can compute in it, and fp32 when any rank cannot and for EfficientNet-Lite; train's \
        log says which it took and why. bf16 is refused on a CPU without AVX512_BF16, with \
        --kernels avx2 or baseline and with --multiply blas. Not recorded in checkpoints: a run \
        may resume in the other precision.
        """)
    var precision: PrecisionChoice?

    var convolutionOptions: ConvolutionOptions { convolutionOptions() }

    /// The options for `precision`, by default this process's own (`localPrecision`).
    func convolutionOptions(columnFloats: Int = ConvolutionOptions().columnFloats, precision: Precision? = nil) -> ConvolutionOptions {
        ConvolutionOptions(algorithm: convolution, columnFloats: columnFloats, multiply: multiply,
                           winogradMinimumTiles: winogradMinTiles, precision: precision ?? localPrecision())
    }

    /// Why this process cannot compute in bf16 (after `apply`), or nil when it can.
    var bf16Obstacle: String? {
        multiply == .blas ? "--multiply blas multiplies in fp32" : Precision.bf16.unavailableReason
    }

    /// Whether auto computes `model` in bf16: the networks trained from scratch. EfficientNet-Lite's
    /// transfer learning was measured in fp32, and stays there.
    static func autoTakesBF16(model: String) -> Bool { EfficientNetLite(model: model) == nil }

    /// What `--precision` names, else `commandDefault`, for `model` (nil: any): auto is bf16
    /// where this process can compute in it. Commands whose ranks must agree use
    /// `agreedPrecision` instead.
    func localPrecision(default commandDefault: PrecisionChoice = .fp32, model: String? = nil) -> Precision {
        let choice = precision ?? commandDefault
        return choice.named ?? (bf16Obstacle == nil && (model.map(Self.autoTakesBF16) ?? true) ? .bf16 : .fp32)
    }

    /// The precision every rank computes `model` in, and why, for the log: what `--precision`
    /// names, else `commandDefault` (`agreedPrecision(_:model:obstacle:comm:)`).
    func agreedPrecision(default commandDefault: PrecisionChoice, model: String, comm: Communicator) throws -> (precision: Precision, why: String) {
        try Self.agreedPrecision(precision ?? commandDefault, model: model, obstacle: bf16Obstacle, comm: comm)
    }

    /// auto is bf16 for a network trained from scratch only when no rank has an `obstacle` to it
    /// (one all-reduce), so that a step's arithmetic is the same on every rank; fp32 and bf16 are
    /// what they say (`apply` refused bf16 where it cannot run).
    static func agreedPrecision(_ choice: PrecisionChoice, model: String, obstacle: String?,
                                comm: Communicator) throws -> (precision: Precision, why: String) {
        if let named = choice.named { return (named, "--precision \(named.rawValue)") }
        guard autoTakesBF16(model: model) else { return (.fp32, "--precision auto: \(model) was measured in fp32") }
        var lacking = [Double](repeating: 0, count: comm.size)
        if obstacle != nil { lacking[comm.rank] = 1 }
        try comm.allReduceSum(&lacking)
        guard let first = lacking.firstIndex(where: { $0 > 0 }) else {
            return (.bf16, "--precision auto: every rank can compute in bf16; --precision fp32 for fp32")
        }
        let count = lacking.filter { $0 > 0 }.count
        let who = count == 1 ? "rank \(first)" : "\(count) ranks (the first: rank \(first))"
        let reason = first == comm.rank ? obstacle.map { ": \($0)" } ?? ""
                                        : ": no AVX512_BF16, or --kernels avx2 or baseline, or --multiply blas"
        return (.fp32, "--precision auto: \(who) cannot compute in bf16\(reason)")
    }

    /// Sets the BLAS threads and our kernels' instruction set for this process; throws when
    /// this machine cannot compute in the precision asked for.
    func apply() throws {
        setBLASThreads(threads)
        // The kernels read CATDOG_KERNELS themselves and ignore what is not a set: refused here.
        if let value = ProcessInfo.processInfo.environment["CATDOG_KERNELS"], !value.isEmpty,
           KernelInstructionSet(rawValue: value) == nil {
            throw BadKernelsVariable(value: value)
        }
        try kernels.select()
        if precision == .bf16, let reason = Precision.bf16.unavailableReason { throw PrecisionUnavailable(precision: .bf16, reason: reason) }
    }

    struct BadKernelsVariable: Error, CustomStringConvertible {
        let value: String
        var description: String {
            "CATDOG_KERNELS=\(value) in the environment is not an instruction set; set it to avx2 or baseline (to stand in for an older CPU), or unset it"
        }
    }

    struct PrecisionUnavailable: Error, CustomStringConvertible {
        let precision: Precision, reason: String
        var description: String {
            "--precision \(precision.rawValue) cannot run here: \(reason); use --precision fp32, or leave this machine out of the run"
        }
    }

    func validate() throws {
        if precision == .bf16, multiply == .blas {
            throw ValidationError("--precision bf16 runs on our gemm; it contradicts --multiply blas: give one")
        }
        guard (1...1024).contains(threads) else { throw ValidationError("--threads must be between 1 and 1024") }
        guard (0...1_000_000).contains(winogradMinTiles) else { throw ValidationError("--winograd-min-tiles must be between 0 and 1000000") }
    }
}

/// Failure rehearsal for tests and users: `--inject-fault RANK:N` makes rank RANK fail at
/// its N-th gradient reduction (0-based), as a broken rank would; `--inject-stop RANK:U`
/// preempts rank RANK after update U, `RANK:U:evaluation` during the evaluation that ends
/// the epoch of update U.
struct FaultOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Rehearse a failing rank: RANK:N fails rank RANK at its N-th gradient all-reduce.", visibility: .hidden))
    var injectFault: String?

    @Option(help: ArgumentHelp("""
        Rehearse a preemption: RANK:U sends rank RANK a SIGUSR1 once it has trained update U; RANK:U:evaluation once \
        the evaluation that ends the epoch of update U is under way.
        """, visibility: .hidden))
    var injectStop: String?

    /// `--inject-stop`, parsed.
    struct InjectedStop {
        var rank: Int, update: Int, duringEvaluation: Bool

        init?(parsing text: String) {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard (2...3).contains(parts.count), let rank = Int(parts[0]), let update = Int(parts[1]), rank >= 0, update >= 1,
                  parts.count == 2 || parts[2] == "evaluation" else { return nil }
            (self.rank, self.update, duringEvaluation) = (rank, update, parts.count == 3)
        }
    }

    func validate() throws {
        if let injectFault, FaultInjectingCommunicator.Plan(parsing: injectFault) == nil {
            throw ValidationError("--inject-fault takes RANK:N with whole numbers, e.g. 1:3")
        }
        if let injectStop, InjectedStop(parsing: injectStop) == nil {
            throw ValidationError("--inject-stop takes RANK:U or RANK:U:evaluation with whole numbers, U ≥ 1, e.g. 1:3")
        }
    }

    /// The trainer's stop signal: the process's, and on the rank `--inject-stop` names a real
    /// SIGUSR1 to itself when it is due (so that it takes the same path as one from outside).
    func stopSignal(rank: Int, trainer: Trainer) -> () -> Int32 {
        guard let text = injectStop, let stop = InjectedStop(parsing: text), stop.rank == rank else { return { StopSignals.received } }
        return { [unowned trainer] in
            if StopSignals.received == 0, trainer.globalStep >= stop.update,
               !stop.duringEvaluation || trainer.stepInEpoch == trainer.stepsPerEpoch {
                raise(SIGUSR1)
                _ = StopSignals.wait(upTo: 5)
            }
            return StopSignals.received
        }
    }

    /// `comm`, wrapped so that it fails as asked.
    func wrap(_ comm: Communicator) -> Communicator {
        guard let text = injectFault, let plan = FaultInjectingCommunicator.Plan(parsing: text) else { return comm }
        return FaultInjectingCommunicator(wrapping: comm, plan: plan)
    }
}

/// What `--freeze` says: which part of an EfficientNet-Lite backbone stays fixed.
enum FreezeSpec: ExpressibleByArgument, Equatable, CustomStringConvertible {
    /// Feature extraction: the whole backbone.
    case backbone
    /// Fine-tune blocks N… and the head; the stem and blocks 0...N-1 stay frozen (the model's
    /// number of blocks bounds N: `FineTuning.run` says so).
    case until(Int)
    /// The whole network trains.
    case none

    init?(argument: String) {
        switch argument {
        case "backbone": self = .backbone
        case "none": self = .none
        default:
            guard argument.hasPrefix("until:"), let n = Int(argument.dropFirst(6)), (0...1000).contains(n) else { return nil }
            self = .until(n)
        }
    }

    var description: String {
        switch self {
        case .backbone: "backbone"
        case .until(let n): "until:\(n)"
        case .none: "none"
        }
    }

    static var defaultValueDescription: String { "backbone" }
}

extension OptimizerKind: ExpressibleByArgument {}
extension LearningRateSchedule.Decay: ExpressibleByArgument {}
extension Resize.Fit: ExpressibleByArgument {}
extension Preprocessing.Scale: ExpressibleByArgument {}
extension ConvolutionOptions.Algorithm: ExpressibleByArgument {}
extension ConvolutionOptions.Multiply: ExpressibleByArgument {}
/// `--precision`: the products' precision, or auto (bf16 where every rank can compute in it).
enum PrecisionChoice: String, CaseIterable, ExpressibleByArgument {
    case auto, fp32, bf16

    /// The precision fp32 and bf16 name; nil for auto, which depends on the ranks and the model.
    var named: Precision? { Precision(rawValue: rawValue) }
}

/// `--allreduce`: flat, hierarchical or parted.
extension AllReduceTopology: ExpressibleByArgument {}
extension KernelInstructionSet: ExpressibleByArgument {}
extension TrainingData.Cache: ExpressibleByArgument {}

/// What `train`'s validation scores: each image, or the mean with its mirror image (`--val-tta`).
enum ValidationTTA: String, ExpressibleByArgument, CaseIterable {
    case flip, none
}

extension TestTimeAugmentation: ExpressibleByArgument {}

/// `--tta` and `--tta-flip` of evaluate, predict and submit: which views of each image are
/// scored and averaged.
struct TestTimeOptions: ParsableArguments {
    @Flag(help: "Test-time augmentation: average each image with its mirror image (= --tta flip).")
    var ttaFlip = false

    @Option(help: """
        Test-time augmentation: none; flip (each image and its mirror image); crops (the centre \
        and the four corners of the stored square, each also mirrored: 10 views); shift (the \
        centre and the crop moved a quarter of the crop margin each way, each also mirrored: 10 \
        views). crops and shift take 5× flip's time and did not beat it in our measurements \
        (docs/results.md). (default: none, or flip with --tta-flip)
        """)
    var tta: TestTimeAugmentation?

    var resolved: TestTimeAugmentation { tta ?? (ttaFlip ? .flip : .none) }

    func validate() throws {
        if ttaFlip, let tta, tta != .flip {
            throw ValidationError("--tta-flip and --tta \(tta.rawValue) contradict each other: give one")
        }
    }
}

/// Prints `value` as one line of JSON with sorted keys (what `--json` prints).
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
