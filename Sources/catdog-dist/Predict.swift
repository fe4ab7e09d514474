import ArgumentParser
import CatdogEngine
import CatdogSupport
import Foundation

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Say how sure the model is that each image is a cat or a dog.",
        discussion: """
            Any JPEG of any size. One line per image, in the 2017 study's words:
              I am 99.12% sure this is a Dog
            An unreadable image gets an error line; the others are still answered (exit status 1).
            """)

    @OptionGroup var model: CheckpointOptions
    @OptionGroup var compute: ComputeOptions

    @Argument(help: "JPEG images.")
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
        let predictor = try model.predictor(compute)
        let results = predictor.dogProbabilities(images, tta: testTime.resolved)
        var failed = 0
        for (path, result) in zip(images, results) {
            switch result {
            case .success(let p):
                if json {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = .withoutEscapingSlashes
                    let name = String(decoding: try encoder.encode(path), as: UTF8.self)  // escaped as JSON requires
                    print(#"{"image": \#(name), "dog_probability": \#(p), "label": "\#(p >= 0.5 ? "dog" : "cat")"}"#)
                } else {
                    print(images.count > 1 ? "\(printable(path)): \(Predict.sentence(dogProbability: p))" : Predict.sentence(dogProbability: p))
                }
            case .failure(let error):
                failed += 1
                printError("\(path): cannot read it: \(error)")
            }
        }
        if failed > 0 { throw ExitCode(1) }
    }
}
