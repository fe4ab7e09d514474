import ArgumentParser
import Foundation
import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogTraining
import CatdogData
import CatdogCheckpoint
@testable import catdog_dist
import XCTest

/// Command lines parsed and validated in-process, as `catdog-dist` does before any work: what
/// each refuses and why, in microseconds instead of a process each.
final class CommandLineTests: XCTestCase {
    /// Parses `arguments` for `command`; the error's message as the program prints it, or nil.
    func refusal<C: ParsableCommand>(_ command: C.Type, _ arguments: [String]) -> String? {
        do {
            _ = try command.parse(arguments)
            return nil
        } catch {
            return command.message(for: error)
        }
    }

    func assertRefused<C: ParsableCommand>(_ command: C.Type, _ arguments: [String], saying expected: String,
                                           file: StaticString = #filePath, line: UInt = #line) {
        guard let message = refusal(command, arguments) else {
            return XCTFail("\(command) \(arguments) was accepted", file: file, line: line)
        }
        XCTAssertTrue(message.contains(expected), "\(command) \(arguments): \(message)", file: file, line: line)
    }

    func testTrainRefusesNumbersOutOfRangeAndOptionsOfAnotherModel() {
        let base = ["--data", "train/", "--checkpoint-dir", "ck"]
        assertRefused(Train.self, base + ["--epochs", "0"], saying: "--epochs must be positive")
        assertRefused(Train.self, base + ["--lr", "nan"], saying: "--lr must be a positive number")
        assertRefused(Train.self, base + ["--val-fraction", "1"], saying: "--val-fraction must be in (0, 1)")
        assertRefused(Train.self, base + ["--ema", "1"], saying: "--ema must be in [0, 1)")
        assertRefused(Train.self, base + ["--balance", "fast"], saying: "is not `even`, `auto` or weights")
        assertRefused(Train.self, base + ["--resize-from", "32", "--model", "vgg"], saying: "training at another size than --image-size needs a model with global pooling")
        assertRefused(Train.self, base + ["--freeze", "until:3"], saying: "\(ModelZoo.defaultModel) trains from scratch")
        assertRefused(Train.self, base + ["--model", "alexnet"], saying: "alexnet")
        // Each EfficientNet-Lite's own blocks bound --freeze until:N.
        assertRefused(Train.self, base + ["--model", "efficientnet-lite0", "--freeze", "until:17"], saying: "blocks 0-15")
        assertRefused(Train.self, base + ["--model", "efficientnet-lite2", "--freeze", "until:22"], saying: "blocks 0-20")
        XCTAssertNil(refusal(Train.self, base + ["--model", "efficientnet-lite2", "--freeze", "until:21"]))
        assertRefused(Train.self, base + ["--precision", "bf16", "--multiply", "blas"], saying: "contradicts --multiply blas")
        assertRefused(Train.self, base + ["--precision", "fp16"], saying: "fp16")
        assertRefused(Bench.self, ["--precision", "bf16", "--multiply", "blas"], saying: "contradicts --multiply blas")
        assertRefused(Train.self, base + ["--allreduce", "parted", "--compress", "powersgd:4"], saying: "contradicts --compress powersgd:4")
        assertRefused(Train.self, base + ["--allreduce", "hierarchical", "--compress", "fp16"], saying: "sums exact fp32 gradients or PowerSGD; it contradicts --compress fp16")
        XCTAssertNil(refusal(Train.self, base + ["--allreduce", "hierarchical", "--compress", "powersgd:4:bf16"]))
        assertRefused(Train.self, base + ["--allreduce", "parted", "--fp16-allreduce"], saying: "--allreduce parted sums exact fp32 gradients; it contradicts --compress fp16")
        assertRefused(Train.self, base + ["--allreduce", "ring"], saying: "ring")
        for rehearsal in ["1", "1:0", "1:-3", "1:3:step", "1:3:evaluation:2", "a:3"] {
            assertRefused(Train.self, base + ["--inject-stop", rehearsal], saying: "--inject-stop takes RANK:U or RANK:U:evaluation")
        }
        XCTAssertNil(refusal(Train.self, base + ["--inject-stop", "1:3:evaluation"]))
        assertRefused(Train.self, ["--epochs", "3", "--checkpoint-dir", "ck"], saying: "--data")
        assertRefused(Train.self, ["--data", "train/"], saying: "--checkpoint-dir")
        // Without --model, --init-from's file names the network: one that is not there is refused by name.
        assertRefused(Train.self, base + ["--init-from", "/nonexistent/lite2.safetensors.zst"], saying: "--init-from: ")
        // A file that is not a checkpoint is refused by the checkpoint reader's own message.
        let garbage = FileManager.default.temporaryDirectory.appendingPathComponent("init-from-\(getpid()).safetensors.zst").path
        FileManager.default.createFile(atPath: garbage, contents: Data(repeating: 0x41, count: 4096))
        defer { try? FileManager.default.removeItem(atPath: garbage) }
        assertRefused(Train.self, base + ["--init-from", garbage], saying: "--init-from: checkpoint \(garbage): not a readable .safetensors.zst file")
    }

