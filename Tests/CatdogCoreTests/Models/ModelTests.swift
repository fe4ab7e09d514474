import CatdogEngine
import CatdogSupport
import XCTest

final class ModelTests: XCTestCase {
    func testVGGHasKerasParameterCount() throws {
        XCTAssertEqual(try ModelZoo.build("vgg", imageSize: 64).parameterCount, 2_287_137)
    }

    /// The residual family's sizes against the formula of its layers: a stem conv 3×3 to the
    /// first width, each later stage entered by a stride-2 conv 3×3 (resnet-pool: a 2×2 max pool,
    /// no parameters, then a stride-1 conv 3×3), each block two conv 3×3,
    /// every conv followed by BatchNorm (2 parameters and 2 moving statistics a channel), then
    /// Dense(1). Two counts are spelled out: resnet-deep's from its run log (3,526,433).
    func testResidualVariantsHaveTheirFormulasParameterCounts() throws {
        func expected(_ widths: [Int], blocks: Int) -> (parameters: Int, state: Int) {
            var parameters = 27 * widths[0] + 2 * widths[0], batchNorms = [widths[0]]
            for (stage, width) in widths.enumerated() {
                if stage > 0 { parameters += 9 * widths[stage - 1] * width + 2 * width; batchNorms.append(width) }
                parameters += blocks * (2 * 9 * width * width + 4 * width)
                batchNorms += Array(repeating: width, count: 2 * blocks)
            }
            return (parameters + widths[3] + 1, 2 * batchNorms.reduce(0, +))
        }
        let family: [(String, [Int], Int)] = [("resnet", [32, 64, 128, 256], 1), ("resnet-narrow", [24, 48, 96, 192], 1),
                                              ("resnet-wide", [48, 96, 192, 384], 1), ("resnet-deep", [32, 64, 128, 256], 2),
                                              ("resnet-pool", [32, 64, 128, 256], 1)]
        for (name, widths, blocks) in family {
            let counts = try ModelZoo.builder(name, imageSize: 64).counts(), formula = expected(widths, blocks: blocks)
            XCTAssertEqual(counts.parameters, formula.parameters, name)
            XCTAssertEqual(counts.state, formula.state, name)
            XCTAssertEqual(try ModelZoo.builder(name, imageSize: 96).counts().parameters, counts.parameters, "\(name): size-independent")
        }
        XCTAssertEqual(try ModelZoo.builder("resnet-deep", imageSize: 64).counts().parameters, 3_526_433)
        XCTAssertEqual(try ModelZoo.builder("resnet", imageSize: 64).counts().parameters, 1_957_793)
    }

    /// `catdog-dist models` lists each model from its shapes alone (`outline`), without
    /// building it: the same parameters, forward FLOPs and layer lines as the built network.
    func testAnOutlineIsWhatTheBuiltNetworkHas() throws {
        for name in ModelZoo.names + ["efficientnet-lite0"] {
            for size in [32, 72] {
                let outline = try ModelZoo.builder(name, imageSize: size).outline()
                let network = try ModelZoo.build(name, imageSize: size)
                XCTAssertEqual(outline.parameters, network.parameterCount, "\(name) at \(size)")
                XCTAssertEqual(outline.forwardFLOPs, network.forwardFLOPs, "\(name) at \(size)")
                XCTAssertEqual(outline.layers, network.layerSummary, "\(name) at \(size)")
            }
        }
    }

    /// resnet-pool enters each later stage by a 2×2 max pool and a stride-1 conv, so that every
    /// conv but the stem's can take Winograd; its stages have resnet's shapes at even sizes.
    func testPoolVariantShrinksByPoolingWithResnetsStageShapes() throws {
        for size in [64, 128, 144] {
            let pooled = try ModelZoo.build("resnet-pool", imageSize: size), strided = try ModelZoo.build("resnet", imageSize: size)
            let convs = pooled.nodes.compactMap { $0.layer as? Conv2D }
            XCTAssertEqual(convs.count, 12)
            XCTAssertEqual(convs.filter { $0.strides == (2, 2) }.count, 1, "only the stem at stride 2")
            XCTAssertEqual(pooled.nodes.filter { $0.layer is MaxPool2D }.count, 3)
            func stageShapes(_ n: Network) -> [FeatureShape] { n.nodes.filter { $0.layer is Add }.map(\.shape) }
            XCTAssertEqual(stageShapes(pooled), stageShapes(strided), "at \(size) px")
            XCTAssertEqual(stageShapes(pooled).last?.height, size / 16)
        }
    }

    func testEveryModelBuildsAtOddSizesAndGivesFiniteLogits() throws {
        for name in ModelZoo.names {
            for size in [32, 47, 64] {
                let network = try ModelZoo.build(name, imageSize: size)
                XCTAssertEqual(network.outputShape, .vector(1), "\(name) at \(size)")
                network.initialize(seed: 1)
                network.reserve(maxBatch: 2)
                var random = Random(seed: 3)
                for i in 0..<(2 * network.inputShape.count) { network.input[i] = random.uniform() }
                let logits = network.forward(batch: 2, context: PassContext(training: true))
                XCTAssertTrue(logits[0].isFinite && logits[1].isFinite, "\(name) at \(size)")
            }
        }
    }

