import CatdogCheckpoint
import CatdogDistributed
import CatdogEngine
import CatdogRun
import CatdogSupport
import Foundation

/// A training run's checkpoint folder as `train` uses it: claimed by rank 0 before any work,
/// and, on a resume, the checkpoint the run continues from.
public struct RunFolder {
    public let store: CheckpointStore
    public var path: String { store.directory }
    /// Rank 0's lock on the folder (nil on the other ranks); held as long as this value lives.
    public let lock: CheckpointStore.Lock?

    public var metricsPath: String { (path as NSString).appendingPathComponent("metrics.jsonl") }
    /// One line a start of the run (fresh or resumed): what it ran on (`RunStart`).
    public var startsPath: String { (path as NSString).appendingPathComponent("machines.jsonl") }

    /// Rank 0 makes sure the folder is usable before any work: it exists and is writable, no
    /// other run holds it (a kernel lock on `.lock`; a requeued Slurm job takes over its own
    /// earlier start's: `slurmJob` is the job's id, SLURM_JOB_ID, when under Slurm), `metrics.jsonl`
    /// is a regular file if there, and it does not hold a run unless this one resumes it
    /// (`resuming`) or `overwrite` says to start afresh, which removes the old run's checkpoints,
    /// metrics and event files. The other ranks return at once.
    public static func claim(_ path: String, keep: Int, resuming: Bool, overwrite: Bool, slurmJob: String?,
                             communicator comm: Communicator, log: (String) -> Void) throws -> RunFolder {
        let store = CheckpointStore(directory: path, keep: keep)
        guard comm.rank == 0 else { return RunFolder(store: store, lock: nil) }
        var isFolder: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), !isFolder.boolValue {
            throw CheckpointError(path: path, problem: "is a file, not a folder: pass a folder to --checkpoint-dir")
        }
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw CheckpointError(path: path, problem: "cannot create the folder (\(describe(error)))")
        }
        // A Slurm job that was requeued finds its own earlier start's lock, and takes it over.
        // A restart right after a crash can find the dead job's last rank still being torn down.
        let lock = try CheckpointStore.Lock.acquire(in: path, host: comm.hostName, job: slurmJob, wait: 10, waiting: log)
        if lock.tookOverFromJob { log("took over \(lock.path) from an earlier start of Slurm job \(slurmJob ?? "?") (requeued)") }
        let folder = RunFolder(store: store, lock: lock)
        // metrics.jsonl is appended to: a planted link (the folder may be shared) would make the
        // run write into the file it points to. Refused now, before any work.
        for appended in [folder.metricsPath, folder.startsPath] {
            var info = stat()
            if lstat(appended, &info) == 0, info.st_mode & S_IFMT != S_IFREG {
                throw CheckpointError(path: appended, problem: "is not a regular file (a symbolic link, a FIFO or a device): remove it")
            }
        }
        let stale = store.removeStaleTemporaries()
        if stale > 0 { log("removed \(stale) temporary file(s) left by an interrupted checkpoint write") }
        if !resuming, store.holdsARun {
            guard overwrite else {
                throw CheckpointError(path: path, problem: """
                    already holds a run (checkpoints or metrics.jsonl). Continue it with --resume auto, \
                    start afresh in it with --overwrite, or pass a new --checkpoint-dir
                    """)
            }
            let events = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
                .filter { $0.hasPrefix("events.out.tfevents.") }.map { path + "/" + $0 }
            for file in store.numbered() + [store.lastPath, store.bestPath, folder.metricsPath, folder.startsPath, path + "/skipped-files.log"] + events {
                try? FileManager.default.removeItem(atPath: file)
            }
            log("--overwrite: removed the previous run's checkpoints and metrics from \(path)")
        }
        return folder
    }

    /// Collective: every rank says what it computes on, and rank 0 appends the run's start to
    /// `machines.jsonl` (`RunStart`), so that a run's figures can be told apart by machine
    /// (`benchmarks/recipe-table` groups and labels runs by it). A file that cannot be written
    /// costs a warning, not the run.
    public func recordStart(epoch: Int, step: Int, precision: Precision, batchNorm: RunStart.BatchNormSamples? = nil,
                            communicator comm: Communicator, log: (String) -> Void) throws {
        let mine = RunStart.Ranks(hosts: [comm.hostName], ranks: [comm.rank], machine: .current(), blasCore: blasCoreName,
                                  kernels: KernelInstructionSet.active.rawValue, hugePages: HugePages.mode)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let all = try comm.allGather(string: String(decoding: try encoder.encode(mine), as: UTF8.self))
        guard comm.rank == 0 else { return }
        let ranks = all.map { try? JSONDecoder().decode(RunStart.Ranks.self, from: Data($0.utf8)) }
        let start = RunStart(time: ISO8601DateFormatter().string(from: Date()), epoch: epoch, step: step, ranks: comm.size,
                             precision: precision.rawValue, machines: RunStart.grouped(ranks.compactMap { $0 }), batchNorm: batchNorm)
        do {
            try appendLine(String(decoding: try encoder.encode(start), as: UTF8.self), to: startsPath)
        } catch {
            log("warning: cannot record the machines of this run in \(startsPath) (\(error)); training goes on")
        }
    }

    /// Where a resumed run continues: the checkpoint's metadata on every rank, its tensors on
    /// rank 0 only (`Trainer.restore` sends them on from there).
    public struct ResumePoint {
        public var metadata: CheckpointMetadata
        public var path: String
        public var checkpoint: LoadedCheckpoint?
    }

    /// Rank 0 finds and verifies the checkpoint to resume from (`resume`: "auto" for the
    /// newest valid one here, else a file), then sends its metadata to every rank (lab
    /// machines need not share a file system; the weights follow once the trainer exists, so no
    /// other rank ever holds a copy of the file). nil = start fresh.
    public func resumePoint(_ resume: String?, communicator comm: Communicator, log: (String) -> Void) throws -> ResumePoint? {
        guard let resume else { return nil }
        var found: LoadedCheckpoint?
        var json = ""
        if comm.rank == 0 {
            if resume == "auto" {
                found = try store.newestValid { log("skipping \($0)") }
                if found == nil { log("no checkpoint in \(path) yet: starting fresh") }
            } else {
                found = try LoadedCheckpoint(path: resume)
            }
            if let found { json = String(decoding: try JSONEncoder().encode(found.metadata), as: UTF8.self) }
        }
        json = try comm.broadcast(json)
        let path = try comm.broadcast(found?.path ?? "")
        guard !json.isEmpty else { return nil }
        let metadata = try found?.metadata ?? JSONDecoder().decode(CheckpointMetadata.self, from: Data(json.utf8))
        return ResumePoint(metadata: metadata, path: path, checkpoint: found)
    }
}