    /// What the command lines of the README and of docs/ parse to.
    func testTrainParsesTheDocumentedCommandLines() throws {
        let base = ["--data", "train/", "--checkpoint-dir", "ck"]
        let plain = try Train.parse(base)
        let config = try plain.makeConfig()
        XCTAssertEqual(config.model, "resnet-pool")
        XCTAssertNil(config.balance)
        XCTAssertEqual(plain.lite, nil)
        let budget = try Train.parse(base + ["--time-budget", "1800"]).makeConfig()
        XCTAssertEqual(budget.fillsBudget, true)
        XCTAssertEqual(budget.optimizer, Recipe.standard.optimizer)
        let lite2 = try Train.parse(base + ["--model", "efficientnet-lite2", "--init-from", "lite2.safetensors.zst"])
        XCTAssertEqual(lite2.lite?.variant, 2)
        XCTAssertTrue(lite2.calibrate)
        XCTAssertFalse(try Train.parse(base + ["--model", "efficientnet-lite0", "--no-calibrate"]).calibrate)
        let split = try Train.parse(base + ["--balance", "2,1", "--ghost-batch", "8"]).makeConfig()
        XCTAssertEqual(split.balance, "2,1")
        XCTAssertEqual(split.ghostBatch, 8)
        XCTAssertNil(plain.compute.precision)
        XCTAssertEqual(try Train.parse(base + ["--precision", "bf16"]).compute.convolutionOptions.route, .bf16)
        XCTAssertNil(try plain.makeConfig().hierarchicalAllReduce)
        XCTAssertEqual(try Train.parse(base + ["--allreduce", "hierarchical"]).makeConfig().hierarchicalAllReduce, true)
        let parted = try Train.parse(base + ["--allreduce", "parted"]).makeConfig()
        XCTAssertEqual(parted.allReduceTopology, .parted)
        XCTAssertEqual(parted.partedAllReduce, true)
        XCTAssertNil(parted.hierarchicalAllReduce)
        XCTAssertEqual(try plain.makeConfig().allReduceTopology, .flat)
    }

