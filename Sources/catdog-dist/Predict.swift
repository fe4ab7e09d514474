import ArgumentParser
import CatdogData
import CatdogEngine
import CatdogSupport
import Foundation

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Say how sure the model is that each image is a cat or a dog.",
        discussion: """
            Any JPEG of any size, or a folder of them. One line per image, in the 2017 study's words:
              I am 99.12% sure this is a Dog
            A folder stands for the JPEG files in it, by name (not those in its subfolders); \
            answers are printed a batch at a time as they come.
            An unreadable image gets an error line; the others are still answered (exit status 1).
            """)

    @OptionGroup var model: CheckpointOptions
    @OptionGroup var compute: ComputeOptions

    @Argument(help: "JPEG images, or folders of them.")
    var images: [String]

    @OptionGroup var testTime: TestTimeOptions

    @Flag(help: "Print one JSON object per image.")
    var json = false

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one image") }
    }

    /// "I am 99.12% sure this is a Dog": the predicted class's probability, two decimals.
    static func sentence(dogProbability p: Double) -> String {
        let isDog = p >= 0.5
        return String(format: "I am %.2f%% sure this is a %@", (isDog ? p : 1 - p) * 100, isDog ? "Dog" : "Cat")
    }

    func run() throws {
        try compute.apply()  // first: the kernels it selects decide what auto can take
        // A folder that cannot be listed, or holds no JPEG, is said like an unreadable image.
        let (paths, folderErrors) = Predict.files(images)
        folderErrors.forEach { printError("\($0)") }
        var failed = folderErrors.count
        guard !paths.isEmpty else { throw ExitCode(1) }
        let predictor = try model.predictor(compute)
        let named = paths.count > 1 || paths != images  // more than one image, or one from a folder: say which
        // A batch at a time, so that a folder of thousands is answered as it goes.
        for start in stride(from: 0, to: paths.count, by: predictor.batchSize) {
            let batch = Array(paths[start..<min(start + predictor.batchSize, paths.count)])
            failed += try report(zip(batch, predictor.dogProbabilities(batch, tta: testTime.resolved)), named: named)
            fflush(nil)
        }
        if failed > 0 { throw ExitCode(1) }
    }

    /// The images `arguments` name (a file as given, a folder as its JPEG files by name), and
    /// why a folder gave none.
    static func files(_ arguments: [String]) -> (paths: [String], errors: [DataFolderError]) {
        var paths: [String] = [], errors: [DataFolderError] = []
        for argument in arguments {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory), isDirectory.boolValue else {
                paths.append(argument)
                continue
            }
            do { paths += try DataFolder.imageFiles(in: argument) } catch let error as DataFolderError { errors.append(error) } catch {
                errors.append(DataFolderError(description: "\(error)"))
            }
        }
        return (paths, errors)
    }

    /// Prints each answer (prefixed with its path when `named`), or its error; returns how many failed.
    private func report(_ results: some Sequence<(String, Result<Double, ImageError>)>, named: Bool) throws -> Int {
        var failed = 0
        for (path, result) in results {
            switch result {
            case .success(let p):
                if json {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = .withoutEscapingSlashes
                    let name = String(decoding: try encoder.encode(path), as: UTF8.self)  // escaped as JSON requires
                    print(#"{"image": \#(name), "dog_probability": \#(p), "label": "\#(p >= 0.5 ? "dog" : "cat")"}"#)
                } else {
                    print(named ? "\(printable(path)): \(Predict.sentence(dogProbability: p))" : Predict.sentence(dogProbability: p))
                }
            case .failure(let error):
                failed += 1
                printError("\(path): cannot read it: \(error)")
            }
        }
        return failed
    }
}
