import CatdogEngine
@testable import CatdogRun
import CatdogSupport
@testable import CatdogTraining
import XCTest

/// A model whose weights and what is kept beside them do not fit a rank's part of the memory
/// is refused before anything is allocated (`simple` at 512 px in a 3 GiB control group, or at
/// 1024 px on two ranks of a 24 GiB machine, was killed by the OOM killer), so is a checkpoint
/// larger than the memory; and the memory a process may take is the least of MemAvailable and
/// its control group's limits.
final class ModelMemoryTests: XCTestCase {
    /// The estimate counts what the optimizers allocate: each kind's buffers of the weights'
    /// size, found in the optimizer object itself.
    func testTheEstimateCountsEachOptimizersBuffers() {
        let count = 1234
        for kind in OptimizerKind.allCases {
            let optimizer = kind.make(count: count)
            let buffers = Mirror(reflecting: optimizer).children.compactMap { $0.value as? FloatBuffer }.filter { $0.count == count }
            XCTAssertEqual(buffers.count, kind.weightSizedBuffers, "\(kind) allocates \(buffers.count) buffers of the weights' size")
        }
    }

    func testAModelBeyondThreeQuartersOfARanksPartIsRefused() throws {
        var config = TrainingConfig()
        config.model = "simple"
        config.imageSize = 1024
        config.optimizer = .adamw
        config.ema = 0.999
        let counts = try ModelZoo.builder("simple", imageSize: 1024).counts()
        XCTAssertGreaterThan(counts.parameters, 500_000_000, "simple's dense layer grows with the image")
        let bytes = Trainer.stateBytes(config, parameters: counts.parameters, state: counts.state, ranks: 2, rank: 0)
        XCTAssertGreaterThan(bytes, 12e9, "weights, gradients, the best epoch's, AdamW's two moments and the moving average: 6 copies")
        // At the edge: three quarters of the memory hold it, a byte less does not.
        let edge = Int((bytes / Trainer.stateMemoryShare).rounded(.up))
        func check(_ available: Int?, ranksOnMachine: Int = 1, group: String? = nil) throws {
            try Trainer.checkModelMemory(config, parameters: counts.parameters, state: counts.state, ranks: 2, rank: 0,
                                         ranksOnMachine: ranksOnMachine, available: available.map { AvailableMemory(bytes: $0, controlGroup: group) })
        }
        XCTAssertNoThrow(try check(edge))
        XCTAssertThrowsError(try check(edge - 4096)) { error in
            let said = "\(error)"
            XCTAssertTrue(said.contains("model simple at 1024x1024 has \(counts.parameters) parameters"), said)
            XCTAssertTrue(said.contains("more than three quarters of the"), said)
            XCTAssertTrue(said.contains("use a smaller --image-size or a model with global pooling"), said)
            XCTAssertFalse(said.contains("\n"), said)
        }
        // Two ranks on the machine share it: each gets half.
        XCTAssertThrowsError(try check(edge, ranksOnMachine: 2)) { error in
            XCTAssertTrue("\(error)".contains("this rank's part"), "\(error)")
            XCTAssertTrue("\(error)".contains("or fewer ranks on this machine"), "\(error)")
        }
        XCTAssertNoThrow(try check(2 * edge, ranksOnMachine: 2))
        XCTAssertNoThrow(try check(nil), "unknown memory refuses nothing")
        // The default model is far below any machine's memory.
        let small = try ModelZoo.builder(ModelZoo.defaultModel, imageSize: 1024).counts()
        XCTAssertNoThrow(try Trainer.checkModelMemory(TrainingConfig(), parameters: small.parameters, state: small.state, ranks: 2, rank: 0,
                                                      ranksOnMachine: 2, available: AvailableMemory(bytes: 1 << 30)))
    }