    /// `--precision auto`, the default of train, evaluate, predict and submit, is bf16 for a
    /// network trained from scratch only when every rank can compute in it: one rank that cannot
    /// puts every rank in fp32, and the log names the first such rank and why. EfficientNet-Lite
    /// stays in fp32; a precision named is taken as named; bench's default is fp32.
    func testPrecisionAutoIsBF16OnlyWhereEveryRankCanComputeInIt() throws {
        func agreed(_ choice: PrecisionChoice, model: String = "resnet", obstacles: [String?]) throws -> [(Precision, String)] {
            try ThreadCommunicator.run(ranks: obstacles.count) { comm in
                try ComputeOptions.agreedPrecision(choice, model: model, obstacle: obstacles[comm.rank], comm: comm)
            }.map { ($0.precision, $0.why) }
        }
        let every = try agreed(.auto, obstacles: [nil, nil, nil])
        XCTAssertEqual(every.map(\.0), [.bf16, .bf16, .bf16])
        XCTAssertTrue(every[0].1.contains("every rank can compute in bf16"), every[0].1)
        let one = try agreed(.auto, obstacles: [nil, "this CPU has no AVX512_BF16 instructions", nil])
        XCTAssertEqual(one.map(\.0), [.fp32, .fp32, .fp32])
        XCTAssertTrue(one[0].1.contains("rank 1 cannot compute in bf16: no AVX512_BF16, or"), one[0].1)
        XCTAssertTrue(one[1].1.contains("rank 1 cannot compute in bf16: this CPU has no AVX512_BF16 instructions"), one[1].1)
        let two = try agreed(.auto, obstacles: ["--multiply blas multiplies in fp32", nil, "x"])
        XCTAssertEqual(two.map(\.0), [.fp32, .fp32, .fp32])
        XCTAssertTrue(two[0].1.contains("2 ranks (the first: rank 0) cannot compute in bf16: --multiply blas"), two[0].1)
        XCTAssertEqual(try agreed(.auto, model: "efficientnet-lite0", obstacles: [nil, nil]).map(\.0), [.fp32, .fp32])
        XCTAssertEqual(try agreed(.fp32, obstacles: [nil, nil]).map(\.0), [.fp32, .fp32])
        XCTAssertEqual(try agreed(.bf16, obstacles: [nil, nil]).map(\.0), [.bf16, .bf16])

        let base = ["--data", "train/", "--checkpoint-dir", "ck"]
        let plain = try Train.parse(base).compute
        let here: Precision = plain.bf16Obstacle == nil ? .bf16 : .fp32
        XCTAssertEqual(plain.localPrecision(default: .auto, model: "resnet"), here)
        XCTAssertEqual(plain.localPrecision(default: .auto, model: "efficientnet-lite2"), .fp32)
        let blas = try Train.parse(base + ["--multiply", "blas"]).compute
        XCTAssertNotNil(blas.bf16Obstacle)
        XCTAssertEqual(blas.localPrecision(default: .auto, model: "resnet"), .fp32)
        XCTAssertEqual(try Train.parse(base + ["--precision", "fp32"]).compute.localPrecision(default: .auto, model: "resnet"), .fp32)
        XCTAssertEqual(try Bench.parse([]).compute.convolutionOptions.precision, .fp32)
    }