    /// Inference with shared activation buffers gives every model's logits, and the kept
    /// nodes' activations, bit for bit as with training's buffers, in a fraction of the memory
    /// (EfficientNet-Lite2 at 296 px: at most a fifth; what the buffers cost is printed).
    func testInferenceBuffersGiveTheSameOutputsInLessMemory() throws {
        for name in ModelZoo.names {
            let training = try ModelZoo.build(name, imageSize: 64), inference = try ModelZoo.build(name, imageSize: 64)
            training.initialize(seed: 1)
            inference.parameters.pointer.update(from: training.parameters.pointer, count: training.parameterCount)
            inference.state.pointer.update(from: training.state.pointer, count: training.state.count)
            let keep = training.nodes.count / 2
            training.reserve(maxBatch: 3)
            inference.reserveForInference(maxBatch: 3, keep: [keep])
            var random = Random(seed: 3)
            for i in 0..<(3 * training.inputShape.count) { training.input[i] = random.uniform(-1, 1) }
            inference.input.update(from: training.input, count: 3 * training.inputShape.count)
            let context = PassContext(training: false)
            let expected = Array(UnsafeBufferPointer(start: training.forward(batch: 3, context: context), count: 3))
            XCTAssertEqual(Array(UnsafeBufferPointer(start: inference.forward(batch: 3, context: context), count: 3)), expected, name)
            let size = 3 * training.nodes[keep].shape.count
            XCTAssertEqual(Array(UnsafeBufferPointer(start: inference.activation(keep), count: size)),
                           Array(UnsafeBufferPointer(start: training.activation(keep), count: size)), "\(name): node \(keep)")
            XCTAssertLessThan(inference.inferenceBytesPerSample(keep: [keep]), training.activationBytesPerSample / 2, name)
        }
        let lite2 = try ModelZoo.build("efficientnet-lite2", imageSize: 296)
        let pool = lite2.nodes.firstIndex { $0.layer is GlobalAveragePool }!
        let (inference, training) = (lite2.inferenceBytesPerSample(keep: [pool]), lite2.activationBytesPerSample)
        print("efficientnet-lite2 at 296 px: \(inference >> 20) MiB a sample for inference, \(training >> 20) MiB for training")
        XCTAssertLessThan(inference, training / 5)
    }

    /// What `reserve` and `reserveForInference` take is what the memory plans count: the
    /// resident set grows by at most 10% + 32 MiB over `activationBytesPerSample` and
    /// `inferenceBytesPerSample` times the batch (EfficientNet-Lite2 at 296 px, batch 8: 1.6 GiB
    /// for training, 160 MiB for inference). Inference takes no BatchNorm x̂: it used to, 63 MiB
    /// a sample beyond a plan of 20.
    func testReservationsTakeWhatTheMemoryPlansCount() throws {
        let batch = 8, slack = 32 << 20
        for training in [false, true] {
            let lite2 = try ModelZoo.build("efficientnet-lite2", imageSize: 296)
            let pool = lite2.nodes.firstIndex { $0.layer is GlobalAveragePool }!
            let planned = batch * (training ? lite2.activationBytesPerSample : lite2.inferenceBytesPerSample(keep: [pool]))
            let before = try XCTUnwrap(MemoryStatus.residentBytes())
            if training { lite2.reserve(maxBatch: batch) } else { lite2.reserveForInference(maxBatch: batch, keep: [pool]) }
            let grown = try XCTUnwrap(MemoryStatus.residentBytes()) - before
            print("efficientnet-lite2 at 296 px, batch \(batch), \(training ? "training" : "inference"): planned \(planned >> 20) MiB, resident set grew \(grown >> 20) MiB")
            XCTAssertLessThanOrEqual(grown, planned + planned / 10 + slack, training ? "training" : "inference")
        }
    }

    func testDefaultModelIsCheaperThanVGG() throws {
        let resnet = try ModelZoo.build(ModelZoo.defaultModel, imageSize: 64)
        let vgg = try ModelZoo.build("vgg", imageSize: 64)
        XCTAssertLessThan(resnet.forwardFLOPs, vgg.forwardFLOPs / 2 + vgg.forwardFLOPs / 10)
        XCTAssertEqual(Double(vgg.forwardFLOPs) / 1e9, 0.42, accuracy: 0.01)
    }

    func testUnknownModelIsAClearError() {
        XCTAssertThrowsError(try ModelZoo.build("alexnet", imageSize: 64)) { error in
            XCTAssertTrue("\(error)".contains("vgg"), "\(error)")
        }
    }

    func testTooSmallImageIsAClearError() {
        XCTAssertThrowsError(try ModelZoo.build("vgg", imageSize: 8)) { error in
            XCTAssertTrue("\(error)".contains("too small"), "\(error)")
        }
    }

    func testInitializationIsGlorotUniformAndSeeded() throws {
        let a = try ModelZoo.build("vgg", imageSize: 32), b = try ModelZoo.build("vgg", imageSize: 32)
        a.initialize(seed: 11); b.initialize(seed: 11)
        XCTAssertEqual(a.parameters.array, b.parameters.array)
        let slot = a.parameterSlots[2]  // second conv kernel: 3x3x32x32
        let limit = (6.0 / Double(9 * 32 + 9 * 32)).squareRoot()
        let values = a.parameters.array[slot.offset..<(slot.offset + slot.count)]
        XCTAssertLessThanOrEqual(values.map { abs(Double($0)) }.max()!, limit)
        let variance = values.map { Double($0 * $0) }.reduce(0, +) / Double(values.count)
        XCTAssertEqual(variance, limit * limit / 3, accuracy: 0.05 * limit * limit / 3)  // U(-l, l) has variance l²/3
        XCTAssertTrue(a.parameterSlots[1].name.hasSuffix("bias"))
        XCTAssertEqual(a.parameters[a.parameterSlots[1].offset], 0)
    }
}
