import CatdogCheckpoint
import CatdogData
import CatdogEngine
import CatdogInference
import CatdogRun
import CatdogSupport
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest

/// evaluate, predict, submit and plot on a model trained for the purpose (the simple net at
/// 32x32, one epoch: it need not be good, only real).
final class InferenceCommandTests: XCTestCase {
    nonisolated(unsafe) static var model = ""
    nonisolated(unsafe) static var runFolder = ""
    nonisolated(unsafe) static var images = ""

    override class func setUp() {
        super.setUp()
        let base = NSTemporaryDirectory() + "catdog-inference-" + UUID().uuidString
        images = base + "/images"
        runFolder = base + "/run"
        try? FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
        for i in 0..<30 {
            for animal in ["cat", "dog"] {
                try? FileManager.default.createSymbolicLink(atPath: "\(images)/\(animal).\(i).jpg",
                                                            withDestinationPath: "\(sharedData)/train/\(animal).\(i).jpg")
            }
        }
        let result = try? CLI.run(["train", "--data", images, "--checkpoint-dir", runFolder, "--model", "simple",
                                   "--image-size", "32", "--epochs", "2", "--batch-size", "16"])
        if result?.status == 0 { model = runFolder + "/best.safetensors.zst" }
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: (images as NSString).deletingLastPathComponent)
        super.tearDown()
    }

    override func setUpWithError() throws {
        guard !Self.model.isEmpty else { throw CLI.NotBuilt() }
    }

    func testEvaluateMatchesLoglossAndAccuracyComputedFromPredict() throws {
        let files = try DataFolder.labeledFiles(in: Self.images)
        let predicted = try CLI.run(["predict", "--checkpoint", Self.model, "--json"] + files.map(\.path))
        XCTAssertEqual(predicted.status, 0, predicted.output)
        var loss = 0.0, correct = 0
        for (line, file) in zip(predicted.stdout.split(separator: "\n"), files) {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            XCTAssertEqual(object["image"] as? String, file.path)
            let p = object["dog_probability"] as! Double
            let clipped = min(max(p, 1e-15), 1 - 1e-15)
            loss += file.label == 1 ? -log(clipped) : -log(1 - clipped)
            if (p >= 0.5) == (file.label == 1) { correct += 1 }
        }
        for ranks in [nil, 2] {
            let evaluated = try CLI.run(["evaluate", "--checkpoint", Self.model, "--data", Self.images, "--json"], ranks: ranks)
            XCTAssertEqual(evaluated.status, 0, evaluated.output)
            let json = try JSONSerialization.jsonObject(with: Data(evaluated.stdout.split(separator: "\n").last!.utf8)) as! [String: Any]
            XCTAssertEqual(json["count"] as? Int, 60)
            // One process scores in predict's batches; two ranks in batches of 30, and sgemm's
            // edge kernels round a row differently with the batch size (seen: 6e-8 in one
            // probability), so the means agree to 1e-6, not to the last bit.
            XCTAssertEqual(json["logloss"] as! Double, loss / 60, accuracy: 1e-6, "ranks \(ranks ?? 1)")
            XCTAssertEqual(json["accuracy"] as! Double, Double(correct) / 60, accuracy: 1e-12)
            let confusion = json["confusion"] as! [[Int]]
            XCTAssertEqual(confusion.flatMap { $0 }.reduce(0, +), 60)
            XCTAssertEqual(confusion[0][0] + confusion[1][1], correct)
        }
    }

    /// `--validation-split` scores exactly the images training held out (10% of 60, by class:
    /// 3 + 3), and with `--tta-flip` (what training's validation does by default) its logloss is
    /// the best epoch's val_loss that training recorded (1e-4).
    func testEvaluateOnTheValidationSplitReproducesTrainingsValidationLoss() throws {
        let evaluated = try CLI.run(["evaluate", "--checkpoint", Self.model, "--data", Self.images, "--validation-split", "--tta-flip", "--json"])
        XCTAssertEqual(evaluated.status, 0, evaluated.output)
        let json = try JSONSerialization.jsonObject(with: Data(evaluated.stdout.split(separator: "\n").last!.utf8)) as! [String: Any]
        XCTAssertEqual(json["count"] as? Int, 6)
        XCTAssertEqual((json["confusion"] as! [[Int]]).map { $0.reduce(0, +) }, [3, 3])
        let best = try XCTUnwrap(LoadedCheckpoint(path: Self.model).metadata.history.min { $0.val_loss < $1.val_loss })
        XCTAssertEqual(json["logloss"] as! Double, best.val_loss, accuracy: 1e-4)
        XCTAssertEqual(json["accuracy"] as! Double, best.val_acc, accuracy: 1e-9)
    }

    /// `--tta crops` and `shift` score each image as the mean of its 10 views' probabilities
    /// (1e-12 in one process: each view is scored in the same batches either way; 1e-6 from
    /// `predict`); the views differ (the crop
    /// moves within the stored square's margin of 4 pixels at 32x32); `--tta flip` is
    /// `--tta-flip`; an unknown or contradicting choice is refused before any work.
    func testTestTimeCropsAndShiftsAreTheMeanOfTheirViews() throws {
        let files = try DataFolder.labeledFiles(in: Self.images).prefix(8).map(\.path)
        let predictor = try Predictor(checkpoint: LoadedCheckpoint(path: Self.model))
        let margin = predictor.preprocessing.cropMargin
        XCTAssertEqual(margin, 4)
        for tta in [TestTimeAugmentation.crops, .shift] {
            let views = tta.views(margin: margin)
            XCTAssertEqual(views.count, 10)
            for view in views { if let crop = view.crop { XCTAssertTrue((0...margin).contains(crop.top) && (0...margin).contains(crop.left), "\(crop)") } }
            let each = try views.map { view in try predictor.dogProbabilities(files, views: [view]).map { try $0.get() } }
            let mean = try predictor.dogProbabilities(files, tta: tta).map { try $0.get() }
            var distinct = 0
            for i in files.indices {
                let expected = each.reduce(0) { $0 + $1[i] } / Double(views.count)
                XCTAssertEqual(mean[i], expected, accuracy: 1e-12, "\(tta) \(files[i])")
                if Set(each.map { $0[i] }).count > 1 { distinct += 1 }
            }
            XCTAssertEqual(distinct, files.count, "\(tta): every image's views should give different probabilities")
            // In fp32, as the predictor above (the command's default is train's precision).
            let cli = try CLI.run(["predict", "--checkpoint", Self.model, "--tta", tta.rawValue, "--json", "--precision", "fp32"] + files)
            XCTAssertEqual(cli.status, 0, cli.output)
            for (line, p) in zip(cli.stdout.split(separator: "\n"), mean) {
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                // Another process, other batches: sgemm rounds a row differently (seen: 5e-9).
                XCTAssertEqual(object["dog_probability"] as! Double, p, accuracy: 1e-6)
            }
        }
        let flip = try CLI.run(["predict", "--checkpoint", Self.model, "--tta", "flip", "--json"] + files)
        let flag = try CLI.run(["predict", "--checkpoint", Self.model, "--tta-flip", "--json"] + files)
        XCTAssertEqual(flip.status, 0, flip.output)
        XCTAssertEqual(flip.stdout, flag.stdout)
        for bad in [["--tta", "corners"], ["--tta-flip", "--tta", "crops"]] {
            let refused = try CLI.run(["evaluate", "--checkpoint", Self.model, "--data", Self.images] + bad)
            XCTAssertEqual(refused.status, 64, "evaluate \(bad): \(refused.output)")
            XCTAssertTrue(refused.stderr.contains("--tta"), refused.stderr)
            XCTAssertFalse(refused.stderr.contains("Fatal error"), refused.stderr)
        }
    }

    /// predict, evaluate and submit compute in the precision `train` would (`--precision auto`:
    /// bf16 for this model where the CPU and the kernels have it), and take the one named: fp32 and bf16 scores
    /// of the same images differ (bf16 operands keep 8 significant bits), by at most 0.05 of
    /// probability on this barely trained model.
    func testPredictComputesInThePrecisionNamedOrTrainsByDefault() throws {
        let files = try DataFolder.labeledFiles(in: Self.images).prefix(12).map(\.path)
        func probabilities(_ extra: [String]) throws -> [Double] {
            let result = try CLI.run(["predict", "--checkpoint", Self.model, "--json"] + extra + files)
            XCTAssertEqual(result.status, 0, result.output)
            return try result.stdout.split(separator: "\n").map {
                try XCTUnwrap((JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["dog_probability"] as? Double)
            }
        }
        let fp32 = try probabilities(["--precision", "fp32"])
        XCTAssertEqual(fp32.count, files.count)
        guard Precision.bf16.unavailableReason == nil else { throw XCTSkip("bf16 products cannot run here") }
        // Kernels without bf16 products make the default fp32 (they are selected before it is decided).
        XCTAssertEqual(try probabilities(["--kernels", "avx2"]), try probabilities(["--kernels", "avx2", "--precision", "fp32"]))
        let bf16 = try probabilities(["--precision", "bf16"])
        XCTAssertEqual(try probabilities([]), bf16, "the default is bf16 here, as train's")
        XCTAssertNotEqual(fp32, bf16, "--precision reaches predict's network")
        for (a, b) in zip(fp32, bf16) { XCTAssertEqual(a, b, accuracy: 0.05) }
    }

    func testPredictAnswersInTheStudysSentenceForAnyJPEG() throws {
        let original = sharedData + "/originals/dog.7.jpg"  // full size, not 200x200
        let result = try CLI.run(["predict", "--checkpoint", Self.model, original])
        XCTAssertEqual(result.status, 0, result.output)
        let line = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let match = try XCTUnwrap(line.wholeMatch(of: /I am (\d{2,3}\.\d{2})% sure this is a (Dog|Cat)/), line)
        XCTAssertGreaterThanOrEqual(Double(match.1)!, 50)
        XCTAssertLessThanOrEqual(Double(match.1)!, 100)
    }

    func testPredictReportsABrokenImageAndStillAnswersTheRest() throws {
        let folder = try temporaryFolder(self)
        let broken = folder + "/broken.jpg"
        try Data("not a picture".utf8).write(to: URL(fileURLWithPath: broken))
        let result = try CLI.run(["predict", "--checkpoint", Self.model, sharedData + "/train/cat.1.jpg", broken, sharedData + "/train/dog.1.jpg"])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("\(broken): cannot read it: not a JPEG"), result.stderr)
        XCTAssertEqual(result.stdout.split(separator: "\n").filter { $0.contains("sure this is a") }.count, 2, result.stdout)
        XCTAssertFalse(result.stderr.contains("Fatal"), result.stderr)
    }

    /// A folder stands for its JPEG files by name (not its subfolders, hidden files or other
    /// files), answered a batch at a time with the same answers as file by file; a broken
    /// file given twice is reported twice (it once crashed: its skips were matched by path).
    func testPredictTakesAFolderAndTheSameBrokenFileTwice() throws {
        let folder = try temporaryFolder(self)
        let photos = folder + "/photos"
        try FileManager.default.createDirectory(atPath: photos + "/inner", withIntermediateDirectories: true)
        for (name, source) in [("b.jpg", "cat.2"), ("a.JPEG", "dog.2"), ("c.jpg", "dog.3"), (".hidden.jpg", "cat.4"), ("inner/d.jpg", "cat.5")] {
            try FileManager.default.createSymbolicLink(atPath: "\(photos)/\(name)", withDestinationPath: "\(sharedData)/train/\(source).jpg")
        }
        try Data("notes".utf8).write(to: URL(fileURLWithPath: photos + "/notes.txt"))
        // Named as JPEGs, but a link to nothing and a pipe (which would block a plain read): each refused by name.
        try FileManager.default.createSymbolicLink(atPath: photos + "/e.jpg", withDestinationPath: folder + "/nothing-here")
        XCTAssertEqual(mkfifo(photos + "/f.jpg", 0o644), 0)
        let broken = folder + "/broken.jpg"
        try Data("not a picture".utf8).write(to: URL(fileURLWithPath: broken))

        let result = try CLI.run(["predict", "--checkpoint", Self.model, "--json", "--batch-size", "2", broken, photos, broken])
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertEqual(result.stderr.components(separatedBy: "\(broken): cannot read it: not a JPEG").count - 1, 2, result.stderr)
        XCTAssertTrue(result.stderr.contains("\(photos)/e.jpg: cannot read it: unreadable"), result.stderr)
        XCTAssertTrue(result.stderr.contains("\(photos)/f.jpg: cannot read it: unreadable: not a regular file"), result.stderr)
        XCTAssertFalse(result.stderr.contains("Fatal"), result.stderr)
        let answers = try result.stdout.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(answers.map { $0["image"] as? String }, ["a.JPEG", "b.jpg", "c.jpg"].map { "\(photos)/\($0)" }, result.stdout)
        for answer in answers {
            let path = answer["image"] as! String
            let alone = try CLI.run(["predict", "--checkpoint", Self.model, "--json", path])
            XCTAssertEqual(alone.status, 0, alone.output)
            let p = try JSONSerialization.jsonObject(with: Data(alone.stdout.utf8)) as! [String: Any]
            XCTAssertEqual(p["dog_probability"] as! Double, answer["dog_probability"] as! Double, accuracy: 1e-6, path)
        }

        try FileManager.default.createDirectory(atPath: folder + "/empty", withIntermediateDirectories: true)
        let empty = try CLI.run(["predict", "--checkpoint", Self.model, folder + "/empty"])
        XCTAssertEqual(empty.status, 1, empty.output)
        XCTAssertEqual(empty.stderr.trimmingCharacters(in: .whitespacesAndNewlines), "catdog-dist: no JPEG images (.jpg, .jpeg) in folder '\(folder)/empty'")
        // Beside other images, an empty folder is one error line, as an unreadable image is.
        let beside = try CLI.run(["predict", "--checkpoint", Self.model, folder + "/empty", photos + "/c.jpg"])
        XCTAssertEqual(beside.status, 1, beside.output)
        XCTAssertEqual(beside.stderr.trimmingCharacters(in: .whitespacesAndNewlines), "catdog-dist: no JPEG images (.jpg, .jpeg) in folder '\(folder)/empty'")
        XCTAssertEqual(beside.stdout.split(separator: "\n").filter { $0.hasPrefix("\(photos)/c.jpg: I am ") }.count, 1, beside.stdout)
    }

    /// What evaluate and submit show their progress from: the images done after each batch,
    /// counting the unreadable ones, up to all of them.
    func testScoringTellsItsProgressAfterEachBatch() throws {
        let predictor = try Predictor(checkpoint: LoadedCheckpoint(path: Self.model), batchSize: 7)
        let paths = try DataFolder.labeledFiles(in: Self.images).map(\.path).prefix(29) + ["/nonexistent.jpg"]
        var told: [Int] = []
        let results = predictor.dogProbabilities(Array(paths), progress: { told.append($0) })
        XCTAssertEqual(told, [7, 14, 21, 28, 30])
        XCTAssertEqual(results.filter { if case .failure = $0 { true } else { false } }.count, 1)
    }

    func testSubmitWritesKaggleFormatSortedByIdScoringBrokenImagesHalf() throws {
        let folder = try temporaryFolder(self)
        for id in 1...11 {
            try FileManager.default.createSymbolicLink(atPath: "\(folder)/\(id).jpg", withDestinationPath: "\(sharedData)/train/dog.\(100 + id).jpg")
        }
        try Data("broken".utf8).write(to: URL(fileURLWithPath: folder + "/12.jpg"))
        // Images whose names are no Kaggle id are left out, and the note says which.
        for name in ["1e5.jpg", "cat.3.jpg"] {
            try FileManager.default.createSymbolicLink(atPath: "\(folder)/\(name)", withDestinationPath: "\(sharedData)/train/cat.1.jpg")
        }
        let csvPath = folder + "/submission.csv"
        let result = try CLI.run(["submit", "--checkpoint", Self.model, "--test-dir", folder, "--out", csvPath, "--clip", "0.05"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.stderr.contains("12.jpg: cannot read it"), result.stderr)
        XCTAssertTrue(result.stderr.contains("note: 2 image(s) in '\(folder)' left out: their names are not plain numbers"), result.stderr)
        XCTAssertTrue(result.stderr.contains("(1e5.jpg, cat.3.jpg)"), result.stderr)
        let lines = try String(contentsOfFile: csvPath, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.first, "id,label")
        let rows = lines.dropFirst().map { $0.split(separator: ",") }
        XCTAssertEqual(rows.map { Int($0[0])! }, Array(1...12))
        for row in rows {
            let p = Double(row[1])!
            XCTAssertGreaterThanOrEqual(p, 0.05)
            XCTAssertLessThanOrEqual(p, 0.95)
        }
        XCTAssertEqual(Double(rows[11][1])!, 0.5)
        let empty = try temporaryFolder(self)
        let none = try CLI.run(["submit", "--checkpoint", Self.model, "--test-dir", empty, "--out", csvPath])
        XCTAssertEqual(none.status, 1)
        XCTAssertTrue(none.stderr.contains("no numbered images"), none.stderr)
    }

    func testCommandsRefuseAFileThatIsNotACheckpoint() throws {
        let result = try CLI.run(["evaluate", "--checkpoint", Self.images + "/cat.1.jpg", "--data", Self.images])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("checkpoint \(Self.images)/cat.1.jpg"), result.stderr)
    }

    /// The simple net's dense layer reads the flattened map, so it cannot score at another
    /// size: refused in one line naming the checkpoint and what to do.
    func testAnotherImageSizeIsRefusedForAModelWithoutGlobalPooling() throws {
        let result = try CLI.run(["evaluate", "--checkpoint", Self.model, "--data", Self.images, "--image-size", "48"])
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertTrue(result.stderr.contains("checkpoint \(Self.model): holds simple, whose weights at 48x48 differ"), result.stderr)
        XCTAssertTrue(result.stderr.contains("score it at its own size"), result.stderr)
        XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
        // Refused from the model's outline, before its network is built or memory counted:
        // at 1024 px that network would hold 2 x 537 million floats (4.3 GB) first.
        let checkpoint = try LoadedCheckpoint(path: Self.model)
        XCTAssertThrowsError(try checkpoint.makeNetwork(imageSize: 1024, available: { AvailableMemory(bytes: 1 << 20) })) { error in
            XCTAssertTrue(error is CheckpointError && "\(error)".contains("whose weights at 1024x1024 differ"), "\(error)")
        }
        XCTAssertThrowsError(try checkpoint.makeNetwork(available: { AvailableMemory(bytes: 1 << 20) })) { error in
            XCTAssertTrue(error is CheckpointMemoryError && "\(error)".contains("for its weights and their gradients"), "\(error)")
        }
    }

    func testPlotDrawsLossAndAccuracyCurves() throws {
        let out = try temporaryFolder(self) + "/curves.svg"
        let result = try CLI.run(["plot", Self.runFolder + "/metrics.jsonl", "--out", out])
        XCTAssertEqual(result.status, 0, result.output)
        let svg = try SVGCounter.parse(try String(contentsOfFile: out, encoding: .utf8))
        XCTAssertEqual(svg.elements["g.panel"], 2)
        XCTAssertEqual(svg.elements["polyline.series"], 4)
        for label in ["Loss", "Accuracy", "training loss", "validation loss", "training accuracy", "validation accuracy", "epoch"] {
            XCTAssertTrue(svg.texts.contains(label), "missing \(label)")
        }
        // It draws SVG only: a name that says another format is refused in one line, nothing written.
        let png = (out as NSString).deletingPathExtension + ".png"
        let refused = try CLI.run(["plot", Self.runFolder + "/metrics.jsonl", "--out", png])
        XCTAssertEqual(refused.status, 1, refused.output)
        XCTAssertTrue(refused.stderr.contains("the name says .png, but this writes SVG; end the name in .svg"), refused.stderr)
        XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: png))
    }

    /// `LoadedCheckpoint.model(path:)`, how `train --init-from` learns the model before MPI
    /// starts, reads the header alone: a checkpoint cut after its header still names its model
    /// (a whole read refuses it), and a file that is no checkpoint is refused.
    func testACheckpointsModelIsReadFromItsHeaderAlone() throws {
        XCTAssertEqual(try LoadedCheckpoint.model(path: Self.model), "simple")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: Self.model))
        let cut = try temporaryFolder(self) + "/cut.safetensors.zst"
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: cut))
        XCTAssertEqual(try LoadedCheckpoint.model(path: cut), "simple")
        XCTAssertThrowsError(try LoadedCheckpoint(path: cut))
        let jpeg = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: Self.images).first { $0.hasSuffix(".jpg") })
        XCTAssertThrowsError(try LoadedCheckpoint.model(path: Self.images + "/" + jpeg)) { error in
            XCTAssertTrue(error is CheckpointError, "\(error)")
        }
    }

    /// A metrics file is untrusted: one larger than any run writes (a sparse file of 65 MiB)
    /// is refused before it is read, a FIFO is refused rather than waited on, and a line that
    /// is no record is named in one line with its control characters escaped, saying which
    /// field is wrong.
    func testPlotRefusesFilesThatAreNoRunsMetrics() throws {
        let folder = try temporaryFolder(self)
        let large = folder + "/large.jsonl"
        XCTAssertTrue(FileManager.default.createFile(atPath: large, contents: nil))
        XCTAssertEqual(truncate(large, 65 << 20), 0)
        let fifo = folder + "/fifo.jsonl"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let bad = folder + "/bad.jsonl", wrongType = folder + "/wrong-type.jsonl"
        try "{\"epoch\u{1b}[2J\": 1}\n".write(toFile: bad, atomically: true, encoding: .utf8)
        try "{\"epoch\": \"one\"}\n".write(toFile: wrongType, atomically: true, encoding: .utf8)
        for (path, expected) in [(large, "bytes (limit 67108864)"), (fifo, "not a regular file"), (bad, "line 1 is not a metrics record: "),
                                 (wrongType, "line 1 is not a metrics record: epoch is not a whole number")] {
            let result = try CLI.run(["plot", path, "--out", folder + "/out.svg"])
            XCTAssertEqual(result.status, 1, "plot \(path): \(result.output)")
            XCTAssertTrue(result.stderr.contains(expected), "plot \(path): \(result.stderr)")
            XCTAssertFalse(result.stderr.contains("\u{1b}"), "plot \(path) printed a raw escape: \(result.stderr)")
            XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, "plot \(path): \(result.stderr)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/out.svg"))
    }
}