    /// One recipe whatever the run's length: a bare `train` fills the recipe's 30 minutes, and
    /// `--epochs`, `--time-budget` or both change only the length. What the command line sets
    /// stays; an optimizer without decoupled decay gets none (it would be L2); transfer
    /// learning keeps its own defaults (Adam, no average, no length of the recipe's).
    func testOneRecipeWhateverTheLengthAndGivenOptionsStay() throws {
        let base = ["--data", "train/", "--checkpoint-dir", "ck"]
        let r = Recipe.standard
        XCTAssertEqual(r.optimizer, .adamw)
        XCTAssertEqual(r.timeBudget, 1800)
        func config(_ extra: [String]) throws -> TrainingConfig { try Train.parse(base + extra).makeConfig() }
        let lengths: [([String], epochs: Int, budget: Double?, fills: Bool?, patience: Int)] = [
            ([], TrainingConfig.budgetEpochCap, r.timeBudget, true, 0),
            (["--epochs", "15"], 15, nil, nil, TrainingConfig().patience),
            (["--time-budget", "600"], TrainingConfig.budgetEpochCap, 600, true, 0),
            (["--epochs", "40", "--time-budget", "600"], 40, 600, nil, TrainingConfig().patience),
        ]
        for (extra, epochs, budget, fills, patience) in lengths {
            let c = try config(extra)
            XCTAssertEqual(c.optimizer, r.optimizer, "\(extra)")
            XCTAssertEqual(c.weightDecay, r.weightDecay, "\(extra)")
            XCTAssertEqual(c.ema, r.ema, "\(extra)")
            XCTAssertEqual(c.augmentation, r.augmentation, "\(extra)")
            XCTAssertEqual(c.epochs, epochs, "\(extra)")
            XCTAssertEqual(c.timeBudget, budget, "\(extra)")
            XCTAssertEqual(c.fillsBudget, fills, "\(extra)")
            XCTAssertEqual(c.patience, patience, "\(extra)")
        }
        // A bare run is the 30-minute recipe the results table measured.
        XCTAssertEqual(try config([]), try config(["--time-budget", "1800"]))
        let given = try config(["--optimizer", "sgd", "--ema", "0.9", "--augment", "flip", "--epochs", "3"])
        XCTAssertEqual(given.optimizer, .sgd)
        XCTAssertEqual(given.weightDecay, 0, "sgd's decay would be L2: not the recipe's decoupled 0.05")
        XCTAssertEqual(given.ema, 0.9)
        XCTAssertEqual(given.augmentation.description, "flip")
        XCTAssertNil(try config(["--ema", "0"]).ema)
        XCTAssertEqual(try config(["--optimizer", "adam", "--weight-decay", "0.01"]).weightDecay, 0.01)
        let lite = try config(["--model", "efficientnet-lite0", "--init-from", "lite0.safetensors.zst"])
        XCTAssertEqual(lite.optimizer, TrainingConfig().optimizer)
        XCTAssertNil(lite.ema)
        XCTAssertNil(lite.timeBudget)
        XCTAssertNil(lite.fillsBudget)
        XCTAssertNil(lite.trainSize, "transfer learning keeps its own size")
        // The recipe's sizes (trained at 64, scored at 80) where none is named, for a model
        // with global pooling; any size option given, or a model without, leaves them.
        let sizes: [([String], image: Int, train: Int?)] = [
            ([], r.imageSize, r.trainSize), (["--epochs", "3"], 80, 64),
            (["--image-size", "64"], 64, nil), (["--image-size", "96"], 96, nil),
            (["--train-size", "48"], 64, 48), (["--resize-from", "32"], 64, nil),
            (["--model", "vgg"], 64, nil), (["--model", "simple"], 64, nil),
        ]
        for (extra, image, train) in sizes {
            let c = try config(extra)
            XCTAssertEqual(c.imageSize, image, "\(extra)")
            XCTAssertEqual(c.trainSize, train, "\(extra)")
        }
    }

    /// Above the recipe's global batch of 64, what is left open scales with k = B/64: the
    /// peak rate min(k, 8) times, the warmup min(k, 3) times, the average's decay to the power k; at
    /// 64 or below nothing changes, and what the command line gives stays.
    func testALargeGlobalBatchScalesTheRateWarmupAndAverage() throws {
        let base = ["--data", "train/", "--checkpoint-dir", "ck", "--epochs", "12"]
        func config(_ extra: [String]) throws -> TrainingConfig { try Train.parse(base + extra).makeConfig() }
        let reference = try config([])
        XCTAssertEqual(reference.resolvedLearningRate, 0.001)
        XCTAssertEqual(reference.warmupEpochs, 1)
        XCTAssertEqual(reference.ema, 0.999)
        XCTAssertEqual(try config(["--batch-size", "24"]).resolvedLearningRate, 0.001)
        let large = try config(["--batch-size", "512"])
        XCTAssertEqual(large.resolvedLearningRate, 0.008, accuracy: 1e-9)
        XCTAssertEqual(large.warmupEpochs, 3)
        XCTAssertEqual(try XCTUnwrap(large.ema), pow(0.999, 8), accuracy: 1e-12)
        let huge = try config(["--batch-size", "2048"])
        XCTAssertEqual(huge.resolvedLearningRate, 0.008, accuracy: 1e-9, "the rate's scale stops at 8 (measured at 512)")
        XCTAssertEqual(huge.warmupEpochs, 3)
        XCTAssertEqual(try XCTUnwrap(huge.ema), pow(0.999, 32), accuracy: 1e-12)
        let double = try config(["--batch-size", "128"])
        XCTAssertEqual(double.resolvedLearningRate, 0.002, accuracy: 1e-9)
        XCTAssertEqual(double.warmupEpochs, 2)
        let given = try config(["--batch-size", "512", "--lr", "0.004", "--warmup-epochs", "1", "--ema", "0.99"])
        XCTAssertEqual(given.resolvedLearningRate, 0.004)
        XCTAssertEqual(given.warmupEpochs, 1)
        XCTAssertEqual(given.ema, 0.99)
        XCTAssertNil(try config(["--batch-size", "512", "--ema", "0"]).ema)
    }

