import ArgumentParser

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a Kaggle submission CSV for a numbered test folder.")

    func run() throws { try notYetAvailable("submit", issue: 6) }
}