    /// A checkpoint is refused before its bytes are read when they (compressed and
    /// decompressed) exceed the memory available: a 579 MB checkpoint of `simple` at 256 px
    /// was killed by the OOM killer in a 1 GiB control group.
    func testACheckpointLargerThanTheAvailableMemoryIsRefusedBeforeItIsRead() {
        let gib = 1 << 30
        XCTAssertThrowsError(try LoadedCheckpoint.checkMemory(holding: 2 * gib + gib / 4, path: "runs/a/last.safetensors.zst", available: AvailableMemory(bytes: 2 * gib))) { error in
            let said = "\(error)"
            XCTAssertTrue(said.contains("runs/a/last.safetensors.zst"), said)
            XCTAssertTrue(said.contains("needs 2.2 GiB of memory to read (compressed and decompressed), more than the 2.0 GiB this machine has available: read it where more memory is free"), said)
            XCTAssertFalse(said.contains("\n"), said)
        }
        XCTAssertNoThrow(try LoadedCheckpoint.checkMemory(holding: 2 * gib, path: "a", available: AvailableMemory(bytes: 2 * gib)))
        XCTAssertNoThrow(try LoadedCheckpoint.checkMemory(holding: 2 * gib, path: "a", available: nil))
        // Then its network, weights and gradients, in what is left.
        XCTAssertThrowsError(try LoadedCheckpoint.checkMemory(building: "simple", imageSize: 1024, floats: 2 * 537_033_649, path: "a",
                                                              available: AvailableMemory(bytes: 4 * gib, controlGroup: "/slurm/job_9"))) { error in
            XCTAssertTrue("\(error)".contains("simple at 1024x1024 needs 4.0 GiB for its weights and their gradients, more than the 4.0 GiB left under the memory limit of control group /slurm/job_9 once the checkpoint is read"), "\(error)")
            XCTAssertTrue("\(error)".hasSuffix(", or raise that limit (a Slurm job's --mem, a container's memory limit)"), "\(error)")
        }
        XCTAssertNoThrow(try LoadedCheckpoint.checkMemory(building: "simple", imageSize: 1024, floats: 2 * 537_033_649, path: "a",
                                                          available: AvailableMemory(bytes: 5 * gib)))
    }

    /// cgroup files as a Slurm job (v2) or a container (v1) sees them.
    func testTheControlGroupsLimitBoundsTheAvailableMemory() {
        let gib = 1 << 30
        func headroom(_ files: [String: String]) -> Int? { MemoryStatus.cgroupHeadroom { files[$0] }?.bytes }
        // v2: the job's limit, less what it uses beyond the inactive file cache.
        let job = "/sys/fs/cgroup/system.slice/slurmstepd.scope/job_7"
        var v2 = ["/proc/self/cgroup": "0::/system.slice/slurmstepd.scope/job_7\n",
                  job + "/memory.max": "\(4 * gib)\n", job + "/memory.current": "\(gib)\n",
                  job + "/memory.stat": "anon 123\ninactive_file \(gib / 2)\nactive_file 9\n",
                  "/sys/fs/cgroup/system.slice/memory.max": "max\n", "/sys/fs/cgroup/system.slice/memory.current": "\(20 * gib)\n"]
        XCTAssertEqual(headroom(v2), 4 * gib - gib / 2)
        XCTAssertEqual(MemoryStatus.cgroupHeadroom { v2[$0] }?.group, "/system.slice/slurmstepd.scope/job_7")
        // An ancestor with less room left decides, and is the group named.
        v2["/sys/fs/cgroup/system.slice/slurmstepd.scope/memory.max"] = "\(3 * gib)"
        v2["/sys/fs/cgroup/system.slice/slurmstepd.scope/memory.current"] = "\(2 * gib)"
        XCTAssertEqual(headroom(v2), gib)
        XCTAssertEqual(MemoryStatus.cgroupHeadroom { v2[$0] }?.group, "/system.slice/slurmstepd.scope")
        // Using more than the limit (reclaimable cache aside): no room, not a negative figure.
        v2["/sys/fs/cgroup/system.slice/slurmstepd.scope/memory.current"] = "\(5 * gib)"
        XCTAssertEqual(headroom(v2), 0)
        // v1 in a hybrid layout, unlimited (this machine's kind): no limit.
        let v1 = "/sys/fs/cgroup/memory/process_api/3b01"
        var hybrid = ["/proc/self/cgroup": "9:name=systemd:/\n4:memory:/process_api/3b01\n0::/\n",
                      v1 + "/memory.limit_in_bytes": "9223372036854771712\n", v1 + "/memory.usage_in_bytes": "\(14 * gib)\n",
                      "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"]
        XCTAssertNil(headroom(hybrid))
        hybrid[v1 + "/memory.limit_in_bytes"] = "\(16 * gib)"
        hybrid[v1 + "/memory.stat"] = "cache 5\ntotal_inactive_file \(gib)\n"
        XCTAssertEqual(headroom(hybrid), 3 * gib)
        // Nothing readable, a group outside the namespace's view, a malformed table: no limit.
        XCTAssertNil(headroom([:]))
        XCTAssertNil(headroom(["/proc/self/cgroup": "0::/../../job\n", "/sys/fs/cgroup/memory.max": "\(gib)", "/sys/fs/cgroup/memory.current": "0"]))
        XCTAssertNil(headroom(["/proc/self/cgroup": "garbage\n::\n0:/x\n"]))
        XCTAssertNil(headroom(["/proc/self/cgroup": "0::/a\n", "/sys/fs/cgroup/a/memory.max": "-5", "/sys/fs/cgroup/a/memory.current": "0"]))
        // Figures at the edges of Int: no overflow.
        XCTAssertEqual(headroom(["/proc/self/cgroup": "0::/a\n", "/sys/fs/cgroup/a/memory.max": "\(gib)",
                                 "/sys/fs/cgroup/a/memory.current": "-5",
                                 "/sys/fs/cgroup/a/memory.stat": "inactive_file 9223372036854775807\n"]), gib)
        XCTAssertEqual(headroom(["/proc/self/cgroup": "0::/a\n", "/sys/fs/cgroup/a/memory.max": "\(gib)",
                                 "/sys/fs/cgroup/a/memory.current": "9223372036854775807",
                                 "/sys/fs/cgroup/a/memory.stat": "inactive_file -9223372036854775808\n"]), 0)
    }

