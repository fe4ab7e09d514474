import CatdogDistributed
import CatdogEngine
import CatdogTraining
import XCTest

/// `bench`'s breakdown of a step: the convolutions' time by phase (products, Winograd
/// transforms, im2col) and by pass (forward, dX, dW) are the same time counted two ways, so
/// their sums agree; each pass of resnet (Winograd, im2col and the direct first layer) is
/// measured; and the convolutions fit inside the layers' time; the progress counts every step.
/// One rank, 4 images, 2 steps.
final class BenchPhasesTests: XCTestCase {
    func testConvolutionTimeByPassAddsUpToTheTimeByPhase() throws {
        var reported: [String] = []
        let result = try Benchmark.run(model: "resnet", imageSize: 32, globalBatch: 4, steps: 2, warmupSteps: 1, overlap: true,
                                       bucketMiB: 4, communicator: LocalCommunicator()) { reported.append("\($0)/\($1)") }
        XCTAssertEqual(reported, ["1/3", "2/3", "3/3"], "bench's progress (its ETA) counts each warm-up and timed step once, out of all of them")
        let p = try XCTUnwrap(result.phases)
        let forward = try XCTUnwrap(p.convolution_forward_ms), dx = try XCTUnwrap(p.convolution_input_gradient_ms)
        let dw = try XCTUnwrap(p.convolution_kernel_gradient_ms)
        let byPhase = p.products_ms + p.winograd_transforms_ms + p.im2col_ms
        XCTAssertEqual(forward + dx + dw, byPhase, accuracy: 1e-9 * byPhase, "by pass \(forward) + \(dx) + \(dw), by phase \(byPhase)")
        for (name, ms) in [("forward", forward), ("dX", dx), ("dW", dw)] { XCTAssertGreaterThan(ms, 0, "\(name) measured nothing") }
        XCTAssertGreaterThanOrEqual(p.other_layers_ms, 0, "the convolutions took more than all the layers: \(p)")
    }
}
