import Foundation

/// Minimal SVG charts (bars, histograms, lines) with axes, ticks, labels and legends, for
/// `stats --plot` and `plot`. One `SVGFigure` holds panels laid out side by side.
public struct SVGFigure {
    public let panelWidth: Double
    public let panelHeight: Double
    private var panels: [String] = []

    public init(panelWidth: Double = 420, panelHeight: Double = 320) {
        self.panelWidth = panelWidth
        self.panelHeight = panelHeight
    }

    /// Round tick values covering [low, high].
    public static func ticks(_ low: Double, _ high: Double, count: Int = 5, integers: Bool = false) -> [Double] {
        guard high > low else { return [low] }
        let raw = integers ? max((high - low) / Double(count), 1) : (high - low) / Double(count)
        let magnitude = pow(10, floor(log10(raw)))
        let steps: [Double] = integers ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]
        let step = steps.map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var values: [Double] = []
        var v = (low / step).rounded(.up) * step
        while v <= high + step * 1e-9 { values.append(v); v += step }
        return values
    }

    static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e7 { return String(Int(v)) }
        return String(format: abs(v) < 0.01 ? "%.2e" : "%.3g", v)
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// Plot area of a panel and data-to-pixel mapping.
    struct Frame {
        let left = 62.0, top = 36.0, right: Double, bottom: Double
        let xRange: (Double, Double), yRange: (Double, Double)
        func x(_ v: Double) -> Double { left + (v - xRange.0) / max(xRange.1 - xRange.0, 1e-12) * (right - left) }
        func y(_ v: Double) -> Double { bottom - (v - yRange.0) / max(yRange.1 - yRange.0, 1e-12) * (bottom - top) }
    }

    private func axes(_ f: Frame, title: String, xLabel: String, yLabel: String, xTicks: [(Double, String)]?,
                      integerX: Bool = false) -> [String] {
        var e: [String] = []
        e.append(#"<text x="\#(panelWidth / 2)" y="20" text-anchor="middle" font-size="15" font-weight="bold">\#(SVGFigure.escape(title))</text>"#)
        e.append(#"<line x1="\#(f.left)" y1="\#(f.bottom)" x2="\#(f.right)" y2="\#(f.bottom)" stroke="black"/>"#)
        e.append(#"<line x1="\#(f.left)" y1="\#(f.top)" x2="\#(f.left)" y2="\#(f.bottom)" stroke="black"/>"#)
        for t in SVGFigure.ticks(f.yRange.0, f.yRange.1) {
            let y = f.y(t)
            e.append(#"<line x1="\#(f.left - 4)" y1="\#(y)" x2="\#(f.left)" y2="\#(y)" stroke="black"/>"#)
            e.append(#"<line x1="\#(f.left)" y1="\#(y)" x2="\#(f.right)" y2="\#(y)" stroke="lightgray"/>"#)
            e.append(#"<text x="\#(f.left - 7)" y="\#(y + 4)" text-anchor="end" font-size="11">\#(SVGFigure.label(t))</text>"#)
        }
        let xt = xTicks ?? SVGFigure.ticks(f.xRange.0, f.xRange.1, integers: integerX).map { ($0, SVGFigure.label($0)) }
        for (t, text) in xt {
            let x = f.x(t)
            e.append(#"<line x1="\#(x)" y1="\#(f.bottom)" x2="\#(x)" y2="\#(f.bottom + 4)" stroke="black"/>"#)
            e.append(#"<text x="\#(x)" y="\#(f.bottom + 17)" text-anchor="middle" font-size="11">\#(SVGFigure.escape(text))</text>"#)
        }
        e.append(#"<text x="\#((f.left + f.right) / 2)" y="\#(panelHeight - 6)" text-anchor="middle" font-size="12">\#(SVGFigure.escape(xLabel))</text>"#)
        e.append(#"<text x="14" y="\#((f.top + f.bottom) / 2)" text-anchor="middle" font-size="12" transform="rotate(-90 14 \#((f.top + f.bottom) / 2))">\#(SVGFigure.escape(yLabel))</text>"#)
        return e
    }

    private func frame(x: (Double, Double), y: (Double, Double)) -> Frame {
        Frame(right: panelWidth - 16, bottom: panelHeight - 46, xRange: x, yRange: y)
    }

    static let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]

    /// One bar per category.
    public mutating func bars(title: String, categories: [String], values: [Double], yLabel: String) {
        let top = (values.max() ?? 1) * 1.1
        let f = frame(x: (0, Double(categories.count)), y: (0, max(top, 1)))
        var e = axes(f, title: title, xLabel: "", yLabel: yLabel,
                     xTicks: categories.enumerated().map { (Double($0) + 0.5, $1) })
        for (i, v) in values.enumerated() {
            let x0 = f.x(Double(i) + 0.15), x1 = f.x(Double(i) + 0.85)
            e.append(#"<rect class="bar" x="\#(x0)" y="\#(f.y(v))" width="\#(x1 - x0)" height="\#(f.bottom - f.y(v))" fill="\#(SVGFigure.colors[i % 4])"/>"#)
            e.append(#"<text x="\#((x0 + x1) / 2)" y="\#(f.y(v) - 4)" text-anchor="middle" font-size="11">\#(SVGFigure.label(v))</text>"#)
        }
        panels.append(e.joined(separator: "\n"))
    }

    /// A histogram of `values` in `binCount` equal bins.
    public mutating func histogram(title: String, values: [Double], binCount: Int = 20, xLabel: String, yLabel: String = "images") {
        guard let low = values.min(), let high = values.max() else { return }
        let width = max((high - low) / Double(binCount), 1e-9)
        var counts = [Double](repeating: 0, count: binCount)
        for v in values { counts[min(Int((v - low) / width), binCount - 1)] += 1 }
        let f = frame(x: (low, low + width * Double(binCount)), y: (0, (counts.max() ?? 1) * 1.1))
        var e = axes(f, title: title, xLabel: xLabel, yLabel: yLabel, xTicks: nil)
        for (i, c) in counts.enumerated() where c > 0 {
            let x0 = f.x(low + Double(i) * width), x1 = f.x(low + Double(i + 1) * width)
            e.append(#"<rect class="bar" x="\#(x0)" y="\#(f.y(c))" width="\#(max(x1 - x0 - 1, 0.5))" height="\#(f.bottom - f.y(c))" fill="steelblue"/>"#)
        }
        panels.append(e.joined(separator: "\n"))
    }

    /// Lines through (x, y) points, one per named series, with a legend.
    public mutating func lines(title: String, series: [(name: String, points: [(Double, Double)])], xLabel: String, yLabel: String) {
        let all = series.flatMap(\.points).filter { $0.1.isFinite }
        guard !all.isEmpty else { return }
        let xs = all.map(\.0), ys = all.map(\.1)
        var yLow = ys.min()!, yHigh = ys.max()!
        let pad = max((yHigh - yLow) * 0.08, 1e-3)
        yLow -= pad; yHigh += pad
        let f = frame(x: (xs.min()!, max(xs.max()!, xs.min()! + 1)), y: (yLow, yHigh))
        var e = axes(f, title: title, xLabel: xLabel, yLabel: yLabel, xTicks: nil,
                     integerX: xs.allSatisfy { $0 == $0.rounded() })
        // Legend in a box at the right, in the corner the curves' last points leave free.
        let tail = series.flatMap { $0.points.suffix(max(1, $0.points.count / 3)) }.map(\.1).filter(\.isFinite)
        let endsHigh = tail.reduce(0, +) / Double(max(tail.count, 1)) > (yLow + yHigh) / 2
        let legendWidth = 150.0
        let legendTop = endsHigh ? f.bottom - 10 - Double(series.count) * 16 : f.top + 6
        e.append(#"<rect x="\#(f.right - legendWidth - 6)" y="\#(legendTop - 4)" width="\#(legendWidth)" height="\#(Double(series.count) * 16 + 6)" fill="white" fill-opacity="0.9" stroke="lightgray"/>"#)
        for (i, s) in series.enumerated() {
            let color = SVGFigure.colors[i % 4]
            let points = s.points.filter { $0.1.isFinite }.map { "\(f.x($0.0)),\(f.y($0.1))" }.joined(separator: " ")
            e.append(#"<polyline class="series" data-name="\#(SVGFigure.escape(s.name))" points="\#(points)" fill="none" stroke="\#(color)" stroke-width="2"/>"#)
            for p in s.points where p.1.isFinite {
                e.append(#"<circle cx="\#(f.x(p.0))" cy="\#(f.y(p.1))" r="3" fill="\#(color)"/>"#)
            }
            let ly = legendTop + 6 + Double(i) * 16
            e.append(#"<line x1="\#(f.right - legendWidth)" y1="\#(ly)" x2="\#(f.right - legendWidth + 20)" y2="\#(ly)" stroke="\#(color)" stroke-width="2"/>"#)
            e.append(#"<text class="legend" x="\#(f.right - legendWidth + 26)" y="\#(ly + 4)" font-size="11">\#(SVGFigure.escape(s.name))</text>"#)
        }
        panels.append(e.joined(separator: "\n"))
    }

    /// The whole figure as an SVG document.
    public var svg: String {
        let width = panelWidth * Double(max(panels.count, 1))
        var out = #"<?xml version="1.0" encoding="UTF-8"?>"# + "\n"
        out += #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(width)" height="\#(panelHeight)" viewBox="0 0 \#(width) \#(panelHeight)" font-family="sans-serif">"# + "\n"
        out += #"<rect width="100%" height="100%" fill="white"/>"# + "\n"
        for (i, panel) in panels.enumerated() {
            out += #"<g class="panel" transform="translate(\#(Double(i) * panelWidth),0)">"# + "\n" + panel + "\n</g>\n"
        }
        return out + "</svg>\n"
    }
}
