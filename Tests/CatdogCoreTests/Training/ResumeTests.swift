import CatdogCheckpoint
import CatdogEngine
import CatdogRun
import CatdogSupport
import CatdogTraining
import Foundation
import XCTest

final class ResumeTests: XCTestCase {
    func trainArguments(_ data: String, _ checkpoints: String, epochs: Int = 2, extra: [String] = []) -> [String] {
        ["train", "--data", data, "--checkpoint-dir", checkpoints, "--model", "simple", "--image-size", "32",
         "--epochs", String(epochs), "--batch-size", "24", "--patience", "0", "--checkpoint-every", "3", "--keep", "20"] + extra
    }

    /// 2 epochs straight (images in the node cache), and the same run resumed from its
    /// mid-epoch checkpoint at update 3 while streaming the images: bit-identical final
    /// weights, optimizer moments and metrics.
    func testResumeMidEpochIsBitExact() throws {
        let data = try sharedSubset(self, perClass: 60)
        let straight = try temporaryFolder(self)
        XCTAssertEqual(try CLI.run(trainArguments(data, straight, extra: ["--cache", "node"])).status, 0)
        let resumed = try temporaryFolder(self)
        let middle = straight + "/ckpt-e0000-s00000003.safetensors.zst"
        let result = try CLI.run(trainArguments(data, resumed, extra: ["--resume", middle, "--cache", "none"]))
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("step 3 of the epoch"), result.stdout)
        let a = try LoadedCheckpoint(path: straight + "/last.safetensors.zst")
        let b = try LoadedCheckpoint(path: resumed + "/last.safetensors.zst")
        try assertSameTensorsAndHistory(a, b)
        XCTAssertEqual(a.metadata.step, 10)
    }

    /// `--validate-every 2` over 3 epochs of `resnet` on 2 ranks: epoch 1 is not validated (its
    /// line says so, its scores are null in metrics.jsonl and NaN in the history), epochs 2 and
    /// 3 (the last) are. Resumed from the checkpoint of the unvalidated epoch (whose BatchNorm
    /// statistics were still averaged over the ranks), the run ends bit-identical. A bad value
    /// is refused in one line.
    func testValidationEveryNthEpochSkipsTheOthersAndResumesBitExact() throws {
        let data = try sharedSubset(self, perClass: 40)
        func arguments(_ folder: String, _ extra: [String] = []) -> [String] {
            ["train", "--data", data, "--checkpoint-dir", folder, "--model", "resnet", "--image-size", "32", "--epochs", "3",
             "--batch-size", "24", "--patience", "0", "--validate-every", "2", "--keep", "20"] + extra
        }
        let straight = try temporaryFolder(self)
        var result = try CLI.run(arguments(straight), ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        let lines = result.stdout.split(separator: "\n").filter { $0.hasPrefix("epoch ") && $0.contains(": loss ") }
        XCTAssertEqual(lines.count, 3, result.stdout)
        XCTAssertTrue(lines.first?.contains("not validated") == true, result.stdout)
        XCTAssertTrue(lines.dropFirst().allSatisfy { $0.contains("val_loss") }, result.stdout)
        XCTAssertTrue(result.stdout.contains("validation after every 2 epochs and after the last"), result.stdout)
        let metrics = try String(contentsOfFile: straight + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(metrics.count, 3)
        XCTAssertTrue(metrics[0].contains("\"val_loss\":null"), String(metrics[0]))
        XCTAssertFalse(metrics[1].contains("null") || metrics[2].contains("null"), metrics.joined(separator: "\n"))
        let a = try LoadedCheckpoint(path: straight + "/last.safetensors.zst")
        XCTAssertEqual(a.metadata.history.map { $0.val_loss.isNaN }, [true, false, false])

        let resumed = try temporaryFolder(self)
        let firstEpoch = try FileManager.default.contentsOfDirectory(atPath: straight).first { $0.hasPrefix("ckpt-e0001-") }
        let start = try XCTUnwrap(firstEpoch, "no checkpoint of epoch 1 in \(straight)")
        result = try CLI.run(arguments(resumed, ["--resume", straight + "/" + start]), ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        try assertSameTensorsAndHistory(a, try LoadedCheckpoint(path: resumed + "/last.safetensors.zst"))

        for bad in ["0", "1.5", "two", "1001"] {
            let refused = try CLI.run(arguments(try temporaryFolder(self), ["--validate-every", bad]))
            XCTAssertEqual(refused.status, 64, refused.output)
            XCTAssertTrue(refused.stderr.contains("--validate-every must be auto or a whole number of epochs"), refused.stderr)
        }
    }

    /// PowerSGD's state rides in the checkpoint: 2 ranks straight, and the same run resumed
    /// on 2 ranks from its checkpoint at update 3, end with bit-identical weights, optimizer
    /// moments, Q factors and each rank's error feedback (which is not zero, so compression
    /// was in use); so with the factors sent in bf16 (`powersgd:2:bf16`, which the log names).
    /// Resumed on 1 rank, the run goes on with the 2 ranks' error feedback summed (and says so)
    /// and ends within 1e-3 (relative L2) of the 2-rank run's weights.
    func testResumeWithPowerSGDStateIsBitExact() throws {
        let data = try sharedSubset(self, perClass: 60)
        var straightRuns: [String] = []
        for rank in ["powersgd:2", "powersgd:2:bf16"] {
            let compress = ["--compress", rank, "--warmup-epochs", "0"]
            let straight = try temporaryFolder(self)
            var result = try CLI.run(trainArguments(data, straight, extra: compress), ranks: 2)
            XCTAssertEqual(result.status, 0, result.output)
            XCTAssertEqual(result.stdout.contains("with bf16 factors"), rank.hasSuffix("bf16"), result.stdout)
            let resumed = try temporaryFolder(self)
            let middle = straight + "/ckpt-e0000-s00000003.safetensors.zst"
            result = try CLI.run(trainArguments(data, resumed, extra: compress + ["--resume", middle]), ranks: 2)
            XCTAssertEqual(result.status, 0, result.output)
            XCTAssertFalse(result.stdout.contains("error feedback starts at zero"), result.stdout)
            let a = try LoadedCheckpoint(path: straight + "/last.safetensors.zst")
            let b = try LoadedCheckpoint(path: resumed + "/last.safetensors.zst")
            XCTAssertEqual(Set(a.file.tensors.keys), Set(b.file.tensors.keys))
            for name in ["compression/q", "compression/error/0", "compression/error/1"] {
                XCTAssertNotNil(a.file.tensors[name], "\(rank): the checkpoint lacks \(name)")
            }
            XCTAssertGreaterThan(try a.file.array("compression/error/1").map(abs).max() ?? 0, 0)
            try assertSameTensorsAndHistory(a, b)
            straightRuns.append(straight)
        }
        let fp32Factors = try LoadedCheckpoint(path: straightRuns[0] + "/last.safetensors.zst")
        let bf16Factors = try LoadedCheckpoint(path: straightRuns[1] + "/last.safetensors.zst")
        XCTAssertNotEqual(try fp32Factors.file.array("compression/q"), try bf16Factors.file.array("compression/q"),
                          "the factors in bf16 are another computation")

        let one = try temporaryFolder(self)
        let compress = ["--compress", "powersgd:2", "--warmup-epochs", "0"]
        let result = try CLI.run(trainArguments(data, one, extra: compress + ["--resume", straightRuns[0] + "/ckpt-e0000-s00000003.safetensors.zst"]),
                                 ranks: 1)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("PowerSGD's error feedback: the sum of the 2 ranks' that wrote the checkpoint goes on from rank 0 (this run has 1)"),
                      result.stdout)
        let distance = weightDistance(try modelTensors(straightRuns[0] + "/last.safetensors.zst"), try modelTensors(one + "/last.safetensors.zst"))
        print("PowerSGD, 2 → 1 ranks: relative L2 \(distance.relative), largest \(distance.largest)")
        // PowerSGD follows the summed gradients, so with the error feedback carried the 1-rank
        // run ends where the 2-rank one did, to rounding, as exact sums do (3.8e-5 measured;
        // 1.4e-2 with the error feedback started again at zero).
        XCTAssertLessThan(distance.relative, 1e-3, "PowerSGD, 2 → 1 ranks: largest difference \(distance.largest)")
    }

    /// PowerSGD between machines (`--allreduce hierarchical`; 4 ranks in machines of 2 by
    /// `--machine-ranks`): the log names it; in the checkpoint every rank holds error feedback,
    /// of the buckets it compresses (the two ranks of a machine never of the same); resumed from update 3 on the same
    /// machines it ends bit-identical to the straight run. It ends within 5e-3 (relative L2) of
    /// flat PowerSGD on the same 4 ranks, as both follow the summed gradients (8.0e-4 measured;
    /// flat on 4 ranks against flat on 2, 2.1e-3: PowerSGD's rounding over 10 updates); and its
    /// checkpoint resumed by 2 ranks (one machine, the checkpoint's `hierarchical` kept) goes
    /// on with the leaders' error feedback summed into its leader and ends within 1e-3 of it
    /// (6.8e-6 measured). The other way, the flat run's checkpoint resumed between the same
    /// machines sums each machine's 2 ranks' error feedback into its leader and ends within
    /// 2e-3 of the flat run (3.3e-4 measured; 1.3e-2 with ranks 1 and 3's left out).
    func testPowerSGDBetweenMachinesResumesBitExact() throws {
        let data = try sharedSubset(self, perClass: 60)
        let compress = ["--compress", "powersgd:2", "--warmup-epochs", "0"]
        let between = compress + ["--allreduce", "hierarchical", "--machine-ranks", "2"]
        let straight = try temporaryFolder(self)
        var result = try CLI.run(trainArguments(data, straight, extra: between), ranks: 4)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("gradients: PowerSGD rank 2 between 2 machines (fp32 sums within each)"), result.stdout)
        let middle = straight + "/ckpt-e0000-s00000003.safetensors.zst"
        let written = try LoadedCheckpoint(path: middle)
        let errors = try (0..<4).map { try written.file.array("compression/error/\($0)") }
        for r in 0..<4 { XCTAssertGreaterThan(errors[r].map(abs).max() ?? 0, 0, "rank \(r) compresses some buckets") }
        for machine in [0, 2] {
            let both = zip(errors[machine], errors[machine + 1]).filter { $0 != 0 && $1 != 0 }.count
            XCTAssertEqual(both, 0, "the ranks of machine \(machine / 2) hold the error feedback of different buckets")
        }
        let resumed = try temporaryFolder(self)
        result = try CLI.run(trainArguments(data, resumed, extra: between + ["--resume", middle]), ranks: 4)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertFalse(result.stdout.contains("error feedback starts at zero"), result.stdout)
        try assertSameTensorsAndHistory(try LoadedCheckpoint(path: straight + "/last.safetensors.zst"),
                                        try LoadedCheckpoint(path: resumed + "/last.safetensors.zst"))

        let flat = try temporaryFolder(self)
        result = try CLI.run(trainArguments(data, flat, extra: compress + ["--machine-ranks", "2"]), ranks: 4)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("hint: PowerSGD over 4 ranks on 2 machines: --allreduce hierarchical compresses between the machines only"),
                      result.stdout)
        XCTAssertFalse(try CLI.run(trainArguments(data, try temporaryFolder(self), extra: compress), ranks: 2).stdout.contains("hint: PowerSGD over"),
                       "one machine: no hint")
        let two = try temporaryFolder(self)
        result = try CLI.run(trainArguments(data, two, extra: compress + ["--resume", middle]), ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("the sum of the 4 ranks' that wrote the checkpoint goes on from rank 0 (this run has 2)"), result.stdout)
        let intoMachines = try temporaryFolder(self)
        result = try CLI.run(trainArguments(data, intoMachines, extra: between + ["--resume", flat + "/ckpt-e0000-s00000003.safetensors.zst"]), ranks: 4)
        XCTAssertEqual(result.status, 0, result.output)
        let reference = try modelTensors(straight + "/last.safetensors.zst")
        for (name, folder, bound, against) in [("flat on 4 ranks", flat, 5e-3, reference), ("resumed on one machine of 2 ranks", two, 1e-3, reference),
                                               ("the flat run resumed between machines", intoMachines, 2e-3, try modelTensors(flat + "/last.safetensors.zst"))] {
            let distance = weightDistance(against, try modelTensors(folder + "/last.safetensors.zst"))
            print("PowerSGD between machines against \(name): relative L2 \(distance.relative), largest \(distance.largest)")
            XCTAssertLessThan(distance.relative, bound, "\(name): largest difference \(distance.largest)")
        }
    }

    /// A run of more ranks than checkpoints hold one error feedback each for (17, 2 images a
    /// rank) checkpoints their sum alone, which is not zero; resumed from it on 17 ranks and on
    /// 2, the run goes on with that sum (the log says so) and ends within 5e-3 (relative L2)
    /// of the straight run's weights. Measured 2e-4 and 1.3e-5; with the error feedback started
    /// again at zero (the earlier behaviour) 2.7e-2.
    func testARunOfManyRanksCheckpointsTheSumOfItsErrorFeedback() throws {
        let ranks = RunLimits.checkpointedErrorFeedbackRanks + 1
        let data = try sharedSubset(self, perClass: 300)  // 15 updates an epoch at batch 34
        let options = ["--compress", "powersgd:2", "--warmup-epochs", "0", "--batch-size", String(2 * ranks)]
        let straight = try temporaryFolder(self)
        let first = try CLI.run(trainArguments(data, straight, epochs: 1, extra: options), ranks: ranks)
        XCTAssertEqual(first.status, 0, first.output)
        let middle = straight + "/ckpt-e0000-s00000003.safetensors.zst"
        let written = try LoadedCheckpoint(path: middle)
        XCTAssertNil(written.file.tensors["compression/error/0"], "a run of \(ranks) ranks keeps no error feedback of each")
        XCTAssertGreaterThan(try written.file.array("compression/error-sum").map(abs).max() ?? 0, 0)
        for readers in [ranks, 2] {
            let resumed = try temporaryFolder(self)
            let result = try CLI.run(trainArguments(data, resumed, epochs: 1, extra: options + ["--resume", middle]), ranks: readers)
            XCTAssertEqual(result.status, 0, result.output)
            XCTAssertTrue(result.stdout.contains(
                "PowerSGD's error feedback: the sum of the \(ranks) ranks' that wrote the checkpoint goes on from rank 0 (this run has \(readers))"),
                result.stdout)
            let distance = weightDistance(try modelTensors(straight + "/last.safetensors.zst"), try modelTensors(resumed + "/last.safetensors.zst"))
            print("PowerSGD, \(ranks) → \(readers) ranks: relative L2 \(distance.relative), largest \(distance.largest)")
            XCTAssertLessThan(distance.relative, 5e-3, "PowerSGD, \(ranks) → \(readers) ranks: largest difference \(distance.largest)")
        }
    }

    /// A checkpoint from 2 ranks continues on 1, and one from 1 rank on 3, at the same data
    /// position; without BatchNorm the result matches the uninterrupted run to float tolerance.
    func testElasticResumeAcrossRankCounts() throws {
        let data = try sharedSubset(self, perClass: 60)
        for (writers, readers) in [(2, 1), (1, 3)] {
            let straight = try temporaryFolder(self)
            XCTAssertEqual(try CLI.run(trainArguments(data, straight), ranks: writers).status, 0)
            let resumed = try temporaryFolder(self)
            let result = try CLI.run(trainArguments(data, resumed, extra: ["--resume", straight + "/ckpt-e0000-s00000003.safetensors.zst"]),
                                     ranks: readers)
            XCTAssertEqual(result.status, 0, result.output)
            XCTAssertTrue(result.stdout.contains("written by \(writers) ranks, continuing on \(readers) with the same global batch 24"), result.stdout)
            let distance = weightDistance(try modelTensors(straight + "/last.safetensors.zst"), try modelTensors(resumed + "/last.safetensors.zst"))
            print("\(writers) → \(readers) ranks: relative L2 \(distance.relative), largest \(distance.largest)")
            XCTAssertLessThan(distance.relative, 1e-3, "\(writers) → \(readers) ranks: largest difference \(distance.largest)")
        }
    }

    /// A resume whose first step is the epoch's short last batch (36 training images, batch 8:
    /// the fifth step has 4), on 2 ranks and on 8 (where some ranks get no sample). The
    /// heartbeat's communicator used to be made lazily in the middle of that step, while
    /// gradient all-reduces were in flight in a different order on different ranks, and
    /// Open MPI read freed memory (`malloc(): corrupted top size`, signal 6).
    func testResumeOntoTheShortLastBatch() throws {
        let data = try sharedSubset(self, perClass: 20)
        let first = try temporaryFolder(self)
        let arguments = ["train", "--data", data, "--model", "simple", "--image-size", "32", "--batch-size", "8",
                         "--checkpoint-every", "1", "--keep", "20"]
        var result = try CLI.run(arguments + ["--checkpoint-dir", first, "--epochs", "1"], ranks: 2)
        XCTAssertEqual(result.status, 0, result.output)
        let fourth = first + "/ckpt-e0000-s00000004.safetensors.zst"
        for ranks in [2, 8] {
            let resumed = try temporaryFolder(self)
            let command = arguments + ["--checkpoint-dir", resumed, "--resume", fourth, "--epochs", "2"]
            result = try CLI.run(command, ranks: ranks, timeout: 120)
            XCTAssertEqual(result.status, 0, "mpirun -np \(ranks) catdog-dist \(command.joined(separator: " ")) exited \(result.status):\n\(result.output.suffix(3000))")
            XCTAssertTrue(result.stdout.contains("step 4 of the epoch"), result.stdout)
            XCTAssertEqual(try LoadedCheckpoint(path: resumed + "/last.safetensors.zst").metadata.epoch, 2)
        }
    }

    /// On resume, an option given that differs from the checkpoint's run is applied where the
    /// run can go on with it (here --lr, --patience, --epochs, said in the log and kept in the
    /// checkpoint) and refused where it cannot (--seed: the data split and order), never
    /// dropped without a word; options left out (--model, --image-size) take the checkpoint's,
    /// not the defaults.
    func testOptionsGivenOnAResumeAreAppliedOrRefused() throws {
        let data = try sharedSubset(self, perClass: 30)
        let folder = try temporaryFolder(self)
        XCTAssertEqual(try CLI.run(trainArguments(data, folder, epochs: 1)).status, 0)
        let resume = ["train", "--data", data, "--checkpoint-dir", folder, "--resume", "auto"]
        let refused = try CLI.run(resume + ["--epochs", "2", "--seed", "7"])
        XCTAssertEqual(refused.status, 1, refused.output)
        XCTAssertTrue(refused.stderr.contains("--seed 7 differs from the resumed run's 1"), refused.stderr)
        let applied = try CLI.run(resume + ["--epochs", "2", "--lr", "0.0005", "--patience", "3", "--model", "simple"])
        XCTAssertEqual(applied.status, 0, applied.output)
        XCTAssertTrue(applied.stdout.contains("resuming with --lr 0.0005 (the run had 0.001)"), applied.stdout)
        XCTAssertTrue(applied.stdout.contains("resuming with --patience 3 (the run had 0)"), applied.stdout)
        let last = try LoadedCheckpoint(path: folder + "/last.safetensors.zst").metadata
        XCTAssertEqual(last.epoch, 2)
        XCTAssertEqual(last.config.model, "simple")
        XCTAssertEqual(last.schedule.baseRate, 0.0005)
        XCTAssertEqual(last.config.patience, 3)
    }

    /// Checkpoints hold fp32 weights whatever the precision of the products, so a run resumes in
    /// the other one: an epoch in fp32, a second resumed with the default (--precision auto:
    /// bf16 here, said in the log), a third back in fp32: each epoch trained (its steps
    /// counted), every tensor F32, every loss finite. bf16 where the kernels have no bf16 products (`--kernels avx2` stands
    /// in for a CPU without AVX512_BF16) is refused in one line, exit 1, before any checkpoint
    /// is written.
    func testResumeAcrossPrecisionsAndTheRefusalWithoutBF16() throws {
        let data = try sharedSubset(self, perClass: 30)
        let refusedFolder = try temporaryFolder(self)
        let refused = try CLI.run(trainArguments(data, refusedFolder, epochs: 1, extra: ["--precision", "bf16", "--kernels", "avx2"]))
        XCTAssertEqual(refused.status, 1, refused.output)
        XCTAssertTrue(refused.stderr.contains("--precision bf16 cannot run here: "), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("use --precision fp32"), refused.stderr)
        XCTAssertFalse(refused.output.contains("Fatal error"), refused.output)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: refusedFolder).filter { $0.hasSuffix(".zst") }, [])
        guard Precision.bf16.unavailableReason == nil else { throw XCTSkip("bf16 products cannot run here: the refusal was checked, the resume cannot be") }

        let folder = try temporaryFolder(self)
        var result = try CLI.run(trainArguments(data, folder, epochs: 1, extra: ["--precision", "fp32"]))
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("convolutions' products in fp32 (--precision fp32)"), result.stdout)
        let resume = ["train", "--data", data, "--checkpoint-dir", folder, "--resume", "auto"]
        result = try CLI.run(resume + ["--epochs", "2"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("convolutions' products in bf16 (--precision auto: every rank can compute in bf16"), result.stdout)
        result = try CLI.run(resume + ["--epochs", "3", "--precision", "fp32", "--ghost-batch", "8"])
        XCTAssertEqual(result.status, 0, result.output)
        let last = try LoadedCheckpoint(path: folder + "/last.safetensors.zst")
        XCTAssertEqual(last.metadata.epoch, 3)
        for (name, tensor) in last.file.tensors { XCTAssertEqual(tensor.dtype, "F32", name) }
        let history = last.metadata.history
        XCTAssertEqual(history.count, 3)
        XCTAssertTrue(history.allSatisfy { $0.train_loss.isFinite && $0.val_loss.isFinite }, "\(history)")
        XCTAssertTrue(history[0].step < history[1].step && history[1].step < history[2].step, "steps by epoch: \(history.map(\.step))")

        // machines.jsonl: a line each start, with the epoch and update it started from, the
        // precision it computed in, and this machine as the one rank saw it.
        let starts = try String(contentsOfFile: folder + "/machines.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(RunStart.self, from: Data($0.utf8)) }
        XCTAssertEqual(starts.map(\.precision), ["fp32", "bf16", "fp32"], "\(starts)")
        XCTAssertEqual(starts.map(\.epoch), [0, 1, 2])
        XCTAssertEqual(starts.map(\.step), [0, history[0].step, history[1].step])
        // BatchNorm over the rank's batch of 24 (one pass), then over groups of 8 (--ghost-batch).
        XCTAssertEqual(starts.map(\.batchNorm), [.init(group: nil, atMost: 24), .init(group: nil, atMost: 24), .init(group: 8, atMost: 8)])
        for start in starts {
            XCTAssertEqual(start.ranks, 1)
            XCTAssertEqual(start.machines.count, 1, "\(start)")
            XCTAssertEqual(start.machines.first?.ranks, [0])
            XCTAssertEqual(start.machines.first?.machine, MachineDescription.current())
            XCTAssertEqual(start.machines.first?.blasCore, blasCoreName)
            XCTAssertEqual(start.machines.first?.kernels, KernelInstructionSet.active.rawValue)
        }
    }

    func testResumeAutoSkipsCorruptAndTruncatedCheckpoints() throws {
        let data = try sharedSubset(self, perClass: 60)
        let folder = try temporaryFolder(self)
        XCTAssertEqual(try CLI.run(trainArguments(data, folder, epochs: 2)).status, 0)
        let store = CheckpointStore(directory: folder)
        let numbered = store.numbered()  // updates 10, 9, 6, 5, 3
        XCTAssertEqual(numbered.count, 5)
        // Truncate `last` (and so the newest numbered, its hard link) and flip bytes in the next.
        let last = try Data(contentsOf: URL(fileURLWithPath: store.lastPath))
        try last.prefix(last.count / 2).write(to: URL(fileURLWithPath: store.lastPath))  // replaces the link
        try FileManager.default.removeItem(atPath: numbered[0])
        try last.prefix(last.count / 3).write(to: URL(fileURLWithPath: numbered[0]))
        var damaged = try Data(contentsOf: URL(fileURLWithPath: numbered[1]))
        for i in stride(from: damaged.count / 2, to: damaged.count / 2 + 64, by: 1) { damaged[i] ^= 0x5A }
        try damaged.write(to: URL(fileURLWithPath: numbered[1]))
        var skipped: [String] = []
        let chosen = try store.newestValid { skipped.append($0.path) }
        XCTAssertEqual(skipped, [store.lastPath, numbered[0], numbered[1]])
        XCTAssertEqual(chosen?.path, numbered[2])
        // A checkpoint that the memory available cannot hold is not known to be damaged: the
        // search stops on the newest with the reason, where skipping would resume from an older
        // one, or start afresh, and lose the work it holds.
        var skippedForMemory: [String] = []
        XCTAssertThrowsError(try store.newestValid(available: { AvailableMemory(bytes: 4096) }) { skippedForMemory.append($0.path) }) { error in
            XCTAssertTrue(error is CheckpointMemoryError, "\(error)")
            XCTAssertTrue("\(error)".contains("checkpoint \(store.lastPath): needs"), "\(error)")
        }
        XCTAssertEqual(skippedForMemory, [], "a checkpoint refused for memory is not skipped")
        let result = try CLI.run(trainArguments(data, folder, epochs: 2, extra: ["--resume", "auto"]))
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("skipping checkpoint \(store.lastPath)"), result.stdout)
        XCTAssertTrue(result.stdout.contains("resumed from \(numbered[2])"), result.stdout)
    }

    func testResumeRefusesFilesThatAreNotCheckpoints() throws {
        let data = try sharedSubset(self, perClass: 10)
        let folder = try temporaryFolder(self)
        let text = folder + "/notes.safetensors.zst"
        try Data("hello".utf8).write(to: URL(fileURLWithPath: text))
        var result = try CLI.run(trainArguments(data, folder, extra: ["--resume", text]))
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("checkpoint \(text): not a readable .safetensors.zst file"), result.stderr)
        // A valid safetensors file from elsewhere, and one from a newer format version.
        let foreign = folder + "/foreign.safetensors.zst", newer = folder + "/newer.safetensors.zst"
        let values: [Float] = [1, 2]
        try values.withUnsafeBufferPointer { v in
            for (path, meta) in [(foreign, ["framework": "pt"]), (newer, ["format": "catdog-dist", "format_version": "99", "catdog": "{}"])] {
                let bytes = try SafeTensors.encode([.init(name: "w", shape: [2], values: v)], metadata: meta)
                try Data(try bytes.withUnsafeBytes { try Zstd.compress($0) }).write(to: URL(fileURLWithPath: path))
            }
        }
        result = try CLI.run(trainArguments(data, folder, extra: ["--resume", foreign]))
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("not a catdog-dist checkpoint"), result.stderr)
        result = try CLI.run(trainArguments(data, folder, extra: ["--resume", newer]))
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("format version 99"), result.stderr)
    }

    func testResumingAFinishedRunSaysSoAndExitsZero() throws {
        let data = try sharedSubset(self, perClass: 20)
        let folder = try temporaryFolder(self)
        XCTAssertEqual(try CLI.run(trainArguments(data, folder, epochs: 1)).status, 0)
        let result = try CLI.run(trainArguments(data, folder, epochs: 1, extra: ["--resume", "auto"]))
        XCTAssertEqual(result.status, 0)
        XCTAssertTrue(result.stdout.contains("is a finished run"), result.stdout)
    }

    /// --time-budget without --epochs fills the budget with the recipe: more epochs than
    /// TrainingConfig's 15, the learning rate at the end of its cosine when the budget ends, no early
    /// stopping, and a run that is complete (a resume says so).
    func testATimeBudgetWithoutEpochsIsFilledAndTheScheduleEndsWithIt() throws {
        let data = try sharedSubset(self, perClass: 20)
        let folder = try temporaryFolder(self)
        let budget = 12.0
        let started = Date()
        let result = try CLI.run(["train", "--data", data, "--checkpoint-dir", folder, "--model", "simple", "--image-size", "32",
                                  "--batch-size", "24", "--time-budget", String(budget)])
        let seconds = Date().timeIntervalSince(started)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("finished: the time budget is spent and the schedule with it"), result.stdout)
        XCTAssertTrue(result.stdout.contains("/~"), "the log shows the epochs the budget holds: \(result.stdout)")
        // The recipe for the options not given.
        for part in ["adamw lr 0.001 weight decay 0.05", "augment flip,color,crop,scale", "(EMA 0.999)"] {
            XCTAssertTrue(result.stdout.contains(part), "missing \(part): \(result.stdout)")
        }
        XCTAssertLessThan(seconds, budget + 15, "the run overran its budget")
        // The live line (on stderr; on a pipe every 15 s, the first at once): the run's ETA, never beyond the budget.
        let runETAs = result.stderr.split(separator: "\n").filter { $0.contains("ETA") }.compactMap { line -> Int? in
            guard let r = line.range(of: ", run ") else { return nil }
            let parts = line[r.upperBound...].split(separator: ":").compactMap { Int($0) }
            return parts.count == 2 ? parts[0] * 60 + parts[1] : nil
        }
        XCTAssertFalse(runETAs.isEmpty, "no ETA of the run in the live lines: \(result.stderr)")
        XCTAssertTrue(runETAs.allSatisfy { $0 <= Int(budget) }, "\(runETAs)")
        let history = try LoadedCheckpoint(path: folder + "/last.safetensors.zst").metadata.history
        XCTAssertGreaterThan(history.count, TrainingConfig().epochs, "fewer epochs than the default in \(budget) s")
        // Validated after epoch 1, every 4th and the last quarter's (the budget's default schedule): epochs 2 and 3 not.
        XCTAssertEqual(history.prefix(4).map { $0.val_loss.isNaN }, [false, true, true, false], "\(history.map(\.val_loss))")
        XCTAssertTrue(history.suffix(3).allSatisfy { $0.val_loss.isFinite }, "\(history.map(\.val_loss))")
        XCTAssertTrue(result.stdout.contains("not validated"), result.stdout)
        // inspect words the epochs the run did not validate as the log does, not as nan.
        let inspected = try CLI.run(["inspect", folder + "/last.safetensors.zst"])
        XCTAssertEqual(inspected.status, 0, inspected.output)
        let epochLines = inspected.stdout.split(separator: "\n").filter { $0.hasPrefix("  epoch ") }
        XCTAssertEqual(epochLines.count, history.count, inspected.stdout)
        XCTAssertEqual(epochLines.prefix(4).map { $0.contains("not validated") }, [false, true, true, false], inspected.stdout)
        XCTAssertFalse(inspected.stdout.contains("nan"), inspected.stdout)
        // Warmup + cosine to the budget's end: the last epoch's rate is a small fraction of the peak.
        let peak = history.map(\.lr).max() ?? 0
        XCTAssertLessThan(history.last!.lr, 0.1 * peak, "\(history.map(\.lr))")
        let again = try CLI.run(["train", "--data", data, "--checkpoint-dir", folder, "--resume", "auto", "--time-budget", String(budget)])
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.stdout.contains("is a finished run"), again.stdout)
    }

    /// A budget that stops a run of --epochs leaves the epoch it stopped in to a resume with
    /// more time, and an epoch it finished done. At one step an epoch every stop is at an
    /// epoch's end: the resume goes on with the next epoch. At nine, a stop inside an epoch
    /// logs the part (the run's last scores), and the resume finishes the epoch, whose line
    /// replaces the part's. Either way the history holds each epoch once, and the checkpoint
    /// reads back. Both used to count an epoch twice: the resume evaluated it again, and wrote
    /// checkpoints with more epochs of history, or without improvement, than epochs, which no
    /// later resume could read.
    func testABudgetStoppedRunResumesEachEpochOnce() throws {
        let data = try sharedSubset(self, perClass: 20)
        for batch in [36, 4] {
            let folder = try temporaryFolder(self)
            let arguments = ["train", "--data", data, "--checkpoint-dir", folder, "--model", "simple", "--image-size", "32",
                             "--epochs", "1000", "--batch-size", String(batch), "--validate-every", "1", "--patience", "0"]
            let first = try CLI.run(arguments + ["--time-budget", "3"])
            XCTAssertEqual(first.status, 0, first.output)
            XCTAssertTrue(first.stdout.contains("; \(36 / batch) steps per epoch;"), first.stdout)
            let stopped = try LoadedCheckpoint(path: folder + "/last.safetensors.zst").metadata
            let n = stopped.history.count
            XCTAssertGreaterThan(n, 1, first.stdout)
            XCTAssertEqual(stopped.history.map(\.epoch), Array(1...n), "batch \(batch)")
            XCTAssertEqual(stopped.history.last?.step, stopped.step)
            if batch == 36 {
                XCTAssertEqual(stopped.epoch, n, "the last epoch's one step was trained: it is done")
                XCTAssertEqual(stopped.step, n)
            }
            let inside = stopped.stepInEpoch > 0
            XCTAssertEqual(stopped.epoch, inside ? n - 1 : n, "batch \(batch)")
            let second = try CLI.run(arguments + ["--resume", "auto", "--time-budget", "6"])
            XCTAssertEqual(second.status, 0, second.output)
            // The epoch stopped inside is logged again when it ends; a finished one is not.
            XCTAssertEqual(second.stdout.contains("epoch \(n)/1000: "), inside, "batch \(batch): \(second.stdout)")
            let resumed = try LoadedCheckpoint(path: folder + "/last.safetensors.zst").metadata
            let m = resumed.history.count
            XCTAssertGreaterThan(m, n, second.stdout)
            XCTAssertEqual(resumed.history.map(\.epoch), Array(1...m), "batch \(batch): \(second.stdout)")
            XCTAssertEqual(resumed.history.last?.step, resumed.step)
            XCTAssertLessThanOrEqual(resumed.epochsWithoutImprovement, resumed.epoch)
            if batch == 4 { print("batch 4: the first run stopped \(inside ? "inside" : "at the end of") epoch \(n)") }
        }
    }

    /// --patience N stops a run after N validated epochs without a lower val_loss (Keras's
    /// EarlyStopping): at a learning rate too small to move the weights, long before its 20
    /// epochs; the checkpoint says so, and its last N epochs did not improve on the best.
    func testEarlyStoppingEndsARunThatStopsImproving() throws {
        let data = try sharedSubset(self, perClass: 20)
        let folder = try temporaryFolder(self)
        let result = try CLI.run(["train", "--data", data, "--checkpoint-dir", folder, "--model", "simple", "--image-size", "32",
                                  "--epochs", "20", "--batch-size", "8", "--patience", "2", "--lr", "1e-9"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stdout.contains("early stopping: val_loss has not improved for 2 epochs"), result.stdout)
        XCTAssertTrue(result.stdout.contains("stopped early in"), result.stdout)
        let m = try LoadedCheckpoint(path: folder + "/last.safetensors.zst").metadata
        XCTAssertLessThan(m.history.count, 20, result.stdout)
        XCTAssertEqual(m.epoch, m.history.count)
        XCTAssertEqual(m.epochsWithoutImprovement, 2)
        let best = try XCTUnwrap(m.bestValidationLoss)
        XCTAssertTrue(m.history.suffix(2).allSatisfy { $0.val_loss >= best }, "\(m.history.map(\.val_loss))")
        XCTAssertEqual(m.history.dropLast(2).map(\.val_loss).min(), best)
    }

    func testInspectShowsMetadataTensorsAndCompression() throws {
        let data = try sharedSubset(self, perClass: 20)
        let folder = try temporaryFolder(self)
        XCTAssertEqual(try CLI.run(trainArguments(data, folder, epochs: 1)).status, 0)
        let result = try CLI.run(["inspect", folder + "/best.safetensors.zst"])
        XCTAssertEqual(result.status, 0, result.output)
        for expected in ["model         simple at 32x32", "global batch 24", "model/conv2d_1.kernel", "F32 [8, 8, 3, 32]", "ratio", "optimizer/m"] {
            XCTAssertTrue(result.stdout.contains(expected), "missing \(expected) in \(result.stdout)")
        }
        let bad = try CLI.run(["inspect", "/etc/hostname"])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("checkpoint /etc/hostname:"), bad.stderr)
    }

    func testPythonStandardLibraryReadsTheCheckpoint() throws {
        let data = try sharedSubset(self, perClass: 20)
        let folder = try temporaryFolder(self)
        XCTAssertEqual(try CLI.run(trainArguments(data, folder, epochs: 1)).status, 0)
        let plain = folder + "/last.safetensors"
        let unzip = try runCommand(["zstd", "-q", "-d", folder + "/last.safetensors.zst", "-o", plain])
        XCTAssertEqual(unzip.status, 0, unzip.stderr)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("cluster/read-checkpoint.py").path
        let python = try runCommand(["python3", script, plain, "model/dense_4.kernel"])
        XCTAssertEqual(python.status, 0, python.stderr)
        let lines = python.stdout.split(separator: "\n")
        XCTAssertTrue(lines.first?.contains("model simple at 32px") ?? false, "\(lines)")
        let json = try JSONSerialization.jsonObject(with: Data(lines.last!.utf8)) as! [String: Any]
        XCTAssertEqual(json["shape"] as? [Int], [64, 1])
        let expected = try LoadedCheckpoint(path: folder + "/last.safetensors.zst").file.array("model/dense_4.kernel")
        XCTAssertEqual((json["values"] as! [Double]).map(Float.init), Array(expected.prefix(8)))
    }
}
