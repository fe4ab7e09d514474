import CKernels

/// Geometry of a 2-D convolution or pooling window over NHWC images.
public struct ConvGeometry: Hashable, Sendable {
    public var inHeight, inWidth, channels: Int
    public var kernelHeight, kernelWidth: Int
    public var strideHeight, strideWidth: Int
    public var outHeight, outWidth: Int
    /// Zero rows above and columns left of the image; the bottom and right padding is
    /// whatever the output size needs (TensorFlow's "SAME" puts the odd one there).
    public var padTop, padLeft: Int

    public enum Padding: String, Sendable, Codable { case same, valid }

    public init(
        inHeight: Int, inWidth: Int, channels: Int, kernelHeight: Int, kernelWidth: Int,
        strideHeight: Int, strideWidth: Int, padding: Padding
    ) {
        self.inHeight = inHeight
        self.inWidth = inWidth
        self.channels = channels
        self.kernelHeight = kernelHeight
        self.kernelWidth = kernelWidth
        self.strideHeight = strideHeight
        self.strideWidth = strideWidth
        switch padding {
        case .valid:
            outHeight = (inHeight - kernelHeight) / strideHeight + 1
            outWidth = (inWidth - kernelWidth) / strideWidth + 1
            padTop = 0
            padLeft = 0
        case .same:
            // TensorFlow: out = ceil(in / stride), total pad = max((out-1)*stride + k - in, 0),
            // top = total / 2, bottom = total - top.
            outHeight = (inHeight + strideHeight - 1) / strideHeight
            outWidth = (inWidth + strideWidth - 1) / strideWidth
            padTop = max((outHeight - 1) * strideHeight + kernelHeight - inHeight, 0) / 2
            padLeft = max((outWidth - 1) * strideWidth + kernelWidth - inWidth, 0) / 2
        }
    }

    /// Length of one im2col row: kernelHeight * kernelWidth * channels.
    public var patchSize: Int { kernelHeight * kernelWidth * channels }
    public var isPointwise: Bool {
        kernelHeight == 1 && kernelWidth == 1 && strideHeight == 1 && strideWidth == 1 && padTop == 0
            && padLeft == 0
    }
}

/// Unfolds `images` NHWC images into rows of patches.
/// input is (images, inHeight, inWidth, channels); col is (images * outHeight * outWidth, patchSize),
/// each row ordered (kh, kw, c) so that a Keras kernel (kh, kw, c, filters) is its matching matrix.
public func im2col(
    _ g: ConvGeometry, images: Int, input: UnsafePointer<Float>, col: UnsafeMutablePointer<Float>
) {
    im2col(g, rows: 0..<(images * g.outHeight * g.outWidth), input: input, col: col)
}

/// Walks output pixels `rows` (flattened over image, output row, output column) of a batch: for
/// each, its place in `rows` (from 0), its image, the input row and column of its patch's
/// top-left tap, and the kw range of the patch inside the image (where kwEnd <= kwStart, none).
@inline(__always)
func forEachPatch(_ g: ConvGeometry, rows: Range<Int>,
                  _ body: (_ index: Int, _ image: Int, _ ihBase: Int, _ iwBase: Int, _ kwStart: Int, _ kwEnd: Int) -> Void) {
    let perImage = g.outHeight * g.outWidth
    var r = rows.lowerBound
    while r < rows.upperBound {
        let n = r / perImage
        let within = r - n * perImage
        let end = min(rows.upperBound, (n + 1) * perImage)
        var oh = within / g.outWidth, ow = within - oh * g.outWidth
        for i in r..<end {
            let ihBase = oh * g.strideHeight - g.padTop
            let iwBase = ow * g.strideWidth - g.padLeft
            body(i - rows.lowerBound, n, ihBase, iwBase, max(0, -iwBase), min(g.kernelWidth, g.inWidth - iwBase))
            ow += 1
            if ow == g.outWidth { ow = 0; oh += 1 }
        }
        r = end
    }
}

/// Unfolds output pixels `rows` (flattened over image, output row, output column) of a batch
/// starting at `input` into `col`, one patch per row: a chunk small enough to stay in cache.
public func im2col(
    _ g: ConvGeometry, rows: Range<Int>, input: UnsafePointer<Float>, col: UnsafeMutablePointer<Float>
) {
    let c = g.channels
    let imageSize = g.inHeight * g.inWidth * c
    forEachPatch(g, rows: rows) { index, n, ihBase, iwBase, kwStart, kwEnd in
        let row = col + index * g.patchSize
        // The kw run for one kh is contiguous in both col and input.
        for kh in 0..<g.kernelHeight {
            let ih = ihBase + kh
            let dst = row + kh * g.kernelWidth * c
            if ih < 0 || ih >= g.inHeight || kwEnd <= kwStart {
                dst.update(repeating: 0, count: g.kernelWidth * c)
                continue
            }
            if kwStart > 0 { dst.update(repeating: 0, count: kwStart * c) }
            let src = input + n * imageSize + (ih * g.inWidth + iwBase + kwStart) * c
            (dst + kwStart * c).update(from: src, count: (kwEnd - kwStart) * c)
            if kwEnd < g.kernelWidth {
                (dst + kwEnd * c).update(repeating: 0, count: (g.kernelWidth - kwEnd) * c)
            }
        }
    }
}

/// Folds patch-row gradients back onto the images, adding into `dInput` (the adjoint of im2col).
public func col2im(
    _ g: ConvGeometry, images: Int, dCol: UnsafePointer<Float>, dInput: UnsafeMutablePointer<Float>
) {
    col2im(g, rows: 0..<(images * g.outHeight * g.outWidth), dCol: dCol, dInput: dInput)
}

/// The adjoint of `im2col(_:rows:input:col:)`: adds patch rows `rows` of `dCol` into the batch at
/// `dInput` (`catdog_col2im`, vectorised for the CPU; the same bits on every instruction set).
public func col2im(
    _ g: ConvGeometry, rows: Range<Int>, dCol: UnsafePointer<Float>, dInput: UnsafeMutablePointer<Float>
) {
    catdog_col2im(dCol, dInput, g.inHeight, g.inWidth, g.channels, g.kernelHeight, g.kernelWidth, g.strideHeight,
                  g.strideWidth, g.padTop, g.padLeft, g.outHeight, g.outWidth, rows.lowerBound, rows.count)
}
