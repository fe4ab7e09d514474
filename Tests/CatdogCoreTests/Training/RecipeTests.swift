import CatdogCheckpoint
import CatdogData
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation
import XCTest

/// The recipe's parts end to end: AdamW, scale jitter, the weights' moving average in
/// validation, best weights and checkpoints, and mirror TTA in validation.
final class RecipeTests: XCTestCase {
    func arguments(_ data: String, _ folder: String, _ extra: [String]) -> [String] {
        ["train", "--data", data, "--checkpoint-dir", folder, "--model", "resnet", "--image-size", "32", "--epochs", "2",
         "--batch-size", "24", "--patience", "0", "--checkpoint-every", "3", "--keep", "20"] + extra
    }

    let recipe = ["--optimizer", "adamw", "--weight-decay", "0.05", "--ema", "0.99", "--augment", "all,scale"]

    /// resnet (BatchNorm, so the average holds statistics too) with the recipe, 2 epochs
    /// straight and resumed from update 3: every tensor (the average in model/, the live
    /// weights in live/, moments, best) and every metric bit-identical.
    func testResumeMidEpochWithTheRecipeIsBitExact() throws {
        let data = try sharedSubset(self, perClass: 60)
        let straight = try temporaryFolder(self), resumed = try temporaryFolder(self)
        let first = try CLI.run(arguments(data, straight, recipe))
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertTrue(first.stdout.contains("adamw lr 0.001 weight decay 0.05"), first.stdout)
        XCTAssertTrue(first.stdout.contains("augment flip,color,crop,scale; validation with flip TTA of the weights' moving average (EMA 0.99)"), first.stdout)
        let middle = straight + "/ckpt-e0000-s00000003.safetensors.zst"
        let second = try CLI.run(arguments(data, resumed, recipe + ["--resume", middle]))
        XCTAssertEqual(second.status, 0, second.output)
        let a = try LoadedCheckpoint(path: straight + "/last.safetensors.zst")
        let b = try LoadedCheckpoint(path: resumed + "/last.safetensors.zst")
        XCTAssertTrue(a.file.tensors.keys.contains("live/parameters"))
        try assertSameTensorsAndHistory(a, b)
        XCTAssertEqual(a.metadata.config.ema, 0.99)
        XCTAssertEqual(a.metadata.config.optimizer, .adamw)
    }

    /// What training reports as val_loss is what `evaluate --validation-split` scores on the
    /// best checkpoint (1e-4): with the average and mirror TTA (`--tta-flip`), and with both off
    /// (no `--tta-flip`). With the average on, model/ (the average) differs from live/.
    func testValidationScoresWhatEvaluateScoresOnTheBestCheckpoint() throws {
        let data = try sharedSubset(self, perClass: 30)
        for (extra, tta) in [(["--ema", "0.9"], true), (["--ema", "0", "--val-tta", "none"], false)] {
            let folder = try temporaryFolder(self)
            let trained = try CLI.run(arguments(data, folder, extra))
            XCTAssertEqual(trained.status, 0, trained.output)
            let best = try LoadedCheckpoint(path: folder + "/best.safetensors.zst")
            let bestEpoch = try XCTUnwrap(best.metadata.history.min { $0.val_loss < $1.val_loss })
            let evaluated = try CLI.run(["evaluate", "--checkpoint", folder + "/best.safetensors.zst", "--data", data,
                                         "--validation-split", "--json"] + (tta ? ["--tta-flip"] : []))
            XCTAssertEqual(evaluated.status, 0, evaluated.output)
            let json = try JSONSerialization.jsonObject(with: Data(evaluated.stdout.split(separator: "\n").last!.utf8)) as! [String: Any]
            XCTAssertEqual(json["logloss"] as! Double, bestEpoch.val_loss, accuracy: 1e-4, "\(extra)")
            XCTAssertEqual(json["accuracy"] as! Double, bestEpoch.val_acc, accuracy: 1e-9, "\(extra)")
            let last = try LoadedCheckpoint(path: folder + "/last.safetensors.zst")
            if tta {
                let live = try last.file.array("live/parameters")
                var average: [Float] = []
                for slot in try modelTensors(folder + "/last.safetensors.zst").sorted(by: { $0.key < $1.key }) { average += slot.value }
                XCTAssertEqual(live.count, average.count)
                XCTAssertNotEqual(live.sorted(), average.sorted(), "the average is not the live weights")
            } else {
                XCTAssertNil(last.file.tensors["live/parameters"])
            }
        }
    }
}