    func testTheDefaultBatchOverManyRanksGetsAdvice() throws {
        let advice = try XCTUnwrap(Recipe.smallBatchAdvice(globalBatch: 64, ranks: 8), "8 images a rank is below the 16 the cores need")
        XCTAssertTrue(advice.contains("each rank computes 8 images a step"), advice)
        XCTAssertTrue(advice.contains("--batch-size 512"), advice)
        XCTAssertTrue(advice.contains("--compress powersgd:8"), advice)
        XCTAssertTrue(try XCTUnwrap(Recipe.smallBatchAdvice(globalBatch: 64, ranks: 64)).contains("computes 1 image a step"))
        for ranks in [1, 2, 4] { XCTAssertNil(Recipe.smallBatchAdvice(globalBatch: 64, ranks: ranks), "\(ranks) ranks take 16 or more images each") }
        XCTAssertNil(Recipe.smallBatchAdvice(globalBatch: 512, ranks: 64), "a batch of 512 is what the advice would suggest")
    }

    /// Every `--help` reads as prose: no run of spaces inside an option's description (a
    /// line continuation in a help string that kept its indentation printed "budget         that").
    func testHelpTextsHaveNoGapsInTheirDescriptions() {
        for command in CatdogDist.configuration.subcommands {
            for line in command.helpMessage(columns: 80).split(separator: "\n") where line.count > 26 {
                let description = line.dropFirst(26).drop { $0 == " " }
                XCTAssertNil(description.range(of: #"[^ ]  +[^ ]"#, options: .regularExpression),
                             "catdog-dist \(command._commandName) --help: \(line)")
            }
        }
    }

    func testImportAndSubmitRefuseBeforeReadingAnything() {
        assertRefused(Import.self, ["x.pth", "--out", "y.zst", "--image-size", "8"], saying: "--image-size must be between 32 and 1024")
        assertRefused(Submit.self, ["--checkpoint", "ck.zst", "--test-dir", "t", "--clip", "0.5"], saying: "--clip must be in [0, 0.5)")
        assertRefused(Submit.self, ["--checkpoint", "ck.zst", "--test-dir", "t", "--out", "ck.zst"], saying: "would overwrite a checkpoint")
    }

    /// A checkpoint the trainer writes and a resume would refuse is told to the hook with the
    /// problem the reader would name, before anything is written; `train`'s hook warns once and
    /// goes on, or under CATDOG_CHECKPOINT_CHECK=strict (as the tests run `catdog-dist`) stops
    /// the run with the same words.
    func testACheckpointAResumeWouldRefuseIsSaidWhenWritten() throws {
        let folder = try temporaryFolder(self)
        try writeLabeledPatterns(8, side: 16, to: folder)
        let config = tinyConfig(batch: 4)
        let data = try TrainingData(folder: folder, config: config, communicator: LocalCommunicator(), cache: .none)
        let trainer = try Trainer(config: config, communicator: LocalCommunicator(), data: data)
        var told: [String] = []
        trainer.onUnreadableCheckpoint = { told.append($0) }
        _ = try trainer.checkpointBytes(finished: false)
        XCTAssertEqual(told, [], "a fresh trainer's checkpoint is readable")
        trainer.epoch = 2
        trainer.epochsWithoutImprovement = 3
        let bytes = try trainer.checkpointBytes(finished: false)
        XCTAssertEqual(told, ["epochs without improvement 3 is outside 0...2"])
        XCTAssertThrowsError(try LoadedCheckpoint(decompressed: bytes, path: "x", compressedBytes: bytes.count)) {
            XCTAssertTrue("\($0)".contains(told[0]), "the reader refuses it in the same words: \($0)")
        }

        var warnings: [String] = []
        let lenient = Train().unreadableCheckpointHandler(strict: false) { warnings.append($0) }
        XCTAssertNoThrow(try lenient("a problem"))
        XCTAssertNoThrow(try lenient("another"))
        XCTAssertEqual(warnings.count, 1, "once a run: \(warnings)")
        XCTAssertTrue(warnings[0].hasPrefix("warning: the checkpoint being written would not resume (a problem)"), warnings[0])
        let strict = Train().unreadableCheckpointHandler(strict: true) { warnings.append($0) }
        XCTAssertThrowsError(try strict("a problem")) { XCTAssertTrue("\($0)".contains("would not resume (a problem)"), "\($0)") }
        XCTAssertEqual(warnings.count, 1)
    }

    /// An error line stays bounded whatever a file or argument quotes in it: a message over
    /// `errorCharacters` keeps its start and its end (where what to do is said) and says how
    /// much it left out; the process prints that one line (a path of 3,500 characters here).
    func testErrorLinesAreBounded() throws {
        let short = "checkpoint x: missing"
        XCTAssertEqual(bounded(short, errorCharacters), short)
        let long = "start " + String(repeating: "c", count: 10_000) + " what to do"
        let cut = bounded(long, errorCharacters)
        XCTAssertTrue(cut.hasPrefix("start ccc") && cut.hasSuffix("ccc what to do"), cut)
        XCTAssertTrue(cut.contains("[... \(long.count - errorCharacters) characters left out ...]"), cut)
        XCTAssertLessThan(cut.count, errorCharacters + 60)
        let path = "/tmp/" + (0..<14).map { _ in String(repeating: "d", count: 250) }.joined(separator: "/")
        let result = try CLI.run(["predict", "--checkpoint", path, "/tmp/x.jpg"])
        XCTAssertEqual(result.status, 1, result.output)
        let lines = result.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, result.stderr)
        XCTAssertLessThan(lines[0].count, errorCharacters + 80, result.stderr)
        XCTAssertTrue(lines[0].hasSuffix("cannot read the file (missing or no permission)"), result.stderr)
    }

