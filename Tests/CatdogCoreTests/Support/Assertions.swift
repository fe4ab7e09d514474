import CatdogRun
import XCTest

/// Fails unless `a` and `b` have the same length and every pair is within
/// absolute + relative·max(|a|, |b|). A NaN or an infinity on either side fails too (a plain
/// `excess > worst` comparison is false for NaN and would let it pass).
func assertClose(_ a: [Float], _ b: [Float], absolute: Float, relative: Float = 0, _ message: String = "",
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "length differs \(message)", file: file, line: line)
    var worst = (index: -1, excess: Float(0))
    for i in 0..<min(a.count, b.count) {
        guard a[i].isFinite, b[i].isFinite else {
            XCTFail("\(message): element \(i) is not finite: \(a[i]) vs \(b[i])", file: file, line: line)
            return
        }
        let excess = abs(a[i] - b[i]) - (absolute + relative * max(abs(a[i]), abs(b[i])))
        if excess > worst.excess { worst = (i, excess) }
    }
    if worst.index >= 0 {
        XCTFail("\(message): element \(worst.index) differs: \(a[worst.index]) vs \(b[worst.index])", file: file, line: line)
    }
}

/// Two runs' last checkpoints hold the same tensors, bit for bit, and the same validation
/// losses: what a bit-exact resume promises.
func assertSameTensorsAndHistory(_ a: LoadedCheckpoint, _ b: LoadedCheckpoint, file: StaticString = #filePath, line: UInt = #line) throws {
    XCTAssertEqual(a.file.tensors.keys.sorted(), b.file.tensors.keys.sorted(), file: file, line: line)
    for name in a.file.tensors.keys.sorted() { XCTAssertEqual(try a.file.array(name), try b.file.array(name), name, file: file, line: line) }
    // An epoch the validation schedule skipped has NaN (never equal to itself): compare as nil.
    func scores(_ c: LoadedCheckpoint) -> [Double?] { c.metadata.history.map { $0.val_loss.isNaN ? nil : $0.val_loss } }
    XCTAssertEqual(scores(a), scores(b), file: file, line: line)
}
