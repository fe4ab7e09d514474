import CatdogDistributed
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


    /// What an evaluation of the validation images should take (`TrainingConfig.evaluationSeconds`).
    func evaluationSeconds(perStep: Double) -> Double {
        config.evaluationSeconds(perStep: perStep, validationImages: source.validationCount)
    }

    /// What one call of `fit` keeps between its steps and epochs: its callbacks, what it has
    /// measured for the watchdog and the time budget, and why it stopped.
    final class FitRun {
        let started = Date()
        let firstGlobalStep: Int
        let metricsFile: String?
        let checkpointEvery: Int
        let log: (String) -> Void
        let progress: ((String) -> Void)?
        let checkpoint: (Trainer, CheckpointReason) throws -> Void
        var stoppedBy: FitSummary.Stop = .epochs
        /// The steps timed so far, in steps at the largest training size (each step's seconds over its
        /// size's relative cost, `Trainer.stepCosts`).
        var stepSeconds = 0.0
        var timedSteps = 0
        /// What the watchdog expects: the slowest step so far (the first one gets time to warm
        /// up), and the slowest checkpoint and evaluation so far.
        var slowestStep = 0.0, slowestCheckpoint = 0.0, slowestEvaluation = 0.0
        /// Loss and samples since the last TensorBoard batch event.
        var batchLoss = 0.0, batchCount = 0.0
        /// For a run that fills its budget, the epochs it is estimated to hold ("~57" in the log).
        var budgetEpochs = 0
        var announcedSize = 0

        init(firstGlobalStep: Int, metricsFile: String?, checkpointEvery: Int, log: @escaping (String) -> Void,
             progress: ((String) -> Void)?, checkpoint: @escaping (Trainer, CheckpointReason) throws -> Void) {
            self.firstGlobalStep = firstGlobalStep
            self.metricsFile = metricsFile
            self.checkpointEvery = checkpointEvery
            self.log = log
            self.progress = progress
            self.checkpoint = checkpoint
        }
    }

    /// One epoch's training figures on this rank, from its start.
    struct EpochRun {
        let started = Date()
        let waitedBefore: Double
        let computeBefore: Double
        let firstStep: Int
        var localSamples = 0.0
        var images = 0.0
    }

    /// What every rank agrees on after a step, in one small all-reduce: the step's loss,
    /// correct answers and samples over all ranks, whether rank 0 found the time budget spent
    /// (and how many updates it now holds), and whether any rank was asked to stop.
    struct StepControl {
        var lossSum: Double, correct: Double, count: Double
        var budgetSpent: Bool
        /// Updates the time budget holds in all, estimated by rank 0 (0: no estimate).
        var totalEstimate: Double
        var signalled: Bool

        static func agree(_ result: StepResult, budgetSpent: Bool, totalEstimate: Double, signalled: Bool,
                          communicator: Communicator) throws -> StepControl {
            var v = [result.lossSum, result.correct, result.count, budgetSpent ? 1 : 0, totalEstimate, signalled ? 1 : 0]
            try communicator.allReduceSum(&v)
            return StepControl(lossSum: v[0], correct: v[1], count: v[2], budgetSpent: v[3] > 0, totalEstimate: v[4], signalled: v[5] > 0)
        }
    }

    /// Trains until `config.epochs` epochs are done, early stopping fires, or the time budget
    /// is spent. Rank 0 prints progress to `log` and appends to `metricsFile`.
    public func fit(metricsFile: String?, checkpointEvery: Int = 0, log: @escaping (String) -> Void,
                    progress: ((String) -> Void)? = nil,
                    checkpoint: @escaping (Trainer, CheckpointReason) throws -> Void = { _, _ in }) throws -> FitSummary {
        let run = FitRun(firstGlobalStep: globalStep, metricsFile: metricsFile, checkpointEvery: checkpointEvery, log: log,
                         progress: progress, checkpoint: checkpoint)
        while epoch < config.epochs {
            var plan = try beginEpoch(run)
            let counts = try trainSteps(&plan, run)
            if case .signal = run.stoppedBy { break }
            guard try endEpoch(plan, counts, run) else { break }
        }
        // The end-of-run checkpoint holds the exact state (so a larger --epochs continues it);
        // best.safetensors.zst holds the best weights. In memory, the best weights win (Keras's
        // EarlyStopping(restore_best_weights=True)). A run that fills its budget is complete
        // when the budget is spent. A stop signal's checkpoint is already written.
        if case .signal = run.stoppedBy {} else {
            try checkpointing(.finished(complete: run.stoppedBy != .timeBudget || config.fillsBudget == true), run)
            if !history.isEmpty, bestValidationLoss.isFinite {
                try watchdog.watchIfAny("sending the best weights", expected: 30) { try restoreBest() }
            }
        }
        try finishTimeline(run)
        return FitSummary(stop: run.stoppedBy, seconds: Date().timeIntervalSince(run.started), bestValidationLoss: bestValidationLoss,
                          history: history)
    }

    /// The epoch's plan (each rank's share of every step), at the epoch's input size.
    func beginEpoch(_ run: FitRun) throws -> EpochPlan {
        let plan = try EpochPlan(sampleCount: source.trainCount, globalBatch: config.globalBatch,
                                 ranks: comm.size, seed: planSeed, epoch: epoch, shares: balancer.shares)
        // Progressive resizing: the epoch's input size from how far the schedule has come
        // (the same on every rank), or for a resumed epoch the size it started at.
        if config.trainsAtOtherSizes {
            var size = resumedEpochSize ?? config.trainingSize(atFraction: Double(globalStep) / Double(max(schedule.totalSteps, 1)))
            // A budget's estimate of the run's steps moves with the machine's speed; the sizes
            // only grow.
            if config.timeBudget != nil { size = max(size, run.announcedSize) }
            resumedEpochSize = nil
            if size != trainingSize { balancer.restartWindow() }  // the speeds change with the size
            try useTrainingSize(size)
            if comm.rank == 0, size != run.announcedSize {
                let growth = config.resizeFrom.map { _ in "progressive resizing to \(config.largestTrainingSize)x\(config.largestTrainingSize); " } ?? ""
                run.log("epoch \(epoch + 1): training at \(size)x\(size) (\(growth)validation at \(config.imageSize)x\(config.imageSize))")
            }
            run.announcedSize = size
        }
        return plan
    }

    /// The epoch's remaining steps: each one trained, agreed on, checked and reported. Stops
    /// early when the time budget is spent (`run.stoppedBy`) or a stop signal arrives (then
    /// after a checkpoint of exactly this point).
    func trainSteps(_ plan: inout EpochPlan, _ run: FitRun) throws -> EpochRun {
        var counts = EpochRun(waitedBefore: source.waitSeconds, computeBefore: computeSeconds, firstStep: stepInEpoch)
        while stepInEpoch < plan.steps {
            let stepStarted = Date()
            let expected = run.timedSteps == 0 ? 4 * (watchdog?.timeout ?? 0) : run.slowestStep
            watchdog?.begin("epoch \(epoch + 1), step \(stepInEpoch + 1) (forward, backward and the gradient all-reduce)",
                            expected: expected)
            let result = try trainStep(plan: plan, step: stepInEpoch)
            counts.localSamples += result.count
            let agreeing = Timeline.mark(timeline)
            let control = try agree(result, plan: plan, run)
            timeline?.record("agreeing on the step", "wait", since: agreeing)
            try rebalance(&plan, samples: result.count, run)
            watchdog?.end()
            run.slowestStep = max(run.slowestStep, Date().timeIntervalSince(stepStarted))
            record(control, run)
            counts.images += control.count
            stepInEpoch += 1
            if config.timeBudget != nil, control.totalEstimate > 0 {
                setScheduleTotalSteps(Int(control.totalEstimate))
                run.budgetEpochs = Int((control.totalEstimate / Double(plan.steps)).rounded(.up))
            }
            run.stepSeconds += Date().timeIntervalSince(stepStarted) / stepCosts.relative(trainingSize)
            run.timedSteps += 1
            if config.checksumEvery > 0, globalStep % config.checksumEvery == 0 { try checkWeightsAgree() }
            // The same update on every rank: all of them gather the timeline here together.
            if let timeline, timeline.recording, globalStep - run.firstGlobalStep >= timeline.steps { try finishTimeline(run) }
            reportProgress(plan, counts, run)
            if control.signalled {
                // Stopped from outside: one checkpoint of exactly this point, no evaluation.
                run.stoppedBy = .signal(stopSignal())
                try averageBatchNormState()
                try checkpointing(.stopped, run)
                break
            }
            if control.budgetSpent { run.stoppedBy = .timeBudget; break }
            if run.checkpointEvery > 0, globalStep % run.checkpointEvery == 0, stepInEpoch < plan.steps {
                try averageBatchNormState()
                try checkpointing(.everySteps, run)
            }
        }
        return counts
    }

    /// The step's all-reduced metrics and decisions; stops every rank together, before
    /// anything of diverged weights reaches a checkpoint or metrics.jsonl, when the mean loss
    /// is not a number or above what any training that still learns reaches.
    func agree(_ result: StepResult, plan: EpochPlan, _ run: FitRun) throws -> StepControl {
        var budgetSpent = false, totalEstimate = 0.0
        if comm.rank == 0, let budget = config.timeBudget, run.timedSteps > 0 {
            let elapsed = elapsedBefore + Date().timeIntervalSince(run.started)
            let remaining = remainingSteps(plan, leftInEpoch: plan.steps - stepInEpoch - 1, run)
            let planned = remaining.leftInEpoch + max(config.epochs - epoch - 1, 0) * plan.steps
            totalEstimate = Double(remaining.affordableTotal(seconds: budget - elapsed, planned: planned, config: config, costs: stepCosts))
            budgetSpent = !remaining.trainsAnotherStep(seconds: budget - elapsed, config: config, costs: stepCosts)
        }
        let control = try StepControl.agree(result, budgetSpent: budgetSpent, totalEstimate: totalEstimate,
                                            signalled: stopSignal() != 0, communicator: comm)
        let meanLoss = control.lossSum / max(control.count, 1)
        guard meanLoss.isFinite, meanLoss <= Diverged.loss else {
            throw Diverged(epoch: epoch + 1, step: stepInEpoch + 1, loss: meanLoss,
                           learningRate: Double(schedule.rate(at: globalStep - 1)))
        }
        return control
    }

    /// `--balance auto`: this rank's step into the speed window, and when it is full, the
    /// ranks' shares re-estimated (collective) and the plan's changed when that pays.
    func rebalance(_ plan: inout EpochPlan, samples: Double, _ run: FitRun) throws {
        guard balancer.observe(passSeconds: stepper.lastStep.passes, updateSeconds: stepper.lastStep.update, samples: Int(samples)) else { return }
        let line = try watchdog.watchIfAny("comparing the ranks' speeds to balance their shares", expected: 30, listening: true) {
            try balancer.rebalance(communicator: comm)
        }
        guard let line else { return }
        plan = try plan.withShares(balancer.shares)
        if comm.rank == 0 { run.log(line) }
    }

    /// The step's metrics into the epoch's totals and TensorBoard's batch events.
    func record(_ control: StepControl, _ run: FitRun) {
        epochTotals.lossSum += control.lossSum
        epochTotals.correct += control.correct
        epochTotals.count += control.count
        run.batchLoss += control.lossSum
        run.batchCount += control.count
        if batchEventsEvery > 0, globalStep % batchEventsEvery == 0, run.batchCount > 0 {
            recordEvents(run) { try $0.scalar("loss/batch", run.batchLoss / run.batchCount, step: globalStep) }
            run.batchLoss = 0
            run.batchCount = 0
        }
    }

    /// Rank 0's live line: images a second, the epoch's loss and accuracy, the rate, the ETA.
    func reportProgress(_ plan: EpochPlan, _ counts: EpochRun, _ run: FitRun) {
        guard comm.rank == 0, let progress = run.progress else { return }
        let seconds = Date().timeIntervalSince(counts.started)
        let rate = counts.images / max(seconds, 1e-9)
        let eta = Double(plan.steps - stepInEpoch) * seconds / Double(stepInEpoch - counts.firstStep)
        let whole = runRemaining(plan, run).map { ", run \(formatDuration($0))" } ?? ""
        progress(String(format: "%@ %d/%@  step %d/%d  %.1f img/s  loss %.4f  acc %.3f  lr %.2e  ETA %@%@",
                        phase.name, epoch + 1 - phase.firstEpoch, runLength(run), stepInEpoch, plan.steps, rate,
                        epochTotals.lossSum / max(epochTotals.count, 1), epochTotals.correct / max(epochTotals.count, 1),
                        Double(schedule.rate(at: globalStep)), formatDuration(eta), whole))
    }

    /// The steps still to come from here, `leftInEpoch` of them in this epoch, priced by what the
    /// steps timed so far cost at the largest size (`run` has timed at least one), the evaluations
    /// and checkpoints by the slowest so far (once one is measured; before, evaluations by
    /// `TrainingConfig.evaluationSeconds`'s estimate): a budget is a limit, and an evaluation's
    /// time moves by a tenth between epochs.
    func remainingSteps(_ plan: EpochPlan, leftInEpoch: Int, _ run: FitRun) -> RemainingSteps {
        let perStep = run.stepSeconds / Double(max(run.timedSteps, 1))
        return RemainingSteps(step: globalStep, leftInEpoch: leftInEpoch, stepsPerEpoch: plan.steps, currentSize: trainingSize,
                              topStepSeconds: perStep, evaluationSeconds: run.slowestEvaluation > 0 ? run.slowestEvaluation : evaluationSeconds(perStep: perStep),
                              checkpointSeconds: run.slowestCheckpoint, checkpointEvery: run.checkpointEvery)
    }

    /// Seconds the whole run has left, as far as rank 0 can tell: the rest of its time budget,
    /// or of its epochs (their steps at the pace so far, each at its size, and one evaluation each), whichever
    /// is less; nil before a step has been timed. Early stopping can end it sooner.
    func runRemaining(_ plan: EpochPlan, _ run: FitRun) -> Double? {
        guard run.timedSteps > 0 else { return nil }
        let steps = remainingSteps(plan, leftInEpoch: plan.steps - stepInEpoch, run)
        let total = globalStep + steps.leftInEpoch + max(config.epochs - epoch - 1, 0) * plan.steps
        var remaining = steps.seconds(toTotal: total, config: config, costs: stepCosts)
        if let budget = config.timeBudget {
            remaining = min(remaining, max(0, budget - elapsedBefore - Date().timeIntervalSince(run.started)))
        }
        return remaining
    }

    /// What the log shows as the run's length: the epochs, or for a run that fills its budget
    /// the epochs the budget is estimated to hold ("~57").
    func runLength(_ run: FitRun) -> String {
        guard config.fillsBudget == true else { return "\(config.epochs - phase.firstEpoch)" }
        return run.budgetEpochs > 0 ? "~\(run.budgetEpochs)" : "?"
    }

    /// After the epoch's steps: stragglers named, validation, metrics logged and written, the
    /// best weights kept, the epoch's checkpoint, and whether to go on (not when the budget is
    /// spent, a stop signal arrived, or early stopping fires).
    func endEpoch(_ plan: EpochPlan, _ counts: EpochRun, _ run: FitRun) throws -> Bool {
        let trainSeconds = Date().timeIntervalSince(counts.started)
        let waited = (source.waitSeconds - counts.waitedBefore) / max(trainSeconds, 1e-9)
        // A run resumed at the end of an epoch's steps (stopped before the end of the epoch)
        // trained none of them: no speeds to compare, on every rank alike.
        let trained = stepInEpoch > counts.firstStep
        if comm.size > 1, trained {
            let report = try watchdog.watchIfAny("comparing the ranks' speeds after epoch \(epoch + 1)", expected: 30, listening: true) {
                try stragglers(compute: computeSeconds - counts.computeBefore, samples: counts.localSamples,
                               inputWait: source.waitSeconds - counts.waitedBefore, epochSeconds: trainSeconds)
            }
            if comm.rank == 0 { for line in report { run.log(line) } }
        }
        // The validation schedule (`TrainingConfig.validates`): an epoch it skips still averages
        // the ranks' BatchNorm statistics, as a checkpoint needs, and its metrics carry no
        // validation (null in metrics.jsonl).
        let last = run.stoppedBy == .timeBudget || epoch + 1 >= config.epochs
        let validating = config.validates(epoch: epoch + 1, fraction: Double(globalStep) / Double(max(schedule.totalSteps, 1)),
                                          last: last)
        let (validation, late): ((loss: Double, accuracy: Double), Double)
        if validating {
            guard let validated = try validate(run) else {
                // A stop signal during the evaluation: a checkpoint of the epoch's trained steps,
                // before the end of the epoch, which the resumed run does first.
                run.stoppedBy = .signal(stopSignal())
                try checkpointing(.stopped, run)
                return false
            }
            (validation, late) = validated
        } else {
            try watchdog.watchIfAny("averaging BatchNorm's statistics after epoch \(epoch + 1)", expected: 30, listening: true) {
                try averageBatchNormState()
            }
            (validation, late) = ((.nan, .nan), 0)
        }
        let elapsed = elapsedBefore + Date().timeIntervalSince(run.started)
        // The side of the epoch's images: the size progressive resizing or --train-size gave it,
        // else the model's (a head on extracted features trains on no image of its own size).
        let imageSide = config.trainsAtOtherSizes ? trainingSize : config.imageSize
        let metrics = EpochMetrics(
            epoch: epoch + 1, step: globalStep, train_loss: epochTotals.lossSum / max(epochTotals.count, 1),
            train_acc: epochTotals.correct / max(epochTotals.count, 1), val_loss: validation.loss,
            val_acc: validation.accuracy, images_per_s: trained ? counts.images / max(trainSeconds, 1e-9) : .nan,
            elapsed_s: elapsed, lr: Double(schedule.rate(at: max(globalStep - 1, 0))), ranks: comm.size, train_size: imageSide)
        // The budget can stop a run inside an epoch, which a resume with more time finishes; an
        // epoch whose steps were all trained is done.
        let whole = run.stoppedBy != .timeBudget || stepInEpoch >= plan.steps
        let improved = recordEpoch(metrics, whole: whole)
        if comm.rank == 0 { try report(metrics, improved: improved, validated: validating, inputWait: waited, late: late, run) }
        if whole {
            epoch += 1
            stepInEpoch = 0
            epochTotals = EpochTotals()
        }
        try checkpointing(.epochEnd(improved: improved), run)
        if run.stoppedBy == .timeBudget { return false }
        return try goesOn(validated: validating, run)
    }

    /// The epoch's metrics into the history, and whether its validation improved on the best
    /// (then its weights are kept as the best). An epoch the budget stopped inside (not
    /// `whole`) is validated and logged (the run's last scores), and, resumed with more time,
    /// again when it ends: its whole line then replaces the part's, and only a whole epoch
    /// counts towards --patience. (Counted twice, a resumed run wrote checkpoints with more
    /// epochs of history, or without improvement, than epochs.)
    func recordEpoch(_ metrics: EpochMetrics, whole: Bool) -> Bool {
        if history.last?.epoch == metrics.epoch { history.removeLast() }
        history.append(metrics)
        guard metrics.val_loss < bestValidationLoss else {
            if whole { epochsWithoutImprovement += 1 }
            return false
        }
        bestValidationLoss = metrics.val_loss
        epochsWithoutImprovement = 0
        rememberBest()
        return true
    }

    /// After an epoch's checkpoint: whether every rank goes on, or a stop signal (to any rank)
    /// or early stopping ends the run here.
    func goesOn(validated: Bool, _ run: FitRun) throws -> Bool {
        // A stop signal during the evaluation: the epoch's checkpoint is the one to resume from.
        var asked = [stopSignal() != 0 ? 1.0 : 0]
        try watchdog.watchIfAny("agreeing whether to stop after epoch \(epoch)", expected: run.slowestStep, listening: true) {
            try comm.allReduceSum(&asked)
        }
        if asked[0] > 0 { run.stoppedBy = .signal(stopSignal()); return false }
        if validated, config.patience > 0, epochsWithoutImprovement >= config.patience, epoch < config.epochs {
            run.stoppedBy = .earlyStopping
            if comm.rank == 0 {
                run.log("early stopping: val_loss has not improved for \(config.patience) epochs; best \(String(format: "%.4f", bestValidationLoss))")
            }
            return false
        }
        return true
    }

    /// Validation after an epoch (BatchNorm statistics averaged first), and the files that
    /// passed the check but failed since, over all ranks.
    /// Nil when a stop signal came during the evaluation (every rank together).
    func validate(_ run: FitRun) throws -> (validation: (loss: Double, accuracy: Double), late: Double)? {
        let evaluationEstimate = evaluationSeconds(perStep: run.slowestStep)
        let evaluationStarted = Date()
        let evaluationMark = Timeline.mark(timeline)
        let name = "validation after epoch \(epoch + 1 - phase.firstEpoch)"
        let progress = comm.rank == 0 ? run.progress : nil
        let result = try watchdog.watchIfAny("the evaluation after epoch \(epoch + 1)",
                                             expected: 2 * max(run.slowestEvaluation, evaluationEstimate)) {
            () -> (validation: (loss: Double, accuracy: Double), late: Double)? in
            try averageBatchNormState()
            let validation = try evaluateUnlessStopped { done, total in
                guard let progress, done > 0 else { return }
                let seconds = Date().timeIntervalSince(evaluationStarted)
                progress(String(format: "%@: %d/%d images  %.1f img/s  ETA %@", name, done, total, Double(done) / max(seconds, 1e-9),
                                formatDuration(seconds * Double(total - done) / Double(done))))
            }
            guard let validation else { return nil }
            var late = [Double(source.lateFailures.count)]
            try comm.allReduceSum(&late)
            return (validation, late[0])
        }
        run.slowestEvaluation = max(run.slowestEvaluation, Date().timeIntervalSince(evaluationStarted))
        timeline?.record("evaluation", "evaluation", since: evaluationMark)
        return result
    }

    /// Rank 0: the epoch's line, late failures, metrics.jsonl and TensorBoard.
    func report(_ metrics: EpochMetrics, improved: Bool, validated: Bool, inputWait: Double, late: Double, _ run: FitRun) throws {
        let scores = validated ? String(format: "val_loss %.4f val_acc %.4f", metrics.val_loss, metrics.val_acc) : "not validated"
        let speed = metrics.images_per_s.isFinite
            ? String(format: "%.1f img/s, input wait %.1f%%", metrics.images_per_s, inputWait * 100) : "its steps were trained before the resume"
        run.log(String(format: "%@ %d/%@: loss %.4f acc %.4f | %@ | %@ | %@%@",
                       phase.name, metrics.epoch - phase.firstEpoch, runLength(run), metrics.train_loss, metrics.train_acc,
                       scores, speed, formatDuration(metrics.elapsed_s),
                       improved ? " | best" : ""))
        if late > 0 {
            run.log("warning: \(Int(late)) image(s) that passed the check before training failed to decode since and were left out of their batches so far (changed on disk?); rank 0's: \(source.lateFailures.prefix(3).joined(separator: "; "))")
        }
        if let metricsFile = run.metricsFile { try appendLine(metrics.jsonLine, to: metricsFile) }
        recordEvents(run) { events in
            for (tag, value) in [("loss/train", metrics.train_loss), ("loss/validation", metrics.val_loss),
                                 ("accuracy/train", metrics.train_acc), ("accuracy/validation", metrics.val_acc),
                                 ("learning_rate", metrics.lr), ("images_per_s", metrics.images_per_s),
                                 ("ranks", Double(metrics.ranks)),
                                 ("train_size", metrics.train_size.map(Double.init) ?? .nan)] where value.isFinite {
                try events.scalar(tag, value, step: metrics.epoch)
            }
        }
    }

    /// Rank 0's TensorBoard events: a failed write (a full disk) costs the events, not the run.
    func recordEvents(_ run: FitRun, _ body: (TensorBoardWriter) throws -> Void) {
        guard comm.rank == 0, let events else { return }
        do { try body(events) } catch {
            run.log("warning: cannot write TensorBoard events to \(events.path) (\(describe(error))); training goes on without them")
            self.events = nil
        }
    }

    /// The checkpoint hook, watched: rank 0 writes while the others wait for it in a barrier,
    /// so that its time is not charged to the next step.
    func checkpointing(_ reason: CheckpointReason, _ run: FitRun) throws {
        let started = Date()
        let mark = Timeline.mark(timeline)
        defer { timeline?.record("checkpoint", "checkpoint", since: mark) }
        try watchdog.watchIfAny("writing a checkpoint (rank 0) and waiting for it", expected: 4 * run.slowestCheckpoint + 30,
                                listening: true, quiet: 0) {
            try gatherCompressionState()
            try run.checkpoint(self, reason)
            if watchdog != nil { try comm.barrier() }
        }
        run.slowestCheckpoint = max(run.slowestCheckpoint, Date().timeIntervalSince(started))
    }

    /// Writes the timeline if it is still recording: a run shorter than its window writes it
    /// when it ends (not after an error: a rank that failed alone must not wait in the
    /// gathering collective). A file rank 0 cannot write (a full disk) costs the timeline, not
    /// the run.
    func finishTimeline(_ run: FitRun) throws {
        guard let timeline, timeline.recording else { return }
        var failure: Error?
        _ = try watchdog.watchIfAny("gathering the timeline", expected: 30, listening: true) {
            try timeline.finish(communicator: comm) { failure = $0 }
        }
        guard comm.rank == 0 else { return }
        if let failure {
            run.log("warning: the timeline of updates \(run.firstGlobalStep + 1)-\(globalStep) is lost (\(describe(failure)))")
        } else {
            run.log("timeline of updates \(run.firstGlobalStep + 1)-\(globalStep) written to \(timeline.path) (chrome://tracing or ui.perfetto.dev)")
        }
    }
}