    /// A mistyped option or --help under mpirun is said once, by the first rank; a refusal
    /// that only another rank makes (a file its machine cannot read) is said by it, naming it.
    func testUnderMpirunAMistakeIsSaidOnce() throws {
        let wrong = ["train", "--data", "/nonexistent", "--checkpoint-dir", "/nonexistent", "--ghost-batch", "0"]
        let three = try CLI.run(wrong, ranks: 3)
        XCTAssertEqual(three.status, 64, three.output)
        XCTAssertEqual(three.stderr.components(separatedBy: "ghost batch 0 is outside").count - 1, 1,
                       "mpirun -np 3 catdog-dist \(wrong.joined(separator: " ")):\n\(three.stderr)")
        let help = try CLI.run(["train", "--help"], ranks: 3)
        XCTAssertEqual(help.status, 0, help.output)
        XCTAssertEqual(help.stdout.components(separatedBy: "OVERVIEW:").count - 1, 1, help.stdout)
        // Alone as rank 1 (the first rank is not there to say it): said, after a wait, with the rank.
        let alone = try CLI.run(wrong, environment: ["OMPI_COMM_WORLD_RANK": "1"])
        XCTAssertEqual(alone.status, 64, alone.output)
        XCTAssertTrue(alone.stderr.hasPrefix("rank 1 on "), alone.stderr)
        XCTAssertTrue(alone.stderr.contains("ghost batch 0 is outside"), alone.stderr)
        let quiet = try CLI.run(["models", "--help"], environment: ["OMPI_COMM_WORLD_RANK": "2"])
        XCTAssertEqual(quiet.status, 0, quiet.output)
        XCTAssertEqual(quiet.output, "", "help is the first rank's to print")
        // A command of one machine runs on the first rank alone; train, evaluate and bench on every rank.
        let models = try CLI.run(["models"], ranks: 3)
        XCTAssertEqual(models.status, 0, models.output)
        XCTAssertEqual(models.stdout.components(separatedBy: "models at 64x64x3:").count - 1, 1, models.stdout)
        let second = try CLI.run(["models"], environment: ["OMPI_COMM_WORLD_RANK": "1"])
        XCTAssertEqual(second.status, 0, second.output)
        XCTAssertEqual(second.output, "", "models is the first rank's to run")
    }

