import CatdogCheckpoint
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

extension Trainer {
    /// The trainer's complete state as an uncompressed safetensors file.
    public func checkpointBytes(finished: Bool) throws -> [UInt8] {
        try withCheckpointParts(finished: finished) { header, parts in
            var out = header
            for part in parts { out += part }
            return out
        }
    }

    /// The same file as a header and the trainer's own buffers, for `CheckpointStore.write(parts:)`:
    /// writing a checkpoint then needs no copy of the weights and optimizer state. With a moving
    /// average, `model/` and `state/` hold it (what evaluate, predict and export read) and
    /// `live/parameters` and `live/state` the weights training goes on from.
    @discardableResult
    public func withCheckpointParts<T>(finished: Bool, _ body: ([UInt8], [UnsafeRawBufferPointer]) throws -> T) throws -> T {
        var metadata = CheckpointMetadata(
            model: config.model, imageSize: config.imageSize, preprocessing: preprocessing, config: config,
            epoch: epoch, stepInEpoch: stepInEpoch, step: globalStep, globalBatch: config.globalBatch, ranks: comm.size,
            optimizer: optimizer.kind.rawValue, optimizerHyperparameters: optimizer.hyperparameters,
            optimizerIterations: optimizer.iterations, optimizerScalars: optimizer.scalarState, schedule: schedule,
            seed: config.seed, history: history,
            bestValidationLoss: bestValidationLoss.isFinite ? bestValidationLoss : nil,
            epochsWithoutImprovement: epochsWithoutImprovement, epochTotals: epochTotals,
            elapsedSeconds: elapsedBefore + Date().timeIntervalSince(processStart), finished: finished,
            parameterCount: network.parameterCount, created: ISO8601DateFormatter().string(from: Date()))
        if config.trainsAtOtherSizes, stepInEpoch > 0 { metadata.epochImageSize = trainingSize }
        if let onUnreadableCheckpoint, let problem = metadata.problem { try onUnreadableCheckpoint(problem) }
        var extra: [SafeTensors.Tensor] = []
        // While the body runs, the network holds the average and the EMA buffers the live weights.
        if config.emaDecay != nil {
            extra.append(.init(name: "live/parameters", shape: [emaParameters.count], values: UnsafeBufferPointer(emaParameters.buffer)))
            extra.append(.init(name: "live/state", shape: [emaState.count], values: UnsafeBufferPointer(emaState.buffer)))
        }
        for (name, buffer) in optimizer.slots {
            extra.append(.init(name: "optimizer/\(name)", shape: [buffer.count], values: UnsafeBufferPointer(buffer.buffer)))
        }
        if let powerSGD {
            extra.append(.init(name: "compression/q", shape: [powerSGD.q.count], values: UnsafeBufferPointer(powerSGD.q.buffer)))
            // Every rank's error feedback, or in a larger run their sum, when gathered for this
            // checkpoint (else a resume starts it at zero).
            if gatheredErrors.count == comm.size {
                for (r, e) in gatheredErrors.enumerated() {
                    extra.append(.init(name: "compression/error/\(r)", shape: [e.count], values: UnsafeBufferPointer(e.buffer)))
                }
            } else if let sum = gatheredErrorSum {
                extra.append(.init(name: Self.errorSumTensor, shape: [sum.count], values: UnsafeBufferPointer(sum.buffer)))
            }
        }
        if bestValidationLoss.isFinite {
            extra.append(.init(name: "best/parameters", shape: [bestParameters.count], values: UnsafeBufferPointer(bestParameters.buffer)))
            extra.append(.init(name: "best/state", shape: [bestState.count], values: UnsafeBufferPointer(bestState.buffer)))
        }
        return try withEvaluatedWeights {
            let (header, parts) = try metadata.encodeParts(network: network, extra: extra)
            return try withExtendedLifetime((network, optimizer, bestParameters, bestState, emaParameters, emaState, powerSGD, gatheredErrors, gatheredErrorSum)) {
                try header.withUnsafeBytes { try body(header, [$0] + parts) }
            }
        }
    }

    /// The checkpoint's tensor holding the sum of every rank's error feedback (runs of more
    /// than `RunLimits.checkpointedErrorFeedbackRanks` ranks).
    static let errorSumTensor = "compression/error-sum"

    /// Collective, before a checkpoint: rank 0 receives every rank's PowerSGD error feedback
    /// (one broadcast per rank; a checkpoint a few times an epoch can afford it). A run of more
    /// than `RunLimits.checkpointedErrorFeedbackRanks` ranks gathers their sum instead (one
    /// all-reduce of one gradient's size), which a resume on any number of ranks continues
    /// from, to float rounding: P, Q and the error feedback follow the ranks' sums alone.
    public func gatherCompressionState() throws {
        guard let powerSGD else { return }
        guard comm.size <= RunLimits.checkpointedErrorFeedbackRanks else {
            let sum = comm.rank == 0 ? (gatheredErrorSum ?? FloatBuffer(count: powerSGD.error.count)) : FloatBuffer(count: powerSGD.error.count)
            sum.copy(from: powerSGD.error)
            try comm.allReduceSum(sum.pointer, count: sum.count)
            if comm.rank == 0 { gatheredErrorSum = sum }
            return
        }
        if comm.rank == 0, gatheredErrors.count != comm.size {
            gatheredErrors = [powerSGD.error] + (1..<comm.size).map { _ in FloatBuffer(count: powerSGD.error.count) }
        }
        let scratch = comm.rank == 0 ? nil : FloatBuffer(count: powerSGD.error.count)
        for r in 1..<max(comm.size, 1) {
            let buffer = comm.rank == 0 ? gatheredErrors[r] : (comm.rank == r ? powerSGD.error : scratch!)
            try comm.broadcast(buffer, root: r)
        }
    }