/// Checkpoint metadata written by someone else: the new numbers (EMA decay, progressive
/// resizing's sizes) are refused when out of range, before anything is built from them.
final class RecipeMetadataTests: XCTestCase {
    func testOutOfRangeRecipeNumbersAreRefused() throws {
        var config = TrainingConfig()
        config.model = "simple"
        config.imageSize = 32
        XCTAssertNil(try metadataProblem { _, _ in })
        XCTAssertNil(try metadataProblem { c, _ in c.ema = 0.999 })
        XCTAssertNil(try metadataProblem { c, _ in c.validateEvery = 3 })
        XCTAssertNil(try metadataProblem { c, _ in c.allReduceTopology = .parted })
        // Two all-reduces at once, or one of exact sums with compression: a hand-made checkpoint.
        XCTAssertEqual(try metadataProblem { c, _ in c.hierarchicalAllReduce = true; c.partedAllReduce = true }?.contains("both hierarchical and parted"), true)
        XCTAssertEqual(try metadataProblem { c, _ in c.partedAllReduce = true; c.compression = .fp16 }?.contains("parted all-reduce sums exact fp32 gradients, not fp16"), true)
        // resnet (global pooling) may train at other sizes.
        let resnet = try ModelZoo.build("resnet", imageSize: 32)
        var resnetConfig = config
        resnetConfig.model = "resnet"
        resnetConfig.resizeFrom = 16
        resnetConfig.trainSize = 24
        var resized = CheckpointMetadata(model: resnet, config: resnetConfig, preprocessing: Preprocessing(imageSize: 32), history: [],
                                         bestValidationLoss: nil, finished: false, ranks: 1)
        resized.epochImageSize = 16
        XCTAssertNil(resized.problem)
        // Refused, naming the number and its range (RunLimits).
        for bad in [1.0, -0.5, .nan] {
            let message = try metadataProblem { c, _ in c.ema = bad }
            XCTAssertTrue(message?.contains("EMA decay \(bad) is outside") == true, "ema \(bad): \(message ?? "accepted")")
        }
        XCTAssertEqual(try metadataProblem { c, _ in c.resizeFrom = 4 }, "configuration: resize-from size 4 is outside 16...32")
        XCTAssertEqual(try metadataProblem { c, _ in c.resizeFrom = 64 }, "configuration: resize-from size 64 is outside 16...32")
        XCTAssertEqual(try metadataProblem { c, _ in c.trainSize = 8 }, "configuration: training size 8 is outside 16...32")
        XCTAssertEqual(try metadataProblem { c, _ in c.trainSize = 1 << 40 }, "configuration: training size 1099511627776 is outside 16...32")
        XCTAssertEqual(try metadataProblem { c, _ in c.labelSmoothing = 0.5 }, "configuration: label smoothing 0.5 is outside 0.0...0.49")
        XCTAssertEqual(try metadataProblem { c, _ in c.validateEvery = 0 }, "configuration: validation interval 0 is outside 1...1000")
        XCTAssertEqual(try metadataProblem { c, _ in c.validateEvery = Int.min }, "configuration: validation interval \(Int.min) is outside 1...1000")
        // The simple net's dense layer depends on the size: it cannot train at another one.
        XCTAssertEqual(try metadataProblem { c, _ in c.trainSize = 24 }, "it trains simple at 24x24, whose weights differ from those at 32x32")
        XCTAssertEqual(try metadataProblem { c, _ in c.resizeFrom = 16 }, "it trains simple at 16x16, whose weights differ from those at 32x32")
        XCTAssertEqual(try metadataProblem { _, m in m.epochImageSize = 24 }, "it trains simple at 24x24, whose weights differ from those at 32x32")
        XCTAssertEqual(try metadataProblem { _, m in m.epochImageSize = 1 << 20 }, "epoch image size 1048576 is outside 16...32")
        // The size each epoch of the history trained at: absent (files before it), or 16 up to the image size.
        func epoch(trainedAt size: Int?) -> EpochMetrics {
            EpochMetrics(epoch: 1, step: 10, train_loss: 0.6, train_acc: 0.6, val_loss: 0.6, val_acc: 0.6, images_per_s: 100,
                         elapsed_s: 10, lr: 0.001, ranks: 2, train_size: size)
        }
        for size in [nil, 16, 32] { XCTAssertNil(try metadataProblem { _, m in m.history = [epoch(trainedAt: size)] }, "\(size as Any)") }
        for size in [15, 33, -1, Int.min, Int.max] {
            XCTAssertEqual(try metadataProblem { _, m in m.history = [epoch(trainedAt: size)] }, "a bad history entry (epoch 1)", "\(size)")
        }
    }
}

