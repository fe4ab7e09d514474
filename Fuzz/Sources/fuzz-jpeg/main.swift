import CatdogData
import CatdogSupport
import Foundation

/// The image path of training and prediction: header, decode at the smallest DCT scale that
/// covers the stored size, resize to the square (squash or crop), then one augmented sample
/// written as network input. The first input byte picks the fit and the working size.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJPEG(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count > 1 else { return 0 }
    let control = start.load(as: UInt8.self)
    let data = Data(bytes: start + 1, count: count - 1)
    let codec = JPEGCodec()
    let fit: Resize.Fit = control & 1 == 0 ? .squash : .crop
    let preprocessing = Preprocessing(imageSize: 16 + Int(control >> 1) % 48, fit: fit)
    let size = preprocessing.storedSize
    guard (try? codec.dimensions(of: data)) != nil,
          let image = try? codec.decode(data, minWidth: size, minHeight: size) else { return 0 }
    let square = Resize.square(image, size: size, fit: fit)
    let store = ImageStore(count: 1, storedSize: size, labels: [0])
    square.withUnsafeBufferPointer { store.image(0).update(from: $0.baseAddress!, count: size * size * 3) }
    let input = UnsafeMutablePointer<Float>.allocate(capacity: preprocessing.imageSize * preprocessing.imageSize * 3)
    defer { input.deallocate() }
    var random = Augmentation.stream(seed: 1, epoch: 0, sample: Int(control))
    store.writeSample(0, to: input, preprocessing: preprocessing, augmentation: Augmentation(flip: true, color: true, crop: true),
                      random: &random)
    return 0
}
