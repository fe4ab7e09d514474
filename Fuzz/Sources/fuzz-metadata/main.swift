import CatdogData
import CatdogRun
import Foundation

/// A checkpoint's metadata JSON alone (what `inspect --json` prints): decoded, validated, and
/// when it passes, put through the arithmetic a resume, `inspect` and the learning-rate
/// schedule do with its numbers. The numbers at the edges (2^63 - 1, -2^63, ±1e308, -1) are in
/// Fuzz/Dictionaries/metadata.dict; a number that passes validation must compute without a trap.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMetadata(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard let metadata = try? JSONDecoder().decode(CheckpointMetadata.self, from: Data(bytes: start, count: count)),
          metadata.problem == nil else { return 0 }
    let m = metadata
    _ = m.schedule.rate(at: m.step)
    _ = m.config.trainingSize(atFraction: Double(m.step) / Double(max(m.schedule.totalSteps, 1)))
    _ = m.config.epochs - m.epoch - 1
    _ = m.history.count + m.epoch + 1
    _ = m.globalBatch / m.ranks * m.ranks
    _ = m.step * m.globalBatch
    _ = m.config.epochs * (20_000 / m.globalBatch + 1)
    _ = Int(m.elapsedSeconds.rounded())
    _ = m.epochTotals.lossSum / max(m.epochTotals.count, 1)
    for e in m.history { _ = String(format: "%3d %.4f %.4f %.1f", e.epoch, e.train_loss, e.val_acc, e.images_per_s) }
    _ = Preprocessing(imageSize: m.imageSize, fit: m.preprocessing.fit, scale: m.preprocessing.scale,
                      cropMargin: m.preprocessing.cropMargin).storedSize
    return 0
}