/// A run that fills its budget and names no sizes takes the recipe's larger sizes when the
/// budget holds enough epochs of them on the machine: the estimate, the rule, and the run.
final class RecipeSizesTests: XCTestCase {
    let larger = Recipe.standard.longRun!

    /// 64 px growing to 128 by 16 and arriving at 3/4 of the run costs 0.1875 · (64² + 80² +
    /// 96² + 112²)/128² + 0.25 = 0.61914 of an epoch at 128 px: 282 steps of 64 images (18,000
    /// training images). An evaluation of 2,000 images (32 batches) with mirror TTA at 144 px
    /// costs 32 · 0.3 · 2 · (144/128)² = 24.3 steps at 128. At 316 images/s (this recipe on 2
    /// ranks of an AMD EPYC Zen 5) and every epoch validated, 1,800 s hold about 44.7 epochs,
    /// at half that speed half as many, and the rule takes the larger sizes for the first only.
    /// Exactly, the estimate is epochs whose seconds, counted here epoch by epoch (each at the
    /// size of its first step, as training switches sizes), fit in the budget, where half an
    /// epoch more does not (a longer run trains more of its steps at the smaller sizes, so a
    /// few steps more can cost up to ~2% of the budget less: the planner tries the totals of
    /// two epochs past its bisection's answer, `StepCostsTests`).
    func testTheEpochsABudgetHoldsAndTheChoice() {
        XCTAssertEqual([larger.resizeFrom, larger.trainSize, larger.imageSize], [64, 128, 144])
        let perEpoch = 282.0, evaluationSteps = 32 * 0.3 * 2 * 1.265625
        func closedForm(_ rate: Double, share: Double = 0.619140625, evaluation: Double = evaluationSteps) -> Double {
            1800 / ((perEpoch * share + evaluation) * 64 / rate)
        }
        func pixels(_ size: Int) -> Double { Double(size * size) / Double(128 * 128) }
        /// Seconds of `epochs` epochs (the last may be partial), each at the size of its first
        /// step, and an evaluation after each epoch `validated` says.
        func seconds(_ epochs: Double, _ rate: Double, cost: (Int) -> Double = pixels, evaluation: Double = evaluationSteps,
                     validated: (Int, Double) -> Bool = { _, _ in true }) -> Double {
            let whole = Int(epochs.rounded(.up))
            var steps = 0.0
            for e in 0..<whole {
                let reached = min(Double(e) / epochs / 0.75, 1)
                let size = reached >= 1 ? 128 : 64 + 16 * Int(64 * reached / 16)
                steps += min(1, epochs - Double(e)) * perEpoch * cost(size)
                if validated(e + 1, epochs) { steps += evaluation }
            }
            return steps * 64 / rate
        }
        var everyEpoch = TrainingConfig()
        everyEpoch.validationTTA = true
        func epochs(_ rate: Double, budget: Double = 1800, _ config: TrainingConfig = everyEpoch, costs: StepCosts? = nil) -> Double {
            larger.epochs(budget: budget, imagesPerSecond: rate, trainImages: 18_000, validationImages: 2_000, config: config, costs: costs)
        }
        let more = 0.5
        let zen5 = epochs(316), zen4 = epochs(158)
        for (rate, e) in [(316.0, zen5), (158, zen4)] {
            XCTAssertEqual(e, closedForm(rate), accuracy: 0.04 * e, "\(rate) images/s")
            XCTAssertLessThanOrEqual(seconds(e, rate), 1800, "\(rate) images/s: \(e) epochs")
            XCTAssertGreaterThan(seconds(e + more, rate), 1800, "\(rate) images/s: \(e) epochs and one")
        }
        XCTAssertGreaterThanOrEqual(zen5, larger.fromEpochs)
        XCTAssertLessThan(zen4, larger.fromEpochs)
        XCTAssertLessThan(epochs(316, budget: 600), larger.fromEpochs)
        // Without TTA validation costs half.
        var noTTA = everyEpoch
        noTTA.validationTTA = false
        let plain = epochs(316, noTTA)
        XCTAssertLessThanOrEqual(seconds(plain, 316, evaluation: evaluationSteps / 2), 1800)
        XCTAssertGreaterThan(seconds(plain + more, 316, evaluation: evaluationSteps / 2), 1800)
        // Measured costs replace the pixels: steps at 64…112 px at 0.30, 0.55, 0.70 and 0.85 of
        // 128's time make an epoch cost about 0.700 of one at 128 px, not 0.619.
        let measured = [64: 0.3, 80: 0.55, 96: 0.7, 112: 0.85, 128: 1]
        let withCosts = epochs(316, costs: StepCosts(top: 128, seconds: measured))
        XCTAssertEqual(withCosts, closedForm(316, share: 0.7), accuracy: 0.04 * withCosts)
        XCTAssertLessThanOrEqual(seconds(withCosts, 316, cost: { measured[$0]! }), 1800)
        XCTAssertGreaterThan(seconds(withCosts + more, 316, cost: { measured[$0]! }), 1800)
        // A run that fills its budget validates after epoch 1, every 4th and every epoch of the
        // last quarter of its schedule, and the last: the estimate prices those evaluations
        // only, about 7 in 16 of them, as the trainer's own planner does.
        var budgeted = everyEpoch
        budgeted.fillsBudget = true
        let sparseRule: (Int, Double) -> Bool = { epoch, epochs in
            epoch == 1 || epoch % 4 == 0 || min(Double(epoch), epochs) / epochs >= 0.75
        }
        for rate in [158.0, 316] {
            let sparse = epochs(rate, budgeted)
            XCTAssertLessThanOrEqual(seconds(sparse, rate, validated: sparseRule), 1800, "\(rate) images/s: \(sparse) epochs")
            XCTAssertGreaterThan(seconds(sparse + more, rate, validated: sparseRule), 1800, "\(rate) images/s: \(sparse) epochs")
            XCTAssertGreaterThan(sparse, epochs(rate) * 1.05, "\(rate) images/s")
            XCTAssertLessThan(sparse, closedForm(rate, evaluation: 0) * 1.04, "\(rate) images/s: training alone")
        }
        // A speed that is not a positive number holds no epochs.
        for rate in [0, -1, .nan, .infinity] {
            XCTAssertEqual(epochs(rate), 0)
        }
        // Cutout joins from 100 epochs of them, at half the side, unless the augmentation has its own.
        let standard = Recipe.standard.augmentation
        XCTAssertNil(standard.cutout)
        XCTAssertEqual(larger.augmentation(standard, epochs: 99.9), standard)
        XCTAssertEqual(larger.augmentation(standard, epochs: 0), standard)
        var withCutout = standard
        withCutout.cutout = 0.5
        XCTAssertEqual(larger.augmentation(standard, epochs: 100), withCutout)
        XCTAssertEqual(larger.augmentation(standard, epochs: 400), withCutout)
        var small = standard
        small.cutout = 0.3
        XCTAssertEqual(larger.augmentation(small, epochs: 400), small)
        // At 263 images/s (resnet-pool at 128 px on 2 ranks of a Zen 4) 30 minutes hold too few
        // for cutout and 90 enough.
        XCTAssertLessThan(epochs(263, budgeted), larger.cutoutFromEpochs, "a 30-minute run at 263 images/s")
        XCTAssertGreaterThanOrEqual(epochs(263, budget: 5400, budgeted), larger.cutoutFromEpochs, "a 90-minute run at 263 images/s")
        XCTAssertTrue(Recipe.standard.takesLargerSizes("resnet"))
        XCTAssertTrue(Recipe.standard.takesLargerSizes("resnet-pool"))
        XCTAssertFalse(Recipe.standard.takesLargerSizes("vgg"), "vgg's dense layer depends on the size")
    }