extension Trainer {
    /// A rank far slower a sample than the other ranks' median (this ratio or more) is named
    /// after each epoch.
    public static let stragglerRatio = 1.5
    /// …and only when its extra compute over the epoch (beyond the median's) is at least this
    /// share of the epoch: a rank 3× slower on a step of microseconds holds nobody back.
    public static let stragglerEpochShare = 0.05

    /// Collective: every rank's compute time a sample this epoch, its samples, input wait and
    /// kernels; returns (on rank 0) a line for each rank whose time a sample is
    /// `stragglerRatio` × the median or more (and costs the epoch `stragglerEpochShare`), e.g. "straggler: rank 3 on lab4: 1.9× the median
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
                                      hosts: comm.hostNames, epochSeconds: epochSeconds, steps: stepsPerEpoch, globalBatch: config.globalBatch,
                                      balance: config.balance)
    }

    /// The straggler report from every rank's numbers (a pure function, for tests). With
    /// `balance` (`--balance auto` or weights) the shares already follow the ranks' speeds, and
    /// the line says so: the rank is slower a sample but no longer holds the others back as much.
    public static func stragglerLines(compute: [Double], samples: [Double], inputWait: [Double], isa: [KernelInstructionSet],
                                      hosts: [String], epochSeconds: Double, steps: Int, globalBatch: Int,
                                      balance: String? = nil) -> [String] {
        let setBy = balance.map { " (shares set by --balance \($0))" } ?? ""
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
            guard time.isFinite, median.isFinite, median > 0, time >= stragglerRatio * median,
                  (time - median) * samples[rank] >= stragglerEpochShare * epochSeconds else { return nil }
            let share = (samples[rank] / Double(max(steps, 1))).rounded()
            return String(format: "straggler: rank %d on %@: %.1f× the other ranks' median time a sample (%.2f ms against %.2f ms); %.0f samples a step of the global batch of %d%@; input wait %.1f%%; %@ kernels",
                          rank, rank < hosts.count ? hosts[rank] : "?", time / median, time * 1000, median * 1000, share, globalBatch, setBy,
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
