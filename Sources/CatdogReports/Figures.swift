import CatdogData
import CatdogRun

extension DatasetStatistics {
    /// The 2017 study's chapter 2 figures: images per class, and histograms of widths and heights.
    public var figure: String {
        var figure = SVGFigure()
        figure.bars(title: "Images per class", categories: ["cat", "dog"], values: [Double(cats), Double(dogs)], yLabel: "images")
        figure.histogram(title: "Image widths", values: widths.map(Double.init), xLabel: "width (pixels)")
        figure.histogram(title: "Image heights", values: heights.map(Double.init), xLabel: "height (pixels)")
        return figure.svg
    }
}

/// Two panels as in the 2017 study: training and validation loss per epoch, and training and
/// validation accuracy per epoch. A resumed run may repeat an epoch; its last record wins.
/// Non-finite values (a diverged epoch) are left out of the curves.
public func trainingCurves(_ epochs: [EpochMetrics]) -> (svg: String, epochs: Int) {
    let byEpoch = Dictionary(epochs.map { ($0.epoch, $0) }, uniquingKeysWith: { _, last in last })
    let ordered = byEpoch.keys.sorted().map { byEpoch[$0]! }
    func series(_ name: String, _ value: (EpochMetrics) -> Double) -> (name: String, points: [(Double, Double)]) {
        (name, ordered.compactMap { value($0).isFinite ? (Double($0.epoch), value($0)) : nil })
    }
    var figure = SVGFigure(panelWidth: 480, panelHeight: 340)
    figure.lines(title: "Loss", series: [series("training loss", \.train_loss), series("validation loss", \.val_loss)],
                 xLabel: "epoch", yLabel: "binary cross-entropy")
    figure.lines(title: "Accuracy", series: [series("training accuracy", \.train_acc), series("validation accuracy", \.val_acc)],
                 xLabel: "epoch", yLabel: "accuracy")
    return (figure.svg, ordered.count)
}