    /// A bare run with a 1 s budget on 16 images holds too few epochs of the larger sizes (~8 of
    /// the 30 at 132 images/s at 128 px on one rank of a Zen 4) and keeps 64 px
    /// scored at 80; a budget that holds about 120 of them by that run's own estimate (at least
    /// 15 s) takes 64 → 128 scored at 144, and cutout, unless --augment names the augmentation
    /// (once more at a longer budget if the machine slowed and that run's estimate is under 100).
    /// The budget follows the machine: a fixed 15 s held only ~29 with CATDOG_KERNELS=avx2 on a
    /// Zen 4 beside another test (56 images/s at 128 px), as it might on a slower machine. The
    /// checkpoint keeps what was chosen; a resume measures nothing again; naming a size
    /// measures nothing.
    func testABareBudgetedRunChoosesItsSizesByTheMachinesSpeed() throws {
        let data = try sharedSubset(self, perClass: 8)
        func run(_ budget: Int, _ extra: [String] = []) throws -> (CLIResult, String) {
            let folder = try temporaryFolder(self)
            let result = try CLI.run(["train", "--data", data, "--checkpoint-dir", folder, "--batch-size", "8",
                                      "--time-budget", String(budget)] + extra)
            XCTAssertEqual(result.status, 0, result.output)
            return (result, folder)
        }
        func config(_ folder: String) throws -> TrainingConfig {
            try LoadedCheckpoint(path: folder + "/last.safetensors.zst").metadata.config
        }
        let (short, shortFolder) = try run(1)
        XCTAssertTrue(short.stdout.contains("sizes: training at 64 px, scored at 80:"), short.stdout)
        XCTAssertTrue(short.stdout.contains("fewer than the 30 that pay for them"), short.stdout)
        var c = try config(shortFolder)
        XCTAssertEqual([c.imageSize, c.trainSize ?? 0, c.resizeFrom ?? 0], [80, 64, 0])

        // The short run's estimate, rounded to whole epochs, scales with the budget.
        let shortEpochs = try XCTUnwrap(short.stdout.firstMatch(of: /the 1 s budget holds ~(\d+) epochs/).flatMap { Int($0.1) },
                                        short.stdout)
        XCTAssertFalse(short.stdout.contains("augment:"), short.stdout)
        XCTAssertNil(c.augmentation.cutout)
        // A budget of about 120 epochs by the short run's estimate (at least 15 s). The machine's
        // speed can move between the runs by more than that margin over the 100 cutout takes
        // (one CI run measured ~100 beside a build): then once more, at the budget the long run's own
        // estimate says holds ~120.
        var budget = max(15, (120 + max(shortEpochs, 1) - 1) / max(shortEpochs, 1))
        func held(_ result: CLIResult) -> Int? {
            result.stdout.firstMatch(of: /the \d+ s budget holds ~(\d+) epochs/).flatMap { Int($0.1) }
        }
        var (long, longFolder) = (CLIResult(status: 0, stdout: "", stderr: ""), "")
        for attempt in 1...2 {
            guard budget <= 150 else {
                throw XCTSkip("this machine is too slow for 100 epochs of the larger sizes within 150 s (a 1 s budget held ~\(shortEpochs))")
            }
            (long, longFolder) = try run(budget)
            let epochs = try XCTUnwrap(held(long), long.stdout)
            guard attempt == 1, Double(epochs) < Recipe.standard.longRun!.cutoutFromEpochs else { break }
            budget = (budget * 120 + epochs - 1) / max(epochs, 1)
        }
        XCTAssertTrue(long.stdout.contains("sizes: training from 64 px growing to 128, scored at 144:"), long.stdout)
        XCTAssertTrue(long.stdout.contains("augment: flip,color,crop,scale,cutout:0.5: ~"), long.stdout)
        XCTAssertTrue(long.stdout.contains("augment flip,color,crop,scale,cutout:0.5;"), long.stdout)
        XCTAssertTrue(long.stdout.contains("with the smaller sizes' steps at 64 px 0."), long.stdout)
        XCTAssertEqual(announcedSizes(long.stdout), announcedSizes(long.stdout).sorted(), long.stdout)
        XCTAssertTrue(long.stdout.contains("model \(ModelZoo.defaultModel) at 144x144, trained at 128x128"), long.stdout)
        c = try config(longFolder)
        XCTAssertEqual([c.imageSize, c.trainSize ?? 0, c.resizeFrom ?? 0], [144, 128, 64])
        XCTAssertEqual(c.augmentation.cutout, 0.5)
        // A named augmentation is kept as named. The choice is made before the first step, so
        // this run is stopped (SIGTERM) once training has begun: its stop checkpoint holds it.
        let namedFolder = try temporaryFolder(self)
        let named = try BackgroundRun(CLI.binary, ["train", "--data", data, "--checkpoint-dir", namedFolder, "--batch-size", "8",
                                                   "--time-budget", String(budget), "--augment", "flip,color,crop,scale"])
        named.wait(upTo: 120) { named.stdout.value.contains("epoch 1: training at") }
        named.process.terminate()
        named.waitForExit(upTo: 60)
        let namedLog = named.stdout.value
        XCTAssertEqual(named.process.terminationStatus, 128 + SIGTERM, namedLog + named.stderr.value)
        XCTAssertTrue(namedLog.contains("sizes: training from 64 px growing to 128"), namedLog)
        XCTAssertFalse(namedLog.contains("augment:"), namedLog)
        XCTAssertEqual(try config(namedFolder).resizeFrom, 64)
        XCTAssertNil(try config(namedFolder).augmentation.cutout)
        let resumed = try CLI.run(["train", "--data", data, "--checkpoint-dir", longFolder, "--resume", "auto"])
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertTrue(resumed.stdout.contains("is a finished run"), resumed.stdout)
        XCTAssertFalse(resumed.stdout.contains("sizes:"), resumed.stdout)

        let (sized, _) = try run(2, ["--image-size", "48"])
        XCTAssertFalse(sized.stdout.contains("sizes:"), sized.stdout)
        XCTAssertFalse(sized.stdout.contains("step costs"), sized.stdout)

        // Named sizes that grow under a budget: their steps' costs are measured for its estimate.
        let (grows, _) = try run(3, ["--resize-from", "32", "--image-size", "64"])
        XCTAssertFalse(grows.stdout.contains("sizes:"), grows.stdout)
        XCTAssertTrue(grows.stdout.contains("step costs (measured just now): 32 px 0."), grows.stdout)
        XCTAssertTrue(grows.stdout.contains(", 48 px 0.") && grows.stdout.contains(" of a step at 64x64 ("), grows.stdout)
        XCTAssertEqual(announcedSizes(grows.stdout), announcedSizes(grows.stdout).sorted(), grows.stdout)
    }

