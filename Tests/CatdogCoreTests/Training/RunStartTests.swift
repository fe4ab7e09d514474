import CatdogDistributed
import CatdogEngine
import CatdogSupport
@testable import CatdogTraining
import Foundation
import XCTest

/// What a run folder records of the machines a run computed on (`machines.jsonl`).
final class RunStartTests: XCTestCase {
    /// /proc/cpuinfo's keys match whole ("model" is not "model name"), the first processor's
    /// values are taken, and numbers out of range or not numbers are left out.
    func testTheCPUsFamilyAndModelAreReadByTheirWholeKeys() throws {
        let text = """
        processor\t: 0
        vendor_id\t: AuthenticAMD
        cpu family\t: 25
        model\t\t: 17
        model name\t: AMD EPYC
        flags\t\t: fpu avx2 fma avx512f avx512_bf16 unknownflag
        processor\t: 1
        cpu family\t: 26
        model\t\t: 2
        model name\t: Other
        """
        let m = MachineDescription.parse(cpuinfo: text, cores: 2)
        XCTAssertEqual(m.cpu, "AMD EPYC")
        XCTAssertEqual(m.cpuFamily, 25)
        XCTAssertEqual(m.cpuModel, 17)
        XCTAssertEqual(m.vectorFlags, ["fma", "avx2", "avx512f", "avx512_bf16"])
        XCTAssertEqual(m.summary, "AMD EPYC (CPU family 25, model 17), 2 cores, fma avx2 avx512f avx512_bf16")

        let odd = MachineDescription.parse(cpuinfo: "model name: X\ncpu family: -3\nmodel: 99999999999999999999\n", cores: 1)
        XCTAssertNil(odd.cpuFamily)
        XCTAssertNil(odd.cpuModel)
        XCTAssertEqual(odd.summary, "X, 1 cores, no vector flags read")
        XCTAssertEqual(MachineDescription.parse(cpuinfo: "", cores: 1).cpu, "unknown")

        // JSON carries the label beside the fields, and decoding passes over it.
        for machine in [m, odd] {
            let data = try JSONEncoder().encode(machine)
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            XCTAssertEqual(object["label"] as? String, machine.label)
            XCTAssertEqual(try JSONDecoder().decode(MachineDescription.self, from: data), machine)
        }
        XCTAssertEqual(m.label, "AMD EPYC (CPU family 25, model 17)")
        XCTAssertEqual(odd.label, "X")
    }