    /// A refusal every rank makes once MPI runs (resuming with an option the run keeps, here
    /// another model) is said once, by the first rank, not once a rank.
    func testUnderMpirunARefusalEveryRankMakesIsSaidOnce() throws {
        let folder = try temporaryFolder(self)
        let data = try sharedSubset(self, perClass: 10)
        let first = try CLI.run(["train", "--data", data, "--checkpoint-dir", folder, "--model", "simple", "--image-size", "32", "--epochs", "1"])
        XCTAssertEqual(first.status, 0, first.output)
        let command = ["train", "--data", data, "--checkpoint-dir", folder, "--model", "resnet", "--image-size", "32", "--epochs", "1", "--resume", "auto"]
        let three = try CLI.run(command, ranks: 3)
        XCTAssertEqual(three.status, 1, three.output)
        XCTAssertEqual(three.stderr.components(separatedBy: "--model resnet differs from the resumed run's simple").count - 1, 1,
                       "mpirun -np 3 catdog-dist \(command.joined(separator: " ")):\n\(three.stderr)")
        XCTAssertTrue(three.stderr.contains("catdog-dist: rank 0 of 3 on "), three.stderr)
    }

    /// The README's set-up scripts: --help says what each does without installing, building or
    /// running anything; an argument a script does not take, or a data folder that is not one,
    /// is refused in one line before anything is installed.
    func testTheSetUpScriptsExplainThemselvesAndRefuseWhatTheyDoNotTake() throws {
        let cluster = TensorBoardTests.repository.appendingPathComponent("cluster").path
        for (script, first) in [("quickstart", "Installs what is missing, builds, and trains"),
                                ("test", "Installs what is missing, builds, and runs the whole test suite"),
                                ("setup-node", "Prepares one lab machine")] {
            for flag in ["--help", "-h"] {
                let help = try runCommand(["\(cluster)/\(script)", flag], timeout: 60)
                XCTAssertEqual(help.status, 0, "cluster/\(script) \(flag): \(help.output)")
                XCTAssertTrue(help.stdout.hasPrefix(first), "cluster/\(script) \(flag): \(help.output)")
                XCTAssertFalse(help.output.contains("install-deps:") || help.output.contains("Build"), "cluster/\(script) \(flag) set up or built: \(help.output)")
            }
        }
        for (command, said) in [(["test", "-x"], "cluster/test: takes no arguments, not '-x'"),
                                (["setup-node", "now"], "setup-node: takes no arguments, not 'now'"),
                                (["quickstart", "/nonexistent"], "quickstart: /nonexistent is not a folder")] {
            let result = try runCommand(["\(cluster)/\(command[0])"] + command.dropFirst(), timeout: 60)
            XCTAssertEqual(result.status, 2, "cluster/\(command.joined(separator: " ")): \(result.output)")
            XCTAssertTrue(result.stderr.hasPrefix(said), "cluster/\(command.joined(separator: " ")): \(result.output)")
            XCTAssertEqual(result.output.split(separator: "\n").count, 1, "cluster/\(command.joined(separator: " ")): \(result.output)")
        }
    }
}