    /// `benchmarks/recipe-table` groups the runs of one budget that differ only in the seed,
    /// though each trains as many epochs as the machine's speed buys, and prints the mean ± sd
    /// of their best epochs (sample standard deviation), from the runs' own metrics; the
    /// recipe names their augmentation, cutout's size included. `--readme` prints the same group
    /// as one row of the README's results table: the best epochs' accuracy and loss, mean ± sd.
    func testTheRecipeTableGroupsABudgetsSeeds() throws {
        let data = try sharedSubset(self, perClass: 20)
        var folders: [String] = [], best: [Double] = [], bestAccuracy: [Double] = []
        for seed in [1, 2] {
            let folder = try temporaryFolder(self)
            let result = try CLI.run(["train", "--data", data, "--checkpoint-dir", folder, "--batch-size", "8", "--image-size", "32",
                                      "--time-budget", "4", "--seed", String(seed), "--augment", "flip,cutout:0.3"])
            XCTAssertEqual(result.status, 0, result.output)
            folders.append(folder)
            let scored = try String(contentsOfFile: folder + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").compactMap {
                line -> (loss: Double, accuracy: Double)? in
                let row = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                guard let loss = row?["val_loss"] as? Double, let accuracy = row?["val_acc"] as? Double else { return nil }
                return (loss, accuracy)
            }
            let bestEpoch = try XCTUnwrap(scored.min { $0.loss < $1.loss }, "seed \(seed) validated")
            best.append(bestEpoch.loss)
            bestAccuracy.append(bestEpoch.accuracy * 100)
        }
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let table = try runCommand(["python3", repository.appendingPathComponent("benchmarks/recipe-table").path] + folders)
        XCTAssertEqual(table.status, 0, table.output)
        let row = try XCTUnwrap(table.stdout.split(separator: "\n").first { $0.contains("4 s budget (") }, table.stdout)
        XCTAssertTrue(row.contains("| 1,2 |"), String(row))
        XCTAssertTrue(row.contains("aug flip,cutout:0.3,"), String(row))
        let mean = (best[0] + best[1]) / 2, sd = abs(best[0] - best[1]) / 2.0.squareRoot()
        XCTAssertTrue(row.contains(String(format: "%.4f ± %.4f", mean, sd)), "\(row) against \(best)")
        // The machine, from the runs' machines.jsonl.
        let machine = MachineDescription.current()
        let kind = machine.cpuFamily.map { " (CPU family \($0)" + (machine.cpuModel.map { ", model \($0))" } ?? ")") } ?? ""
        let label = "\(machine.cpu)\(kind), 1 rank: OpenBLAS \(blasCoreName), kernels \(KernelInstructionSet.active.rawValue), "
        XCTAssertTrue(row.contains("| \(label)"), "\(row) against \(label)")

        let readme = try runCommand(["python3", repository.appendingPathComponent("benchmarks/recipe-table").path, "--readme"] + folders)
        XCTAssertEqual(readme.status, 0, readme.output)
        XCTAssertFalse(readme.stdout.contains("| min to 90% |"), "--readme prints only the README's table:\n\(readme.stdout)")
        let line = try XCTUnwrap(readme.stdout.split(separator: "\n").first { $0.contains("; 4 s budget, seeds 1,2 (") }, readme.stdout)
        // mean ± sample sd, computed as the script does (the mean, then the deviations from it).
        func spread(_ v: [Double]) -> (Double, Double) {
            let m = (v[0] + v[1]) / 2
            return (m, ((v[0] - m) * (v[0] - m) + (v[1] - m) * (v[1] - m)).squareRoot())
        }
        let (lossMean, lossSD) = spread(best), (accuracyMean, accuracySD) = spread(bestAccuracy)
        let expected = String(format: "| **%.2f%% ± %.2f, loss %.4f ± %.4f** | ", accuracyMean, accuracySD, lossMean, lossSD)
        XCTAssertTrue(line.contains(expected), "\(line) against \(expected)")
        XCTAssertTrue(line.hasSuffix(" s each |") || line.hasSuffix(" min each |"), String(line))
        XCTAssertTrue(line.contains(" epochs); on \(label)"), "\(line) against \(label)")
    }

