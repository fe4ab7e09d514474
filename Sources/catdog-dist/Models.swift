import ArgumentParser
import CatdogEngine
import Foundation

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the models with their parameter counts and forward GFLOPs per image.")

    @Option(help: "Input image size (square), in pixels.")
    var imageSize = 64

    @Flag(name: .shortAndLong, help: "Also print each model's layers and output shapes.")
    var verbose = false

    func validate() throws {
        guard imageSize >= 16, imageSize <= 1024 else {
            throw ValidationError("--image-size must be between 16 and 1024, got \(imageSize)")
        }
    }

    func run() throws {
        print("models at \(imageSize)x\(imageSize)x3:")
        print("  name                parameters   GFLOPs/image (forward)   description")
        for entry in ModelZoo.entries {
            // Shapes only: nothing is allocated (simple at 1024 px would take 4 GB built).
            let outline = try ModelZoo.builder(entry.name, imageSize: imageSize).outline()
            let gflops = Double(outline.forwardFLOPs) / 1e9
            let params = outline.parameters.formatted(.number.grouping(.automatic))
            print("  \(entry.name.padding(toLength: 18, withPad: " ", startingAt: 0)) \(params.leftPadded(11))   \(String(format: "%8.3f", gflops))                 \(entry.description)")
            if verbose {
                for line in outline.layers { print("      \(line)") }
            }
        }
        print("training costs about 3x the forward GFLOPs per image; `\(ModelZoo.defaultModel)` is the default.")
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
