import CatdogData
import CatdogSupport
@testable import CatdogTraining
import Foundation
import XCTest

/// Temperature scaling of the transfer head (`TemperatureScaling`, `train --calibrate`).
final class CalibrationTests: XCTestCase {
    /// `count` images whose true logit is uniform in ±4, labelled by a coin of probability
    /// σ(true logit), and shown to the calibration as `overconfidence` × the true logit (and a
    /// mirror image's logit that differs by up to ±0.5, when `mirrored`).
    func synthetic(count: Int, overconfidence: Double, mirrored: Bool, seed: UInt64) -> TemperatureScaling {
        var random = Random(seed: seed)
        var logits: [Double] = [], mirror: [Double] = [], dogs: [Bool] = []
        for _ in 0..<count {
            let z = Double(random.uniform(-4, 4))
            dogs.append(Double(random.uniform()) < 1 / (1 + exp(-z)))
            logits.append(overconfidence * z)
            mirror.append(overconfidence * (z + Double(random.uniform(-0.5, 0.5))))
        }
        return TemperatureScaling(logits: logits, mirrored: mirrored ? mirror : nil, dogs: dogs)
    }

    /// Logits 2.5× too sure: the fitted T is 2.5 within 0.25 (20,000 images: the fit's
    /// spread is a few percent), the cross-fitted loss is lower than before, and so is the loss
    /// at T (by at least 0.02 nats: overconfidence this large costs that much).
    func testAnOverconfidentHeadGetsItsTemperatureBack() {
        for mirrored in [false, true] {
            let scaling = synthetic(count: 20_000, overconfidence: 2.5, mirrored: mirrored, seed: 7)
            let c = scaling.calibrate()
            XCTAssertEqual(c.temperature, 2.5, accuracy: 0.25, "mirrored: \(mirrored)")
            XCTAssertTrue(c.helps, "cross-fitted \(c.crossFitted) against \(c.before.loss)")
            XCTAssertLessThan(c.after.loss, c.before.loss - 0.02)
            XCTAssertLessThanOrEqual(c.crossFitted, c.before.loss)
        }
    }

    /// Logits that are already calibrated: T stays within 0.1 of 1, and the loss barely moves.
    func testACalibratedHeadKeepsATemperatureNearOne() {
        let c = synthetic(count: 20_000, overconfidence: 1, mirrored: false, seed: 8).calibrate()
        XCTAssertEqual(c.temperature, 1, accuracy: 0.1)
        XCTAssertEqual(c.after.loss, c.before.loss, accuracy: 0.002)
    }

    /// The golden-section search finds the grid's minimum: T within one grid step (1% in
    /// log T) of the best of 400 temperatures, at a loss no higher than the grid's best + 1e-9.
    /// And the losses are the definitions: the mean cross-entropy of σ(z/T), or with mirrored
    /// logits Kaggle's logloss of the mean of both probabilities.
    func testTheSearchFindsTheMinimumOfTheDefinedLoss() {
        let scaling = synthetic(count: 3_000, overconfidence: 0.6, mirrored: true, seed: 9)
        let all = Array(scaling.logits.indices)
        let (low, high) = TemperatureScaling.range
        let grid = (0...400).map { exp(low + (high - low) * Double($0) / 400) }
        let best = grid.min { scaling.loss(temperature: $0, indices: all) < scaling.loss(temperature: $1, indices: all) }!
        let fitted = scaling.fit(indices: all)
        XCTAssertEqual(log(fitted), log(best), accuracy: (high - low) / 400)
        XCTAssertLessThanOrEqual(scaling.loss(temperature: fitted, indices: all), scaling.loss(temperature: best, indices: all) + 1e-9)
        let t = 1.7
        var expected = 0.0
        for i in all {
            let p = (1 / (1 + exp(-scaling.logits[i] / t)) + 1 / (1 + exp(-scaling.mirrored![i] / t))) / 2
            expected -= scaling.dogs[i] ? log(p) : log(1 - p)
        }
        XCTAssertEqual(scaling.loss(temperature: t, indices: all), expected / Double(all.count), accuracy: 1e-12)
        let plain = TemperatureScaling(logits: scaling.logits, mirrored: nil, dogs: scaling.dogs)
        let crossEntropy = all.reduce(0.0) { sum, i in
            let p = 1 / (1 + exp(-scaling.logits[i] / t))
            return sum - (scaling.dogs[i] ? log(p) : log(1 - p))
        } / Double(all.count)
        XCTAssertEqual(plain.loss(temperature: t, indices: all), crossEntropy, accuracy: 1e-9)
        // Without TTA a temperature never moves a prediction across 1/2.
        XCTAssertEqual(plain.accuracy(temperature: t, indices: all), plain.accuracy(temperature: 1, indices: all))
    }

    /// The head a transfer run installs: with 3× too large weights on 2,000 validation images,
    /// `FeatureExtraction.calibrate` divides the weights and bias by the fitted T (≈ 3: the
    /// weights come back to the truth within 10%), and the installed head's own validation loss is the one it reports (to 1e-6). With 150
    /// validation images it leaves the head alone.
    func testTheTransferHeadIsInstalledDividedByItsTemperature() throws {
        let width = 3, trainCount = 100
        for validationCount in [2_000, 150] {
            let truth: [Float] = [1.5, -1, 0.5]
            let x = FeatureExtraction.Extracted.synthetic(truth: truth, trainCount: trainCount, validationCount: validationCount,
                                                          seed: 11)
            var head = try FeatureExtraction.Head(weights: truth.map { $0 * 3 }, bias: 0, history: [], bestValidationLoss: 1)
            var lines: [String] = []
            FeatureExtraction.calibrate(&head, on: x, log: { lines.append($0) })
            if validationCount < TemperatureScaling.minimumImages {
                XCTAssertEqual(head.weights, truth.map { $0 * 3 })
                XCTAssertTrue(lines.joined().contains("calibration: not applied, 150 validation images"), "\(lines)")
                continue
            }
            // Weights 3× the truth divided by T ≈ 3: back to the truth within 10%.
            let ratio = Double(head.weights[0] / truth[0])
            XCTAssertEqual(ratio, 1, accuracy: 0.1, "\(lines)")
            for k in 0..<width { XCTAssertEqual(Double(head.weights[k] / truth[k]), ratio, accuracy: 1e-5) }
            let installed = FeatureExtraction.validationLogits(x, head)
            XCTAssertEqual(installed.loss(temperature: 1, indices: Array(installed.logits.indices)), head.bestValidationLoss, accuracy: 1e-6)
            XCTAssertTrue(lines.joined().hasPrefix("calibration: temperature"), "\(lines)")
        }
    }
}