    /// Restores PowerSGD's factors and, when the checkpoint was written by as many ranks, each
    /// rank's error feedback (bit-exact). Written by another number of ranks, or holding only
    /// the sum (a run of more ranks than `RunLimits.checkpointedErrorFeedbackRanks`), the sum
    /// of theirs goes on from rank 0 and the others start at zero: the factors and the error
    /// feedback follow the ranks' sums alone (`PowerSGDReduction`), so the run continues what
    /// it would have computed, to float rounding. Without them the error feedback starts at
    /// zero. PowerSGD between machines then gives each bucket's owner its machine's sum. Collective.
    func restoreCompressionState(metadata m: CheckpointMetadata, from checkpoint: LoadedCheckpoint?, log: (String) -> Void) throws {
        guard let powerSGD else { return }
        // 0: nothing usable, 1: the factors, 2: the factors and every rank's error feedback,
        // 3: the factors and the error feedback of another number of ranks.
        var found = 0.0
        var perRank = false
        if let checkpoint, m.config.powerSGDRank == powerSGD.rank,
           checkpoint.file.tensors["compression/q"]?.shape == [powerSGD.q.count] {
            found = 1
            if (1...RunLimits.checkpointedErrorFeedbackRanks).contains(m.ranks),
               (0..<m.ranks).allSatisfy({ checkpoint.file.tensors["compression/error/\($0)"]?.shape == [powerSGD.error.count] }) {
                found = m.ranks == comm.size ? 2 : 3
                perRank = true
            } else if checkpoint.file.tensors[Self.errorSumTensor]?.shape == [powerSGD.error.count] {
                found = 3
            }
        }
        try withUnsafeMutableBytes(of: &found) { try comm.broadcast($0.baseAddress!, bytes: 8, root: 0) }
        powerSGD.resetError()
        if found >= 1 {
            if let checkpoint { try checkpoint.file.read("compression/q", into: powerSGD.q.pointer, count: powerSGD.q.count) }
            try comm.broadcast(powerSGD.q)
        }
        if found == 2 {
            // One broadcast per rank: rank 0 reads rank r's error feedback, rank r keeps it.
            let scratch = FloatBuffer(count: powerSGD.error.count)
            for r in 0..<comm.size {
                let buffer = comm.rank == r ? powerSGD.error : scratch
                if comm.rank == 0, let checkpoint { try checkpoint.file.read("compression/error/\(r)", into: buffer.pointer, count: buffer.count) }
                if r > 0 { try comm.broadcast(buffer) }
            }
        } else if found == 3 {
            if comm.rank == 0, let checkpoint, !perRank {
                // Written as their sum (read back checked to be finite, as every tensor is).
                try checkpoint.file.read(Self.errorSumTensor, into: powerSGD.error.pointer, count: powerSGD.error.count)
            } else if comm.rank == 0, let checkpoint {
                let scratch = FloatBuffer(count: powerSGD.error.count)
                for r in 0..<m.ranks {
                    try checkpoint.file.read("compression/error/\(r)", into: scratch.pointer, count: scratch.count)
                    PowerSGDReduction.axpy(1, scratch.pointer, powerSGD.error.pointer, scratch.count)
                }
                if let bad = UnsafeBufferPointer(start: powerSGD.error.pointer, count: powerSGD.error.count).firstIndex(where: { !$0.isFinite }) {
                    throw CheckpointError(path: checkpoint.path, problem: """
                        holds PowerSGD error feedback of \(m.ranks) ranks whose sum is not a number at index \(bad) \
                        (each is, the sum is beyond float's range): the file is damaged; resume on \(m.ranks) ranks or from an earlier checkpoint
                        """)
                }
            }
            log("PowerSGD's error feedback: the sum of the \(m.ranks) ranks' that wrote the checkpoint goes on from rank 0 (this run has \(comm.size))")
        } else if m.step > 0 {
            let why = found == 0 ? "the checkpoint holds no PowerSGD state of rank \(powerSGD.rank)"
                : "the checkpoint holds none of the \(m.ranks) ranks' error feedback"
            log("PowerSGD's error feedback starts at zero: \(why)")
        }
        if found >= 2, powerSGD.betweenMachines, comm.machineSize > 1 {
            // Between machines each bucket's owner compresses it with its machine's error
            // feedback: the sum of what the machine's ranks were given (bit-exact when only the
            // owners wrote any, as such a run does).
            try comm.machineAllReduceSum(powerSGD.error.pointer, count: powerSGD.error.count)
            if comm.rank == 0, let checkpoint,
               let bad = UnsafeBufferPointer(start: powerSGD.error.pointer, count: powerSGD.error.count).firstIndex(where: { !$0.isFinite }) {
                throw CheckpointError(path: checkpoint.path, problem: """
                    holds PowerSGD error feedback whose sum over a machine's ranks is not a number at index \(bad) \
                    (each is, the sum is beyond float's range): the file is damaged; resume from an earlier checkpoint
                    """)
            }
            powerSGD.keepOwnedError()
        }
    }

