import CatdogData
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

extension Trainer {
    /// Why `fit` called the checkpoint hook.
    public enum CheckpointReason: Sendable {
        case epochEnd(improved: Bool), everySteps
        /// A stop signal (preemption, a time limit, Ctrl-C) ended the run here; it resumes from it.
        case stopped
        /// The run ended; `complete` is false when only the time budget stopped it.
        case finished(complete: Bool)
    }


    /// What an evaluation should take: forward passes only over the validation images, about
    /// 2/5 of a training step per global batch of them, twice with mirror TTA.
    func evaluationSeconds(perStep: Double) -> Double {
        perStep * (Double(source.validationCount) / Double(config.globalBatch)).rounded(.up) * 0.4
            * (config.validationTTA == true ? 2 : 1)
    }

    /// Trains until `config.epochs` epochs are done, early stopping fires, or the time budget
    /// is spent. Rank 0 prints progress to `log` and appends to `metricsFile`.
    public func fit(metricsFile: String?, checkpointEvery: Int = 0, log: @escaping (String) -> Void,
                    progress: ((String) -> Void)? = nil,
                    checkpoint: (Trainer, CheckpointReason) throws -> Void = { _, _ in }) throws -> FitSummary {
        let started = Date()
        let firstGlobalStep = globalStep
        var stoppedBy: FitSummary.Stop = .epochs
        // A run shorter than the timeline's window writes it when it ends (not after an error: a
        // rank that failed alone must not wait in the gathering collective).
        func finishTimeline() throws {
            guard let timeline, timeline.recording else { return }
            _ = try watchdog.watchIfAny("gathering the timeline", expected: 30, listening: true) { try timeline.finish(communicator: comm) }
            if comm.rank == 0 {
                log("timeline of updates \(firstGlobalStep + 1)-\(globalStep) written to \(timeline.path) (chrome://tracing or ui.perfetto.dev)")
            }
        }
        var stepSeconds = 0.0  // at the working size (see below)
        var timedSteps = 0
        // What the watchdog expects: the slowest step so far (the first one gets time to warm
        // up), and for checkpoints the slowest so far; the ranks wait for rank 0's write in a
        // barrier, so that time is not charged to the next step.
        var slowestStep = 0.0, slowestCheckpoint = 0.0, slowestEvaluation = 0.0
        func checkpointing(_ reason: CheckpointReason) throws {
            let started = Date()
            let mark = Timeline.mark(timeline)
            defer { timeline?.record("checkpoint", "checkpoint", since: mark) }
            try watchdog.watchIfAny("writing a checkpoint (rank 0) and waiting for it", expected: 4 * slowestCheckpoint + 30,
                                    listening: true, quiet: 0) {
                try gatherCompressionState()
                try checkpoint(self, reason)
                if watchdog != nil { try comm.barrier() }
            }
            slowestCheckpoint = max(slowestCheckpoint, Date().timeIntervalSince(started))
        }
        // TensorBoard: a failed write (a full disk) costs the events, not the run.
        func record(_ body: (TensorBoardWriter) throws -> Void) {
            guard comm.rank == 0, let events else { return }
            do { try body(events) } catch {
                log("warning: cannot write TensorBoard events to \(events.path) (\(describe(error))); training goes on without them")
                self.events = nil
            }
        }
        var batchLoss = 0.0, batchCount = 0.0
        // What the log shows as the run's length: the epochs, or for a run that fills its
        // budget the epochs the budget is estimated to hold ("~57").
        let fills = config.fillsBudget == true
        var budgetEpochs = 0
        func total() -> String { fills ? (budgetEpochs > 0 ? "~\(budgetEpochs)" : "?") : "\(config.epochs - phase.firstEpoch)" }
        var announcedSize = 0
        outer: while epoch < config.epochs {
            var plan = try EpochPlan(sampleCount: source.trainCount, globalBatch: config.globalBatch,
                                     ranks: comm.size, seed: planSeed, epoch: epoch).withShares(balancer.shares)
            // Progressive resizing: the epoch's input size from how far the schedule has come
            // (the same on every rank), or for a resumed epoch the size it started at.
            if config.resizeFrom != nil {
                let size = resumedEpochSize ?? config.trainingSize(atFraction: Double(globalStep) / Double(max(schedule.totalSteps, 1)))
                resumedEpochSize = nil
                if size != trainingSize { balancer.restartWindow() }  // the speeds change with the size
                try useTrainingSize(size)
                if comm.rank == 0, size != announcedSize {
                    log("epoch \(epoch + 1): training at \(size)x\(size) (progressive resizing to \(config.imageSize)x\(config.imageSize); validation at \(config.imageSize))")
                }
                announcedSize = size
            }
            let epochStarted = Date()
            let waitedBefore = source.waitSeconds
            let computeBefore = computeSeconds
            var localSamples = 0.0
            var imagesThisRun = 0.0
            let firstStep = stepInEpoch
            while stepInEpoch < plan.steps {
                let stepStarted = Date()
                let expected = timedSteps == 0 ? 4 * (watchdog?.timeout ?? 0) : slowestStep
                watchdog?.begin("epoch \(epoch + 1), step \(stepInEpoch + 1) (forward, backward and the gradient all-reduce)",
                                expected: expected)
                let result = try trainStep(plan: plan, step: stepInEpoch)
                localSamples += result.count
                if balancer.observe(passSeconds: stepper.lastStep.passes, updateSeconds: stepper.lastStep.update, samples: Int(result.count)) {
                    let line = try watchdog.watchIfAny("comparing the ranks' speeds to balance their shares", expected: 30, listening: true) {
                        try balancer.rebalance(communicator: comm)
                    }
                    if let line {
                        plan = try plan.withShares(balancer.shares)
                        if comm.rank == 0 { log(line) }
                    }
                }
                // One small all-reduce carries the metrics and rank 0's decisions.
                let elapsed = elapsedBefore + Date().timeIntervalSince(started)
                var stop = 0.0, totalEstimate = 0.0
                if comm.rank == 0, let budget = config.timeBudget, timedSteps > 0 {
                    let perStep = stepSeconds / Double(timedSteps)
                    let remainingEpochs = Double(config.epochs - epoch - 1)
                    // Reserve time for evaluating each remaining epoch.
                    let evaluation = evaluationSeconds(perStep: perStep)
                    let affordable = max(0, (budget - elapsed) / (perStep + evaluation / Double(plan.steps)))
                    let planned = Double(plan.steps - stepInEpoch - 1) + remainingEpochs * Double(plan.steps)
                    totalEstimate = Double(globalStep) + min(planned, affordable)
                    if elapsed + perStep + evaluation > budget { stop = 1 }
                }
                // The last entry: how many ranks were asked to stop (a signal), so all stop together.
                var control = [result.lossSum, result.correct, result.count, stop, totalEstimate,
                               stopSignal() != 0 ? 1 : 0]
                try comm.allReduceSum(&control)
                // The reduced loss is the same on every rank, so all of them stop here together,
                // before anything of the diverged weights reaches a checkpoint or metrics.jsonl:
                // not a number, or a mean loss no training that still learns reaches.
                let meanLoss = control[0] / max(control[2], 1)
                guard meanLoss.isFinite, meanLoss <= Diverged.loss else {
                    throw Diverged(epoch: epoch + 1, step: stepInEpoch + 1, loss: meanLoss,
                                   learningRate: Double(schedule.rate(at: globalStep - 1)))
                }
                watchdog?.end()
                slowestStep = max(slowestStep, Date().timeIntervalSince(stepStarted))
                epochTotals.lossSum += control[0]
                epochTotals.correct += control[1]
                epochTotals.count += control[2]
                batchLoss += control[0]
                batchCount += control[2]
                if batchEventsEvery > 0, globalStep % batchEventsEvery == 0, batchCount > 0 {
                    record { try $0.scalar("loss/batch", batchLoss / batchCount, step: globalStep) }
                    batchLoss = 0
                    batchCount = 0
                }
                imagesThisRun += control[2]
                stepInEpoch += 1
                if config.timeBudget != nil, control[4] > 0 {
                    setScheduleTotalSteps(Int(control[4]))
                    budgetEpochs = Int((control[4] / Double(plan.steps)).rounded(.up))
                }
                // In full-size steps: with progressive resizing a step costs about its pixels'
                // share, and the budget's estimate is of steps still to come, mostly larger.
                let pixels = Double(trainingSize * trainingSize) / Double(config.imageSize * config.imageSize)
                stepSeconds += Date().timeIntervalSince(stepStarted) / pixels
                timedSteps += 1
                if config.checksumEvery > 0, globalStep % config.checksumEvery == 0 { try checkWeightsAgree() }
                // The same update on every rank: all of them gather the timeline here together.
                if let timeline, timeline.recording, globalStep - firstGlobalStep >= timeline.steps { try finishTimeline() }
                if comm.rank == 0, let progress {
                    let seconds = Date().timeIntervalSince(epochStarted)
                    let rate = imagesThisRun / max(seconds, 1e-9)
                    let eta = Double(plan.steps - stepInEpoch) * seconds / Double(stepInEpoch - firstStep)
                    progress(String(format: "%@ %d/%@  step %d/%d  %.1f img/s  loss %.4f  acc %.3f  lr %.2e  ETA %@",
                                    phase.name, epoch + 1 - phase.firstEpoch, total(), stepInEpoch, plan.steps, rate,
                                    epochTotals.lossSum / max(epochTotals.count, 1), epochTotals.correct / max(epochTotals.count, 1),
                                    Double(schedule.rate(at: globalStep)), formatDuration(eta)))
                }
                if control[5] > 0 {
                    // Stopped from outside: one checkpoint of exactly this point, no evaluation.
                    stoppedBy = .signal(stopSignal())
                    try averageBatchNormState()
                    try checkpointing(.stopped)
                    break outer
                }
                if control[3] > 0 { stoppedBy = .timeBudget; break }
                if checkpointEvery > 0, globalStep % checkpointEvery == 0, stepInEpoch < plan.steps {
                    try averageBatchNormState()
                    try checkpointing(.everySteps)
                }
            }
            let trainSeconds = Date().timeIntervalSince(epochStarted)
            let waited = (source.waitSeconds - waitedBefore) / max(trainSeconds, 1e-9)
            if comm.size > 1 {
                let report = try watchdog.watchIfAny("comparing the ranks' speeds after epoch \(epoch + 1)", expected: 30, listening: true) {
                    try stragglers(compute: computeSeconds - computeBefore, samples: localSamples,
                                   inputWait: source.waitSeconds - waitedBefore, epochSeconds: trainSeconds)
                }
                if comm.rank == 0 { for line in report { log(line) } }
            }
            let evaluationEstimate = evaluationSeconds(perStep: slowestStep)
            let evaluationStarted = Date()
            let evaluationMark = Timeline.mark(timeline)
            let (validation, late) = try watchdog.watchIfAny("the evaluation after epoch \(epoch + 1)",
                                                             expected: 2 * max(slowestEvaluation, evaluationEstimate)) {
                try averageBatchNormState()
                let validation = try evaluate()
                // Files that passed the check but failed since (left out of their batch), over all ranks.
                var late = [Double(source.lateFailures.count)]
                try comm.allReduceSum(&late)
                return (validation, late)
            }
            slowestEvaluation = max(slowestEvaluation, Date().timeIntervalSince(evaluationStarted))
            timeline?.record("evaluation", "evaluation", since: evaluationMark)
            let elapsed = elapsedBefore + Date().timeIntervalSince(started)
            let metrics = EpochMetrics(
                epoch: epoch + 1, step: globalStep, train_loss: epochTotals.lossSum / max(epochTotals.count, 1),
                train_acc: epochTotals.correct / max(epochTotals.count, 1), val_loss: validation.loss,
                val_acc: validation.accuracy, images_per_s: imagesThisRun / max(trainSeconds, 1e-9),
                elapsed_s: elapsed, lr: Double(schedule.rate(at: max(globalStep - 1, 0))), ranks: comm.size)
            history.append(metrics)
            let improved = validation.loss < bestValidationLoss
            if improved {
                bestValidationLoss = validation.loss
                epochsWithoutImprovement = 0
                rememberBest()
            } else {
                epochsWithoutImprovement += 1
            }
            if comm.rank == 0 {
                log(String(format: "%@ %d/%@: loss %.4f acc %.4f | val_loss %.4f val_acc %.4f | %.1f img/s, input wait %.1f%% | %@%@",
                           phase.name, epoch + 1 - phase.firstEpoch, total(), metrics.train_loss, metrics.train_acc, metrics.val_loss, metrics.val_acc,
                           metrics.images_per_s, waited * 100, formatDuration(elapsed), improved ? " | best" : ""))
                if late[0] > 0 {
                    log("warning: \(Int(late[0])) image(s) that passed the check before training failed to decode since and were left out of their batches so far (changed on disk?); rank 0's: \(source.lateFailures.prefix(3).joined(separator: "; "))")
                }
                if let metricsFile { try appendLine(metrics.jsonLine, to: metricsFile) }
                record { events in
                    for (tag, value) in [("loss/train", metrics.train_loss), ("loss/validation", metrics.val_loss),
                                         ("accuracy/train", metrics.train_acc), ("accuracy/validation", metrics.val_acc),
                                         ("learning_rate", metrics.lr), ("images_per_s", metrics.images_per_s),
                                         ("ranks", Double(metrics.ranks))] {
                        try events.scalar(tag, value, step: metrics.epoch)
                    }
                }
            }
            let finishedEpoch = stoppedBy != .timeBudget
            if finishedEpoch {
                epoch += 1
                stepInEpoch = 0
                epochTotals = EpochTotals()
            }
            try checkpointing(.epochEnd(improved: improved))
            if stoppedBy == .timeBudget { break outer }
            // A stop signal during the evaluation: the epoch's checkpoint is the one to resume from.
            var asked = [stopSignal() != 0 ? 1.0 : 0]
            try watchdog.watchIfAny("agreeing whether to stop after epoch \(epoch)", expected: slowestStep, listening: true) {
                try comm.allReduceSum(&asked)
            }
            if asked[0] > 0 { stoppedBy = .signal(stopSignal()); break outer }
            if config.patience > 0, epochsWithoutImprovement >= config.patience, epoch < config.epochs {
                stoppedBy = .earlyStopping
                if comm.rank == 0 {
                    log("early stopping: val_loss has not improved for \(config.patience) epochs; best \(String(format: "%.4f", bestValidationLoss))")
                }
                break
            }
        }
        // The end-of-run checkpoint holds the exact state (so a larger --epochs continues it);
        // best.safetensors.zst holds the best weights. In memory, the best weights win (Keras's
        // EarlyStopping(restore_best_weights=True)).
        // A run that fills its budget is complete when the budget is spent.
        if case .signal = stoppedBy {
            try finishTimeline()
            return FitSummary(stop: stoppedBy, seconds: Date().timeIntervalSince(started), bestValidationLoss: bestValidationLoss,
                              history: history)
        }
        try checkpointing(.finished(complete: stoppedBy != .timeBudget || fills))
        if !history.isEmpty, bestValidationLoss.isFinite {
            try watchdog.watchIfAny("sending the best weights", expected: 30) { try restoreBest() }
        }
        try finishTimeline()
        return FitSummary(stop: stoppedBy, seconds: Date().timeIntervalSince(started), bestValidationLoss: bestValidationLoss,
                          history: history)
    }
}