    /// A run folder's metrics.jsonl is read as untrusted: lines that are not JSON objects, not
    /// UTF-8, nested deeper than Python's parser recurses, or whose scores or times are not
    /// finite numbers (strings, NaN, 1e999, true) are passed over, and the row is made of the
    /// line left; a folder with no readable checkpoint is named as left out of `--readme`; so
    /// is machines.jsonl. Exit 0 and no traceback either way.
    func testTheRecipeTablePassesOverMalformedMetrics() throws {
        let folder = try temporaryFolder(self)
        var bytes = Data("""
        [1]
        "text"
        {"val_loss":"x","val_acc":1,"elapsed_s":1,"epoch":1}
        {"val_loss":NaN,"val_acc":0.5,"elapsed_s":1,"epoch":2}
        {"val_loss":0.3,"val_acc":true,"elapsed_s":1e999,"epoch":3}
        {"val_loss":0.4,"val_acc":0.8,"elapsed_s":60,"epoch":true}

        """.utf8)
        bytes.append(contentsOf: [0xFF, 0xFE, 0x0A])
        bytes.append(Data((String(repeating: "[", count: 100_000) + "\n").utf8))  // nested past Python's recursion limit
        try bytes.write(to: URL(fileURLWithPath: folder + "/metrics.jsonl"))
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let script = repository.appendingPathComponent("benchmarks/recipe-table").path
        let table = try runCommand(["python3", script, folder])
        XCTAssertEqual(table.status, 0, table.output)
        XCTAssertFalse(table.output.contains("Traceback"), table.output)
        let row = try XCTUnwrap(table.stdout.split(separator: "\n").first { $0.hasPrefix("| \(folder) |") }, table.stdout)
        XCTAssertTrue(row.contains("| 0.4000 (80.00%, ?) |"), "the one well-formed line is the best: \(row)")
        XCTAssertTrue(row.hasSuffix("| ? |"), "no machines.jsonl, no machine: \(row)")

        // machines.jsonl read the same way: lines not JSON objects, groups not objects, fields of
        // the wrong types give "?" in their place; a bar or a newline in a name cannot break the row.
        var starts = Data("""
        [1]
        {"machines": 5}
        {"machines": [5, {"machine": "x"}, {"machine": {"cpu": 7, "cpuFamily": "x"}, "ranks": 3, "blasCore": ["a"]}]}
        {"machines": [{"machine": {"cpu": "A|B\\n", "cpuFamily": true}, "ranks": [0, 1], "kernels": "k"}], "precision": 5}

        """.utf8)
        starts.append(contentsOf: [0xFF, 0x0A])
        starts.append(Data((String(repeating: "{\"a\":[", count: 50_000) + "\n").utf8))
        try starts.write(to: URL(fileURLWithPath: folder + "/machines.jsonl"))
        let labelled = try runCommand(["python3", script, folder])
        XCTAssertEqual(labelled.status, 0, labelled.output)
        XCTAssertFalse(labelled.output.contains("Traceback"), labelled.output)
        XCTAssertTrue(labelled.stdout.contains("| ?, ? ranks: OpenBLAS ?, kernels ?, ? then A B, 2 ranks: OpenBLAS ?, kernels k, ? |"),
                      labelled.stdout)
        let readme = try runCommand(["python3", script, "--readme", folder])
        XCTAssertEqual(readme.status, 0, readme.output)
        XCTAssertFalse(readme.output.contains("Traceback"), readme.output)
        XCTAssertTrue(readme.output.contains("\(folder): no readable last.safetensors.zst, so no recipe: left out"), readme.output)

        // Checkpoints whose configuration is not what train writes: a list, and fields of the
        // wrong types (a string seed, augmentation a number, decay a string): the recipe is "?".
        for (index, config) in [#"[1, 2]"#, #"{"augmentation": 5, "seed": "x", "weightDecay": "big", "model": "m"}"#].enumerated() {
            let run = try temporaryFolder(self)
            try bytes.write(to: URL(fileURLWithPath: run + "/metrics.jsonl"))
            let metadata = try JSONSerialization.data(withJSONObject: ["catdog": #"{"config": "# + config + "}"])
            let header = try JSONSerialization.data(withJSONObject: ["__metadata__": JSONSerialization.jsonObject(with: metadata)])
            var file = Data(withUnsafeBytes(of: UInt64(header.count).littleEndian) { Data($0) })
            file.append(header)
            try file.write(to: URL(fileURLWithPath: run + "/last.safetensors"))
            let packed = try runCommand(["zstd", "-q", "--rm", run + "/last.safetensors", "-o", run + "/last.safetensors.zst"])
            XCTAssertEqual(packed.status, 0, packed.output)
            for arguments in [[run], ["--readme", run]] {
                let result = try runCommand(["python3", script] + arguments)
                XCTAssertEqual(result.status, 0, "case \(index), \(arguments): \(result.output)")
                XCTAssertFalse(result.output.contains("Traceback"), "case \(index), \(arguments): \(result.output)")
            }
            let plain = try runCommand(["python3", script, run])
            XCTAssertTrue(plain.stdout.contains("| \(run) | ? |"), "case \(index): \(plain.stdout)")
        }
    }

    /// The sizes the log announces, in order ("epoch 5: training at 80x80").
    func announcedSizes(_ log: String) -> [Int] {
        log.split(separator: "\n").compactMap { line in
            guard let range = line.range(of: ": training at ") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
    }
}
