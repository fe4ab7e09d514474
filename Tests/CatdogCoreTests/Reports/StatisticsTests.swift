import CatdogData
import CatdogReports
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest

/// Counts the elements of an SVG document by name (and class attribute).
final class SVGCounter: NSObject, XMLParserDelegate {
    var elements: [String: Int] = [:]
    var texts: [String] = []
    private var inText = false

    static func parse(_ svg: String) throws -> SVGCounter {
        let counter = SVGCounter()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = counter
        guard parser.parse() else { throw parser.parserError ?? NSError(domain: "svg", code: 1) }
        return counter
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        elements[name, default: 0] += 1
        if let c = attributes["class"] { elements["\(name).\(c)", default: 0] += 1 }
        inText = name == "text"
        if inText { texts.append("") }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if inText { texts[texts.count - 1] += string }
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        inText = false
    }
}

final class StatisticsTests: XCTestCase {
    func testOriginalsCountFiveHundredPerClassAndFigureParses() throws {
        let stats = try DatasetStatistics(folder: sharedData + "/originals")
        XCTAssertEqual(stats.count, 1000)
        XCTAssertEqual(stats.cats, 500)
        XCTAssertEqual(stats.dogs, 500)
        XCTAssertTrue(stats.unreadable.isEmpty)
        XCTAssertGreaterThan(Set(stats.widths).count, 50, "originals have varied widths")
        let svg = try SVGCounter.parse(stats.figure)
        XCTAssertEqual(svg.elements["g.panel"], 3)
        XCTAssertEqual(svg.elements["rect.bar"].map { $0 >= 2 + 10 + 10 }, true)
        for label in ["Images per class", "Image widths", "Image heights", "width (pixels)", "cat", "dog"] {
            XCTAssertTrue(svg.texts.contains(label), "missing label \(label)")
        }
    }

    func testUnreadableFilesAreCounted() throws {
        let folder = try temporaryFolder(self)
        try JPEGCodec().encode(pattern(width: 30, height: 20), width: 30, height: 20).write(to: URL(fileURLWithPath: folder + "/cat.1.jpg"))
        try Data("text".utf8).write(to: URL(fileURLWithPath: folder + "/dog.2.jpg"))
        let stats = try DatasetStatistics(folder: folder)
        XCTAssertEqual(stats.count, 1)
        XCTAssertEqual(stats.unreadable.count, 1)
        XCTAssertEqual(stats.widths, [30])
        XCTAssertTrue(stats.report.contains("1 unreadable"))
    }

    func testTicksAreRoundAndCoverTheRange() {
        XCTAssertEqual(SVGFigure.ticks(0, 500), [0, 100, 200, 300, 400, 500])
        XCTAssertEqual(SVGFigure.ticks(0.3, 0.7), [0.3, 0.4, 0.5, 0.6, 0.7].map { ($0 * 10).rounded() / 10 }.map { $0 }, accuracyArray: 1e-9)
    }
}

func XCTAssertEqual(_ a: [Double], _ b: [Double], accuracyArray: Double, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "\(a) vs \(b)", file: file, line: line)
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: accuracyArray, file: file, line: line) }
}