extension Trainer {
    /// A rank far slower a sample than the other ranks' median (this ratio or more) is named
    /// after each epoch.
    public static let stragglerRatio = 1.5

    /// Collective: every rank's compute time a sample this epoch, its samples, input wait and
    /// kernels; returns (on rank 0) a line for each rank whose time a sample is
    /// `stragglerRatio` × the median or more, e.g. "straggler: rank 3 on lab4: 1.9× the median
    /// time a sample (5.1 ms against 2.7 ms); 16 of the global batch of 64 a step; input wait
    /// 0.4%; avx2 kernels".
    func stragglers(compute: Double, samples: Double, inputWait: Double, epochSeconds: Double) throws -> [String] {
        let n = comm.size, r = comm.rank
        let isas: [KernelInstructionSet] = [.baseline, .avx2, .avx512f]
        var table = [Double](repeating: 0, count: 4 * n)
        table[r] = compute
        table[n + r] = samples
        table[2 * n + r] = inputWait
        table[3 * n + r] = Double(isas.firstIndex(of: KernelInstructionSet.active) ?? 0)
        try comm.allReduceSum(&table)
        let isa: [KernelInstructionSet] = table[(3 * n)...].map { isas[min(max(Int($0), 0), 2)] }
        return Trainer.stragglerLines(compute: Array(table[0..<n]), samples: Array(table[n..<(2 * n)]),
                                      inputWait: Array(table[(2 * n)..<(3 * n)]), isa: isa,
                                      hosts: comm.hostNames, epochSeconds: epochSeconds, steps: stepsPerEpoch, globalBatch: config.globalBatch)
    }