    /// Continues from `checkpoint`: weights, BatchNorm state, optimizer moments, schedule,
    /// position in the data and metrics. The rank count may differ from the writer's.
    /// Collective: rank 0 passes the loaded `checkpoint` (its tensors), every rank its
    /// `metadata`; the weights, BatchNorm state and optimizer moments then go from rank 0 to
    /// the others, so only rank 0 ever holds the file.
    public func restore(metadata m: CheckpointMetadata, path: String, from checkpoint: LoadedCheckpoint?,
                        log: (String) -> Void = { _ in }) throws {
        guard m.model == config.model, m.imageSize == config.imageSize, m.parameterCount == network.parameterCount else {
            throw CheckpointError(path: path, problem: "holds model \(m.model) at \(m.imageSize)px, not \(config.model) at \(config.imageSize)px")
        }
        // At stepsPerEpoch: stopped after the epoch's last step, before the end of the epoch
        // (its evaluation and checkpoint), which the resumed run does first.
        guard m.stepInEpoch <= stepsPerEpoch, m.globalBatch == config.globalBatch else {
            throw CheckpointError(path: path, problem: """
                stands at step \(m.stepInEpoch) of an epoch with global batch \(m.globalBatch); this run has \
                \(stepsPerEpoch) steps per epoch at batch \(config.globalBatch): resume with the same data and --batch-size
                """)
        }
        if let checkpoint {
            try checkpoint.loadWeights(into: network, prefix: "model/", statePrefix: "state/")
            do {
                if config.emaDecay != nil {
                    emaParameters.copy(from: network.parameters)
                    emaState.copy(from: network.state)
                    try checkpoint.file.read("live/parameters", into: network.parameters.pointer, count: network.parameterCount)
                    try checkpoint.file.read("live/state", into: network.state.pointer, count: network.state.count)
                    if let bad = Network.firstNegative(in: network.state.pointer, slots: network.stateSlots) {
                        throw LoadedCheckpoint.negative(path: path, tensor: "live/state (\(bad.slot))", index: bad.index)
                    }
                }
                for (name, buffer) in optimizer.slots {
                    try checkpoint.file.read("optimizer/\(name)", into: buffer.pointer, count: buffer.count)
                    if optimizer.squaredSlots.contains(name), let bad = buffer.buffer.firstIndex(where: { $0 < 0 }) {
                        throw CheckpointError(path: path, problem: """
                            tensor optimizer/\(name) holds negative values (the first at index \(bad)), which a sum of \
                            squared gradients cannot be: the file is damaged or was edited
                            """)
                    }
                }
                if m.bestValidationLoss != nil {
                    try checkpoint.file.read("best/parameters", into: bestParameters.pointer, count: bestParameters.count)
                    try checkpoint.file.read("best/state", into: bestState.pointer, count: bestState.count)
                    if let bad = Network.firstNegative(in: bestState.pointer, slots: network.stateSlots) {
                        throw LoadedCheckpoint.negative(path: path, tensor: "best/state (\(bad.slot))", index: bad.index)
                    }
                }
            } catch let error as CheckpointError {
                throw error
            } catch {
                throw CheckpointError(path: path, problem: "\(error)")
            }
        }
        try comm.broadcast(network.parameters)
        try comm.broadcast(network.state)
        for buffer in [emaParameters, emaState] where buffer.count > 0 { try comm.broadcast(buffer) }
        for (_, buffer) in optimizer.slots { try comm.broadcast(buffer) }
        do { try restoreCompressionState(metadata: m, from: checkpoint, log: log) } catch let error as CheckpointError {
            throw error
        } catch {
            throw CheckpointError(path: path, problem: "\(error)")
        }
        optimizer.iterations = m.optimizerIterations
        optimizer.scalarState = m.optimizerScalars
        epoch = m.epoch
        stepInEpoch = m.stepInEpoch
        globalStep = m.step
        history = m.history
        bestValidationLoss = m.bestValidationLoss ?? .infinity
        epochsWithoutImprovement = m.epochsWithoutImprovement
        epochTotals = m.epochTotals
        elapsedBefore = m.elapsedSeconds
        resumedEpochSize = m.stepInEpoch > 0 ? m.epochImageSize : nil
        // The same schedule as the run that wrote it, unless --epochs changed the run's length
        // (then the decay stretches to the new total); a time budget keeps its own estimate.
        var restored = m.schedule
        if config.timeBudget == nil { restored.totalSteps = config.epochs * stepsPerEpoch }
        setSchedule(restored)
    }
}
