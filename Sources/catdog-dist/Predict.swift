import ArgumentParser

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Say how sure the model is that each image is a cat or a dog.")

    func run() throws { try notYetAvailable("predict", issue: 6) }
}