    /// The straggler report from every rank's numbers (a pure function, for tests).
    public static func stragglerLines(compute: [Double], samples: [Double], inputWait: [Double], isa: [KernelInstructionSet],
                                      hosts: [String], epochSeconds: Double, steps: Int, globalBatch: Int) -> [String] {
        let perSample = zip(compute, samples).map { $1 > 0 ? $0 / $1 : Double.nan }
        func median(_ values: [Double]) -> Double {
            let v = values.filter { $0.isFinite }.sorted()
            guard !v.isEmpty else { return .nan }
            return v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
        }
        return perSample.indices.compactMap { rank -> String? in
            // Against the other ranks' median (with two ranks, the other rank itself).
            let time = perSample[rank]
            var others = perSample
            others.remove(at: rank)
            let median = median(others)
            guard time.isFinite, median.isFinite, median > 0, time >= stragglerRatio * median else { return nil }
            let share = (samples[rank] / Double(max(steps, 1))).rounded()
            return String(format: "straggler: rank %d on %@: %.1f× the other ranks' median time a sample (%.2f ms against %.2f ms); %.0f samples a step of the global batch of %d; input wait %.1f%%; %@ kernels",
                          rank, rank < hosts.count ? hosts[rank] : "?", time / median, time * 1000, median * 1000, share, globalBatch,
                          100 * inputWait[rank] / max(epochSeconds, 1e-9), isa[rank].rawValue)
        }
    }
}

