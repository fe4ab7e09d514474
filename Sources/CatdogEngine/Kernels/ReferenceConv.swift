/// Naive convolution in double precision: the test oracle for the im2col + sgemm path.
/// x is (n, H, W, C), kernel is (KH, KW, C, F), bias is (F), y is (n, OH, OW, F).
public enum ReferenceConv {
    public static func forward(
        _ g: ConvGeometry, images: Int, filters: Int, input: [Float], kernel: [Float], bias: [Float]
    ) -> [Float] {
        var y = [Float](repeating: 0, count: images * g.outHeight * g.outWidth * filters)
        for n in 0..<images {
            for oh in 0..<g.outHeight {
                for ow in 0..<g.outWidth {
                    for f in 0..<filters {
                        var sum = Double(bias[f])
                        for kh in 0..<g.kernelHeight {
                            for kw in 0..<g.kernelWidth {
                                let ih = oh * g.strideHeight - g.padTop + kh
                                let iw = ow * g.strideWidth - g.padLeft + kw
                                guard ih >= 0, ih < g.inHeight, iw >= 0, iw < g.inWidth else { continue }
                                for ch in 0..<g.channels {
                                    let xv = input[((n * g.inHeight + ih) * g.inWidth + iw) * g.channels + ch]
                                    let wv = kernel[((kh * g.kernelWidth + kw) * g.channels + ch) * filters + f]
                                    sum += Double(xv) * Double(wv)
                                }
                            }
                        }
                        y[((n * g.outHeight + oh) * g.outWidth + ow) * filters + f] = Float(sum)
                    }
                }
            }
        }
        return y
    }

    /// Returns (dInput, dKernel, dBias) for upstream gradient dY.
    public static func backward(
        _ g: ConvGeometry, images: Int, filters: Int, input: [Float], kernel: [Float], dOutput: [Float]
    ) -> (dInput: [Float], dKernel: [Float], dBias: [Float]) {
        var dx = [Double](repeating: 0, count: input.count)
        var dw = [Double](repeating: 0, count: kernel.count)
        var db = [Double](repeating: 0, count: filters)
        for n in 0..<images {
            for oh in 0..<g.outHeight {
                for ow in 0..<g.outWidth {
                    for f in 0..<filters {
                        let dy = Double(dOutput[((n * g.outHeight + oh) * g.outWidth + ow) * filters + f])
                        db[f] += dy
                        for kh in 0..<g.kernelHeight {
                            for kw in 0..<g.kernelWidth {
                                let ih = oh * g.strideHeight - g.padTop + kh
                                let iw = ow * g.strideWidth - g.padLeft + kw
                                guard ih >= 0, ih < g.inHeight, iw >= 0, iw < g.inWidth else { continue }
                                for ch in 0..<g.channels {
                                    let xi = ((n * g.inHeight + ih) * g.inWidth + iw) * g.channels + ch
                                    let wi = ((kh * g.kernelWidth + kw) * g.channels + ch) * filters + f
                                    dx[xi] += dy * Double(kernel[wi])
                                    dw[wi] += dy * Double(input[xi])
                                }
                            }
                        }
                    }
                }
            }
        }
        return (dx.map(Float.init), dw.map(Float.init), db.map(Float.init))
    }
}
