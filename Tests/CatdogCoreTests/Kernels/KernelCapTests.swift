import XCTest

/// CATDOG_KERNELS=avx2 or baseline in the environment: the process behaves as on a CPU without
/// the wider instruction sets (AVX-512, AVX512_BF16), so the test suite and the benchmarks can
/// stand in for an older machine (`CATDOG_KERNELS=avx2 OPENBLAS_CORETYPE=Haswell ./cluster/test`).
final class KernelCapTests: XCTestCase {
    let bench = ["bench", "--image-size", "32", "--batch-size", "4", "--steps", "1", "--warmup-steps", "0"]

    func testTheCapChoosesTheKernelsAndLeavesBF16Out() throws {
        for cap in ["avx2", "baseline"] {
            let result = try CLI.run(bench + ["--precision", "auto"], environment: ["CATDOG_KERNELS": cap])
            XCTAssertEqual(result.status, 0, result.output)
            XCTAssertTrue(result.stdout.contains("own kernels \(cap) (capped by CATDOG_KERNELS=\(cap))"), result.stdout)
            XCTAssertTrue(result.stdout.contains("fp32 products"), result.stdout)
        }
        let refused = try CLI.run(bench + ["--precision", "bf16"], environment: ["CATDOG_KERNELS": "avx2"])
        XCTAssertEqual(refused.status, 1, refused.output)
        XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("CATDOG_KERNELS=avx2 in the environment stands in for a CPU without AVX512_BF16"), refused.stderr)
        let wider = try CLI.run(bench + ["--kernels", "avx512f"], environment: ["CATDOG_KERNELS": "baseline"])
        XCTAssertEqual(wider.status, 1, wider.output)
        XCTAssertTrue(wider.stderr.contains("CATDOG_KERNELS=baseline in the environment leaves this process no avx512f kernels"), wider.stderr)
    }

    func testANameThatIsNoInstructionSetIsRefused() throws {
        let result = try CLI.run(bench, environment: ["CATDOG_KERNELS": "avx1024"])
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("CATDOG_KERNELS=avx1024 in the environment is not an instruction set"), result.stderr)
        XCTAssertFalse(result.output.contains("Fatal"), result.output)
        // Empty is unset, and auto caps nothing: both run the best the CPU has.
        func kernels(_ value: String) throws -> String? {
            let run = try CLI.run(bench, environment: ["CATDOG_KERNELS": value])
            XCTAssertEqual(run.status, 0, run.output)
            return run.stdout.firstMatch(of: /own kernels (\w+)/).map { String($0.1) }
        }
        let best = try XCTUnwrap(try kernels("auto"))
        XCTAssertEqual(try kernels(""), best)
    }
}