/// Training produced a non-finite loss: the weights have diverged.
public struct Diverged: Error, CustomStringConvertible {
    /// A mean loss per sample above this is divergence: the binary cross-entropy of a guess is
    /// ln 2 ≈ 0.69, and 10,000 means logits wrong by 10,000 on average (weights that exploded).
    public static let loss = 1e4
    public var epoch: Int
    public var step: Int
    public var loss: Double
    public var learningRate: Double
    public var description: String {
        let what = loss.isFinite ? String(format: "the mean loss is %.3g, above %.0f", loss, Diverged.loss) : "the loss is not a number"
        return String(format: "training diverged at epoch %d, step %d: %@ (learning rate %.3g); "
            + "the last checkpoint is kept. Try a lower --lr, or more --warmup-epochs", epoch, step, what, learningRate)
    }
}

public struct FitSummary: Sendable {
    public enum Stop: Sendable, Equatable {
        case epochs, earlyStopping, timeBudget
        /// A stop signal (the first one any rank received; 0 when only a peer got one).
        case signal(Int32)
    }
    public var stop: Stop
    public var seconds: Double
    public var bestValidationLoss: Double
    public var history: [EpochMetrics]
}

extension Optional where Wrapped == StallWatchdog {
    /// Runs `body`, watched when there is a watchdog.
    func watchIfAny<T>(_ operation: String, expected: Double, listening: Bool = false, quiet: Int? = nil,
                       _ body: () throws -> T) rethrows -> T {
        guard let watchdog = self else { return try body() }
        return try watchdog.watch(operation, expected: expected, listening: listening, quiet: quiet, body)
    }
}