    /// `bench --machine` prints this machine's line (and the kernels' cap) without benchmarking;
    /// with --json, one object whose label is the one the figures carry.
    func testBenchMachinePrintsWhatFiguresAreMeasuredOn() throws {
        let here = MachineDescription.current()
        let line = try CLI.run(["bench", "--machine"], environment: ["CATDOG_KERNELS": "avx2", "CATDOG_HUGE_PAGES": "0"])
        XCTAssertEqual(line.status, 0, line.output)
        XCTAssertEqual(line.stdout.split(separator: "\n").count, 1, line.stdout)
        XCTAssertTrue(line.stdout.hasPrefix("machine: \(here.summary); OPENBLAS_CORETYPE "), line.stdout)
        XCTAssertTrue(line.stdout.contains("OpenBLAS core \(blasCoreName); own kernels avx2 (capped by CATDOG_KERNELS=avx2); huge pages off (CATDOG_HUGE_PAGES=0)\n"),
                      line.stdout)
        let json = try CLI.run(["bench", "--machine", "--json"])
        XCTAssertEqual(json.status, 0, json.output)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], json.stdout)
        XCTAssertEqual((object["machine"] as? [String: Any])?["label"] as? String, here.label)
        XCTAssertEqual(object["blas_core"] as? String, blasCoreName)
        XCTAssertNotNil((object["kernels"] as? String).flatMap(KernelInstructionSet.init(rawValue:)), json.stdout)
        XCTAssertEqual(object["huge_pages"] as? String, HugePages.mode, json.stdout)
        // Any other value of the switch is refused in one line, before any command runs.
        let refused = try CLI.run(["bench", "--machine"], environment: ["CATDOG_HUGE_PAGES": "no"])
        XCTAssertEqual(refused.status, 1, refused.output)
        XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("CATDOG_HUGE_PAGES=no in the environment is neither 0"), refused.stderr)
        for accepted in ["1", ""] {
            let run = try CLI.run(["bench", "--machine"], environment: ["CATDOG_HUGE_PAGES": accepted])
            XCTAssertEqual(run.status, 0, run.output)
            XCTAssertTrue(run.stdout.hasSuffix("; huge pages \(HugePages.mode)\n"), "CATDOG_HUGE_PAGES='\(accepted)': \(run.stdout)")
        }

        // A benchmark's text report names its machine with the same line.
        let decode = try CLI.run(["bench", "--decode", try sharedSubset(self, perClass: 2)],
                                 environment: ["CATDOG_KERNELS": "avx2", "CATDOG_HUGE_PAGES": "0"])
        XCTAssertEqual(decode.status, 0, decode.output)
        let machineText = line.stdout.trimmingCharacters(in: .whitespacesAndNewlines).dropFirst("machine: ".count)
        XCTAssertTrue(decode.stdout.contains("  on \(machineText)\n"), "bench --decode: \(decode.stdout)\nbench --machine: \(line.stdout)")
    }

    /// Strings of any lengths, an empty one included, reach every rank in rank order.
    func testAllGatherOfStrings() throws {
        let results = try ThreadCommunicator.run(ranks: 3) { comm in
            try comm.allGather(string: comm.rank == 1 ? "" : String(repeating: "é\(comm.rank)", count: 10 * comm.rank + 1))
        }
        let expected = ["é0", "", String(repeating: "é2", count: 21)]
        for (rank, gathered) in results.enumerated() { XCTAssertEqual(gathered, expected, "rank \(rank)") }
    }

    /// Ranks group by what they compute on, not by host: two hosts of one kind are one group
    /// listing both, and a rank of that kind held to AVX2 kernels (the `isa` pair of
    /// benchmarks/unequal-lab) is a group of its own, in the order of first ranks.
    func testRanksGroupByWhatTheyComputeOn() {
        let cpu = MachineDescription.parse(cpuinfo: "model name: C\ncpu family: 25\nmodel: 17\nflags: avx2 avx512f\n", cores: 8)
        func rank(_ r: Int, _ host: String, _ kernels: String) -> RunStart.Ranks {
            RunStart.Ranks(hosts: [host], ranks: [r], machine: cpu, blasCore: "Cooperlake", kernels: kernels)
        }
        let groups = RunStart.grouped([rank(0, "a", "avx512f"), rank(1, "a", "avx2"), rank(2, "b", "avx512f"), rank(3, "a", "avx512f")])
        XCTAssertEqual(groups.map(\.ranks), [[0, 2, 3], [1]])
        XCTAssertEqual(groups.map(\.hosts), [["a", "b"], ["a"]])
        XCTAssertEqual(groups.map(\.kernels), ["avx512f", "avx2"])
    }

    /// Every rank takes part and rank 0 appends one line a start: ranks of one kind of machine
    /// in one group (each host named once), the epoch and update given, the precision, and
    /// BatchNorm's samples when given.
    func testEachStartAppendsWhatTheRanksComputeOn() throws {
        let folder = try temporaryFolder(self)
        for (epoch, precision) in [(0, Precision.bf16), (4, Precision.fp32)] {
            _ = try ThreadCommunicator.run(ranks: 3) { comm in
                let run = try RunFolder.claim(folder, keep: 3, resuming: epoch > 0, overwrite: false, slurmJob: nil,
                                              communicator: comm, log: { _ in })
                try run.recordStart(epoch: epoch, step: epoch * 10, precision: precision,
                                    batchNorm: epoch == 0 ? .init(group: 4, atMost: 4) : nil, communicator: comm, log: { _ in })
                withExtendedLifetime(run) {}
            }
        }
        let lines = try String(contentsOfFile: folder + "/machines.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 2, "\(lines)")
        let starts = try lines.map { try JSONDecoder().decode(RunStart.self, from: Data($0.utf8)) }
        XCTAssertEqual(starts.map(\.epoch), [0, 4])
        XCTAssertEqual(starts.map(\.step), [0, 40])
        XCTAssertEqual(starts.map(\.precision), ["bf16", "fp32"])
        XCTAssertEqual(starts.map(\.batchNorm), [.init(group: 4, atMost: 4), nil])
        XCTAssertFalse(lines[1].contains("batchNorm"), String(lines[1]))
        // A line of a build before BatchNorm's samples were recorded still reads.
        var old = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        old["batchNorm"] = nil
        let oldStart = try JSONDecoder().decode(RunStart.self, from: try JSONSerialization.data(withJSONObject: old))
        XCTAssertNil(oldStart.batchNorm)
        XCTAssertEqual(oldStart.precision, "bf16")
        for start in starts {
            XCTAssertEqual(start.ranks, 3)
            XCTAssertEqual(start.machines.count, 1, "\(start)")
            XCTAssertEqual(start.machines[0].ranks, [0, 1, 2])
            XCTAssertEqual(start.machines[0].hosts, ["thread-host"])
            XCTAssertEqual(start.machines[0].machine, MachineDescription.current())
            XCTAssertEqual(start.machines[0].kernels, KernelInstructionSet.active.rawValue)
            XCTAssertEqual(start.machines[0].hugePages, HugePages.mode)
            XCTAssertNotNil(ISO8601DateFormatter().date(from: start.time), start.time)
        }
    }
}