extension Trainer {
    /// The activation budget every rank agrees on: the machine with the least memory available
    /// per rank sets it (collective). And this machine's available memory, read before the
    /// collective, so before any rank allocates for the run: for `Trainer`'s memory checks,
    /// which a rank that read it after another of its machine had built would make on less.
    public static func agreedMemory(communicator comm: Communicator) throws -> (activationBudget: Int, available: AvailableMemory?) {
        let available = MemoryStatus.available()
        var perRank = [-Double((available?.bytes ?? 0) / comm.ranksOnMachine)]
        try comm.allReduceMax(&perRank)
        return (activationBudget(availableBytes: Int(-perRank[0]), ranksOnMachine: 1), available)
    }
}

/// A line of a run folder's `machines.jsonl`: when the run started or resumed, from which
/// epoch and update, on how many ranks, in which precision, and on what: the ranks grouped by
/// what they compute on (host, CPU, OpenBLAS's core, our kernels' instruction set, huge pages).
public struct RunStart: Codable, Equatable {
    public var time: String
    public var epoch: Int
    public var step: Int
    public var ranks: Int
    public var precision: String
    public var machines: [Ranks]
    /// How many samples BatchNorm normalized together on a rank (what a lab of other ranks
    /// would compute depends on it: `benchmarks/lab-scaling --runs` reads it). nil for transfer
    /// learning, and in the files of builds before it was recorded.
    public var batchNorm: BatchNormSamples?

    public struct BatchNormSamples: Codable, Equatable {
        /// Groups of exactly this many (--ghost-batch, or a balanced split's groups); nil: none.
        public var group: Int?
        /// At most this many: the group, else a rank's micro-batch (its slice when smaller).
        public var atMost: Int

        public init(group: Int?, atMost: Int) {
            self.group = group
            self.atMost = atMost
        }
    }

    /// Ranks that compute on the same kind of machine; `hosts` and `ranks` list them.
    public struct Ranks: Codable, Equatable {
        public var hosts: [String]
        public var ranks: [Int]
        public var machine: MachineDescription
        public var blasCore: String
        public var kernels: String
        /// `HugePages.mode` (nil in the files of builds before it was recorded).
        public var hugePages: String?

        var kind: Ranks { var k = self; k.hosts = []; k.ranks = []; return k }
    }

    /// Ranks of one kind merged, in the order of their first rank; hosts listed once each.
    static func grouped(_ each: [Ranks]) -> [Ranks] {
        var groups: [Ranks] = []
        for r in each {
            if let i = groups.firstIndex(where: { $0.kind == r.kind }) {
                groups[i].ranks += r.ranks
                for host in r.hosts where !groups[i].hosts.contains(host) { groups[i].hosts.append(host) }
            } else {
                groups.append(r)
            }
        }
        return groups
    }
}