    /// The figure a refusal cites says what set it: the machine's free memory, or a control
    /// group's limit, which the refusal names with the remedy of raising it.
    func testARefusalNamesTheControlGroupWhoseLimitSetTheFigure() throws {
        let gib = 1 << 30
        XCTAssertEqual(MemoryStatus.available(machine: 20 * gib, limited: (4 * gib, "/slurm/job_42")), AvailableMemory(bytes: 4 * gib, controlGroup: "/slurm/job_42"))
        XCTAssertEqual(MemoryStatus.available(machine: 3 * gib, limited: (4 * gib, "/slurm/job_42")), AvailableMemory(bytes: 3 * gib))
        XCTAssertEqual(MemoryStatus.available(machine: 4 * gib, limited: (4 * gib, "/slurm/job_42")), AvailableMemory(bytes: 4 * gib))
        XCTAssertEqual(MemoryStatus.available(machine: nil, limited: (gib, "/a")), AvailableMemory(bytes: gib, controlGroup: "/a"))
        XCTAssertEqual(MemoryStatus.available(machine: gib, limited: nil), AvailableMemory(bytes: gib))
        XCTAssertNil(MemoryStatus.available(machine: nil, limited: nil))

        var config = TrainingConfig()
        config.model = "simple"
        config.imageSize = 1024
        let counts = try ModelZoo.builder("simple", imageSize: 1024).counts()
        for (group, source, remedy) in [("/slurm/uid_0/job_42", "of the 4.0 GiB left under the memory limit of control group /slurm/uid_0/job_42",
                                         ", or raise that limit (a Slurm job's --mem, a container's memory limit)"),
                                        (nil, "of the 4.0 GiB this machine has available", nil)] {
            let available = AvailableMemory(bytes: 4 * gib, controlGroup: group)
            XCTAssertThrowsError(try Trainer.checkModelMemory(config, parameters: counts.parameters, state: counts.state, ranks: 1, rank: 0,
                                                              ranksOnMachine: 1, available: available)) { error in
                let said = "\(error)"
                XCTAssertTrue(said.contains("more than three quarters \(source)"), said)
                XCTAssertEqual(said.contains("raise that limit"), remedy != nil, said)
                if let remedy { XCTAssertTrue(said.hasSuffix(remedy), said) }
            }
            XCTAssertThrowsError(try Trainer.checkBatchMemory(samples: 65_536, shape: FeatureShape(height: 256, width: 256, channels: 3),
                                                              globalBatch: 65_536, ranksOnMachine: 2, available: available)) { error in
                let said = "\(error)"
                XCTAssertTrue(said.contains("a quarter of this rank's part (2.0 GiB, 1/2) \(source)"), said)
                XCTAssertEqual(said.contains("raise that limit"), remedy != nil, said)
            }
        }
    }
}
