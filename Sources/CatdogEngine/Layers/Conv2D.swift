import CKernels
import CatdogSupport
import Foundation

/// 2-D convolution over NHWC batches as im2col followed by one sgemm per chunk of output
/// pixels, with bias and activation fused (darknet's layout; Keras's kernel shape (KH, KW, C, F)).
/// Chunks are sized to stay in cache: one im2col of a whole batch of 64×64 images would be
/// ~150 MB, written and read back through memory; 1 MB chunks made vgg's step 19% faster.
///
/// Forward: y (rows, F) = col (rows, KH*KW*C) · W (KH*KW*C, F) + b, rows = images*OH*OW.
/// Backward: dW += colᵀ · dY, db += Σ dY, dCol = dY · Wᵀ then col2im into dX.
public final class Conv2D: Layer {
    public let filters: Int
    public let kernelSize: (Int, Int)
    public let strides: (Int, Int)
    public let padding: ConvGeometry.Padding
    public let activation: Activation
    public let useBias: Bool

    public private(set) var geometry: ConvGeometry!
    private var kernel: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>!
    private var dKernel: UnsafeMutablePointer<Float>!
    private var dBias: UnsafeMutablePointer<Float>!
    private var col = FloatBuffer(count: 0)
    /// Most output pixels (rows of the im2col matrix) a chunk holds; see `chunkLength(total:)`.
    private var chunkRows = 1
    /// Winograd for forward and for dX (a stride-1 "same" convolution of dY with the kernel
    /// flipped in space and transposed in channels), when the layer qualifies: F(4×4, 3×3),
    /// or F(2×2, 3×3) when the options ask for it (see `ConvolutionOptions`).
    private var winograd: WinogradConvolution?
    /// Whether `reserve` chose Winograd for this layer (see `ConvolutionOptions`).
    public var usesWinograd: Bool { winograd != nil }

    /// Whether a pass of `batch` images takes Winograd: the layer has it, and with `auto` F(4×4)
    /// costs no more than F(2×2) for the pass (`favoursF4x4`), or F(2×2) takes it
    /// (`smallPassWinograd`, from `Winograd2x2.minimumTiles`). `winograd2` always takes F(2×2).
    public func takesWinograd(batch: Int) -> Bool { winogradPass(batch: batch) != nil }

    /// The Winograd convolutions of a pass of `batch` images (forward, dX, dW), or nil: im2col.
    private func winogradPass(batch: Int) -> (forward: WinogradConvolution, backward: WinogradConvolution,
                                              kernelGradient: WinogradKernelGradient)? {
        guard let winograd, let winogradBackward, let winogradKernelGradient, let g = geometry else { return nil }
        let tiles4 = Winograd4x4.tiles(images: batch, height: g.outHeight, width: g.outWidth)
        let tiles2 = Winograd2x2.tiles(images: batch, height: g.outHeight, width: g.outWidth)
        guard scratch.convolution.algorithm == .auto,
              !Self.favoursF4x4(tiles4: tiles4, tiles2: tiles2, minimum: scratch.convolution.winogradMinimumTiles)
        else { return (winograd, winogradBackward, winogradKernelGradient) }
        guard let small = smallPassWinograd, let smallBackward = smallPassWinogradBackward, tiles2 >= Winograd2x2.minimumTiles
        else { return nil }
        return (small, smallBackward, small)
    }

    /// Whether F(4×4) costs no more than F(2×2) for a pass of `tiles4` 4×4 tiles or `tiles2`
    /// 2×2 tiles: each costs its products, 36 or 16 per tile (× channels in × out), plus its
    /// transformed kernels, 36 or 16 of them, which cost as much as the products of K tiles
    /// whatever the batch. K = 1.4 × `minimum` puts the switch at `minimum` 4×4 tiles where a
    /// map divides into whole ones (tiles2 = 4 × tiles4); on maps that do not (resnet's 5×5 at
    /// 80 px, 6×6 at 96), F(4×4) computes outputs past the edge and F(2×2) fewer: there the
    /// switch comes later. `minimum` 0: F(4×4) in every pass.
    static func favoursF4x4(tiles4: Int, tiles2: Int, minimum: Int) -> Bool {
        guard minimum > 0 else { return true }
        // 5 × (tiles + K) in whole numbers: 5K = 7 × minimum.
        return 36 * (5 * tiles4 + 7 * minimum) <= 16 * (5 * tiles2 + 7 * minimum)
    }
    private var winogradBackward: WinogradConvolution?
    private var winogradKernelGradient: WinogradKernelGradient?
    /// With `auto`, F(2×2) for the passes too small for F(4×4) (`ConvolutionOptions.winogradMinimumTiles`).
    private var smallPassWinograd: Winograd2x2?
    private var smallPassWinogradBackward: Winograd2x2?
    /// The images an inference pass takes its algorithm for, whatever its own count: that of a
    /// large pass (F(4×4) where the layer has it). An image's outputs then do not depend on the
    /// images beside it in the pass (the last, shorter one of an evaluation, a rank's share of
    /// it, one image to predict), so a score does not depend on the rank count: in bf16 the
    /// algorithms round differently (F(4×4) to about 2.5%, F(2×2) 0.4%, im2col 0.2%).
    static let inferenceAlgorithmBatch = 1 << 16
    private var flipped = FloatBuffer(count: 0)
    /// The kernel transposed to (F, patch) for our gemm's dX product (see `transposedKernel`).
    private var transposed = FloatBuffer(count: 0)
    private var colHoldsWholeBatch = false
    private var scratch: Scratch!
    /// Whether bf16 packs the im2col operands straight from the input (`catdog_im2col_bf16`,
    /// the default) rather than from an fp32 im2col matrix; the same bits either way (tests
    /// compare the two).
    var packsPatchesFromInput = true

    /// Upper bound for one layer's im2col buffer (floats), overriding the network's
    /// `ConvolutionOptions.columnFloats`; set before `reserve` (tests make it small to
    /// exercise chunking).
    public var maxColumnFloats: Int?

    public init(
        filters: Int, kernelSize: (Int, Int), strides: (Int, Int) = (1, 1),
        padding: ConvGeometry.Padding = .same, activation: Activation = .linear, useBias: Bool = true
    ) {
        self.filters = filters
        self.kernelSize = kernelSize
        self.strides = strides
        self.padding = padding
        self.activation = activation
        self.useBias = useBias
    }

    public convenience init(
        _ filters: Int, _ size: Int, stride: Int = 1, padding: ConvGeometry.Padding = .same,
        activation: Activation = .linear, useBias: Bool = true
    ) {
        self.init(
            filters: filters, kernelSize: (size, size), strides: (stride, stride), padding: padding,
            activation: activation, useBias: useBias)
    }

    public var kind: String { "conv2d" }
    public var writesFreshInputGradients: Bool { true }
    public var maskableActivation: Activation? { activation == .linear ? nil : activation }

    /// The 2×2 max pool that alone reads this layer's output, and that pool's output buffer:
    /// under `PassContext.poolsIntoReader`, a Winograd forward pools into them itself and
    /// leaves its own output unwritten (its backward then needs none of it: the pool has
    /// masked the gradient). Set by `Network.reserve`.
    public var poolsInto: MaxPool2D?
    public var poolOutput: UnsafeMutablePointer<Float>?

    /// The bias the forward adds, nil without one.
    private var appliedBias: UnsafePointer<Float>? { useBias ? UnsafePointer(bias) : nil }
    public var summary: String {
        "conv2d \(kernelSize.0)x\(kernelSize.1)x\(filters) /\(strides.0) \(padding.rawValue)"
            + (activation == .linear ? "" : " \(activation.rawValue)")
    }

    public func configure(inputs: [FeatureShape]) throws -> FeatureShape {
        guard inputs.count == 1 else { throw ShapeError("conv2d takes one input") }
        let x = inputs[0]
        let g = ConvGeometry(
            inHeight: x.height, inWidth: x.width, channels: x.channels,
            kernelHeight: kernelSize.0, kernelWidth: kernelSize.1,
            strideHeight: strides.0, strideWidth: strides.1, padding: padding)
        guard g.outHeight > 0, g.outWidth > 0 else {
            throw ShapeError("conv2d \(kernelSize.0)x\(kernelSize.1) does not fit a \(x) input: the image is too small for this model")
        }
        geometry = g
        return FeatureShape(height: g.outHeight, width: g.outWidth, channels: filters)
    }

    public var parameterSpecs: [ParameterSpec] {
        let g = geometry!
        var specs = [ParameterSpec(
            "kernel", [g.kernelHeight, g.kernelWidth, g.channels, filters],
            .glorotUniform(fanIn: g.patchSize, fanOut: g.kernelHeight * g.kernelWidth * filters), decays: true)]
        if useBias { specs.append(ParameterSpec("bias", [filters], .zeros)) }
        return specs
    }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>, state: UnsafeMutablePointer<Float>) {
        kernel = parameters
        dKernel = gradients
        if useBias {
            bias = parameters + geometry.patchSize * filters
            dBias = gradients + geometry.patchSize * filters
        }
    }

    public func reserve(maxBatch: Int, scratch: Scratch, training: Bool) {
        let g = geometry!
        self.scratch = scratch
        let rowsPerImage = g.outHeight * g.outWidth
        if g.isPointwise {
            chunkRows = maxBatch * rowsPerImage
            return
        }
        chunkRows = max(1, min(maxBatch * rowsPerImage, (maxColumnFloats ?? scratch.convolution.columnFloats) / g.patchSize))
        col = FloatBuffer(count: chunkRows * g.patchSize)
        scratch.reserve(chunkRows * g.patchSize)
        let algorithm = scratch.convolution.algorithm
        if algorithm != .im2col, g.kernelHeight == 3, g.kernelWidth == 3, g.strideHeight == 1, g.strideWidth == 1,
           padding == .same, g.channels >= 16, filters >= 16, winograd == nil {
            let route = scratch.convolution.route
            let small = Winograd2x2(channels: g.channels, filters: filters, buffers: scratch.winograd, route: route)
            let smallBackward = Winograd2x2(channels: filters, filters: g.channels, buffers: scratch.winograd, route: route)
            if algorithm == .winograd2 {
                (winograd, winogradBackward, winogradKernelGradient) = (small, smallBackward, small)
            } else {
                let forward = Winograd4x4(channels: g.channels, filters: filters, buffers: scratch.winograd, route: route)
                winograd = forward
                winogradKernelGradient = forward
                winogradBackward = Winograd4x4(channels: filters, filters: g.channels, buffers: scratch.winograd, route: route)
                (smallPassWinograd, smallPassWinogradBackward) = (small, smallBackward)
            }
            flipped = FloatBuffer(count: 9 * filters * g.channels)
        }
    }

    /// Rows per chunk for a pass of `total` rows: as many chunks as `chunkRows` needs, of equal
    /// length, rounded up to whole 8-row blocks of the gemm where that still fits. A last chunk
    /// of a few rows runs the gemm's one-row blocks: resnet's 256-channel layers at batch 8 were
    /// chunks of 113 and 15 rows, 1.02 ms forward; two of 64 take 0.83. `most`: the rows a chunk
    /// may hold, `chunkRows` unless given.
    func chunkLength(total: Int, most: Int? = nil) -> Int {
        let most = most ?? chunkRows
        guard total > most else { return total }
        let chunks = (total + most - 1) / most
        let even = (total + chunks - 1) / chunks
        let blocks = (even + 7) / 8 * 8
        return blocks <= most ? blocks : even
    }

    public var forwardFLOPs: Int {
        let g = geometry!
        return 2 * g.outHeight * g.outWidth * g.patchSize * filters
    }

    public func forward(inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>, batch: Int, context: PassContext) {
        let g = geometry!
        let x = inputs[0]
        let rowsPerImage = g.outHeight * g.outWidth
        let total = batch * rowsPerImage
        ConvolutionPhases.pass = .forward
        if let winograd = winogradPass(batch: context.training ? batch : Self.inferenceAlgorithmBatch)?.forward {
            winograd.setKernel(kernel)
            colHoldsWholeBatch = false
            if context.poolsIntoReader, let pool = poolsInto, let pooled = poolOutput, let argmax = pool.argmaxPointer,
               batch * g.outHeight * g.outWidth * filters <= Int(Int32.max),
               winograd.runPooling(input: x, images: batch, height: g.inHeight, width: g.inWidth, output: output,
                                   bias: appliedBias, activation: activation.kernelCode,
                                   pooled: pooled, argmax: argmax) {
                pool.filledByProducer = true
                return
            }
            if winograd.runAddingBias(input: x, images: batch, height: g.inHeight, width: g.inWidth, output: output,
                                      bias: appliedBias, activation: activation.kernelCode) {
                return
            }
            winograd.run(input: x, images: batch, height: g.inHeight, width: g.inWidth, output: output, accumulate: false)
        } else if takesDirect, ConvolutionPhases.measure(.products, { directForward(x, output, batch) }) {
            // The bias and activation too, as the kernel stores (vgg's first layer: a pass over
            // its 16.8 MB of outputs at batch 32 less).
            colHoldsWholeBatch = false
            return
        } else if packsPatches, g.channels % 2 == 0, let packedKernel = packedOnce(kernel, k: g.patchSize, n: filters, chunks: true) {
            // A's rows packed straight from x into col's memory (half of it), the same bits as
            // packing the fp32 im2col rows.
            let chunk = chunkLength(total: total)
            var start = 0
            while start < total {
                let rows = min(chunk, total - start)
                ConvolutionPhases.measure(.im2col) { packPatches(rows: start..<(start + rows), of: x, pairs: false) }
                ConvolutionPhases.measure(.products) {
                    _ = catdog_sbgemm_packed(rows, filters, g.patchSize, col.pointer, g.patchSize / 2, 1, packedKernel,
                                             output + start * filters, filters, 0)
                }
                start += rows
            }
            colHoldsWholeBatch = false
        } else {
            let chunk = chunkLength(total: total)
            let packedKernel = packedOnce(kernel, k: g.patchSize, n: filters, chunks: chunk < total)
            var start = 0
            while start < total {
                let rows = min(chunk, total - start)
                let a: UnsafePointer<Float>
                if g.isPointwise {
                    a = UnsafePointer(x + start * g.channels)
                } else {
                    ConvolutionPhases.measure(.im2col) { im2col(g, rows: start..<(start + rows), input: x, col: col.pointer) }
                    a = UnsafePointer(col.pointer)
                }
                multiply(m: rows, n: filters, k: g.patchSize, a: a, rowStrideA: g.patchSize, columnStrideA: 1,
                         b: kernel, ldb: filters, c: output + start * filters, ldc: filters, accumulate: false, packedB: packedKernel)
                start += rows
            }
            colHoldsWholeBatch = total <= chunkRows
        }
        catdog_bias_activation(output, useBias ? bias : nil, total, filters, activation.kernelCode)
    }

    public func backward(
        inputs: [UnsafeMutablePointer<Float>], output: UnsafeMutablePointer<Float>,
        dOutput: UnsafeMutablePointer<Float>, dInputs: [UnsafeMutablePointer<Float>?],
        batch: Int, context: PassContext
    ) {
        let g = geometry!
        let x = inputs[0]
        let rowsPerImage = g.outHeight * g.outWidth
        let total = batch * rowsPerImage
        catdog_mask_bias_gradient(output, dOutput, useBias ? dBias : nil, total, filters,
                                  context.outputGradientMasked ? 0 : activation.kernelCode)
        var dx = dInputs[0]
        // A fresh dX (see `PassContext.freshInputGradients`) is written, not added into.
        let addIntoDX = !context.isFresh(0)
        let pass = winogradPass(batch: batch)
        if let dxAll = dx, let back = pass?.backward {
            winogradInputGradient(back, dOutput: dOutput, into: dxAll, batch: batch, accumulate: addIntoDX)
            dx = nil
        }
        if let winogradKernelGradient = pass?.kernelGradient {
            ConvolutionPhases.pass = .kernelGradient
            winogradKernelGradient.accumulateKernelGradient(input: x, dOutput: dOutput, images: batch, height: g.inHeight,
                                                            width: g.inWidth, into: dKernel)
            return
        }
        ConvolutionPhases.pass = .kernelGradient
        let directGradient = takesDirect && ConvolutionPhases.measure(.products) {
            direct(catdog_conv_direct_kernel_gradient, x, dOutput, dKernel, batch)
        }
        if directGradient, dx == nil { return }
        // Wᵀ once for all chunks (it was redone per chunk: 0.5 ms each for resnet's last stage);
        // in bf16 packed straight from W.
        ConvolutionPhases.pass = .inputGradient
        let chunk = chunkLength(total: total)
        let transposedPacked = dx == nil ? nil : packedTransposedKernel()
        let wt = dx == nil || transposedPacked != nil ? nil : transposedKernel()
        let packedWT = transposedPacked ?? wt.flatMap {
            packedOnce($0, k: filters, n: g.isPointwise ? g.channels : g.patchSize, chunks: chunk < total)
        }
        let pairedGradient = !directGradient && packsPatches
        if pairedGradient { accumulatePairedKernelGradient(total: total, input: x, dOutput: dOutput) }
        // col2im adds the patches' overlapping contributions: into zeros when dX is fresh.
        if let dx, !addIntoDX, !g.isPointwise { dx.update(repeating: 0, count: batch * g.inHeight * g.inWidth * g.channels) }
        var start = 0
        while start < total {
            let rows = start..<min(start + chunk, total)
            if !directGradient, !pairedGradient {
                accumulateKernelGradient(rows: rows, input: x, dOutput: dOutput + start * filters)
            }
            if let dx {
                inputGradient(rows: rows, dOutput: dOutput, into: dx, accumulate: g.isPointwise && addIntoDX,
                              transposedPacked: transposedPacked, transposed: wt, packedTransposed: packedWT)
            }
            start = rows.upperBound
        }
    }

    /// dW over all `total` rows in chunks of twice `chunkRows`: packed in pairs of bf16 words, a
    /// chunk's patches take half the bytes of fp32 rows, so col holds twice the rows, and dW runs
    /// in half the chunks, each a pass that adds into all of dW (2.36 MB in resnet's last stage,
    /// from memory). At 8 images a core that stage's dW was two passes of k = 64, which spent more
    /// time adding into dW than multiplying.
    private func accumulatePairedKernelGradient(total: Int, input x: UnsafePointer<Float>, dOutput: UnsafePointer<Float>) {
        let pairChunk = chunkLength(total: total, most: 2 * chunkRows)
        var start = 0
        while start < total {
            let rows = min(pairChunk, total - start)
            accumulateKernelGradient(rows: start..<(start + rows), input: x, dOutput: dOutput + start * filters)
            start += rows
        }
    }

    /// dX of the output pixels `rows`: dX itself (pointwise) or dCol = dY (rows, F) · Wᵀ (F, patch),
    /// then col2im into `dx`; from Wᵀ packed in bf16, else Wᵀ in fp32 (our gemms read it stored,
    /// packed once when given), else BLAS from W.
    private func inputGradient(rows: Range<Int>, dOutput: UnsafePointer<Float>, into dx: UnsafeMutablePointer<Float>, accumulate: Bool,
                               transposedPacked: UnsafeRawPointer?, transposed wt: UnsafePointer<Float>?,
                               packedTransposed packedWT: UnsafeRawPointer?) {
        let g = geometry!, count = rows.count, dy = dOutput + rows.lowerBound * filters
        ConvolutionPhases.pass = .inputGradient
        let (out, width) = g.isPointwise ? (dx + rows.lowerBound * g.channels, g.channels) : (scratch.pointer, g.patchSize)
        let fromPacked = transposedPacked.map { wtPacked in
            ConvolutionPhases.measure(.products) {
                catdog_sbgemm_f32_packed_b(count, width, filters, dy, filters, 1, wtPacked, out, width, accumulate ? 1 : 0) != 0
            }
        } ?? false
        if !fromPacked, let wt {
            multiply(m: count, n: width, k: filters, a: dy, rowStrideA: filters, columnStrideA: 1,
                     b: wt, ldb: width, c: out, ldc: width, accumulate: accumulate, packedB: packedWT)
        } else if !fromPacked {
            ConvolutionPhases.measure(.products) {
                gemm(transB: true, m: count, n: width, k: filters, a: dy, lda: filters,
                     b: kernel, ldb: filters, beta: accumulate ? 1 : 0, c: out, ldc: width)
            }
        }
        if !g.isPointwise { ConvolutionPhases.measure(.im2col) { col2im(g, rows: rows, dCol: out, dInput: dx) } }
    }

    /// dW (patch, F) += colᵀ (patch, rows) · dY (rows, F) for the output pixels `rows` of one
    /// chunk, dy pointing at their first row of dY.
    private func accumulateKernelGradient(rows: Range<Int>, input x: UnsafePointer<Float>, dOutput dy: UnsafePointer<Float>) {
        let g = geometry!
        ConvolutionPhases.pass = .kernelGradient
        if packsPatches {
            // Aᵀ = colᵀ in pairs of rows straight from x (into col's memory), dY packed by the
            // product: the same bits as packing the fp32 im2col rows.
            ConvolutionPhases.measure(.im2col) { packPatches(rows: rows, of: x, pairs: true) }
            ConvolutionPhases.measure(.products) {
                _ = catdog_sbgemm_packed_a(g.patchSize, filters, rows.count, col.pointer, 1, g.patchSize, dy, filters,
                                           dKernel, filters, 1)
            }
            return
        }
        let a: UnsafePointer<Float>
        if g.isPointwise {
            a = x + rows.lowerBound * g.channels
        } else {
            if !colHoldsWholeBatch {
                ConvolutionPhases.measure(.im2col) { im2col(g, rows: rows, input: x, col: col.pointer) }
            }
            a = UnsafePointer(col.pointer)
        }
        multiply(m: g.patchSize, n: filters, k: rows.count, a: a, rowStrideA: 1, columnStrideA: g.patchSize,
                 b: dy, ldb: filters, c: dKernel, ldc: filters, accumulate: true)
    }

    /// dX as Winograd's convolution of dY with the flipped, transposed kernel
    /// (W'[kh, kw, f, c] = W[2-kh, 2-kw, c, f]), written into `dx` or added when `accumulate`.
    private func winogradInputGradient(_ back: WinogradConvolution, dOutput: UnsafeMutablePointer<Float>,
                                       into dx: UnsafeMutablePointer<Float>, batch: Int, accumulate: Bool) {
        let g = geometry!, c = g.channels
        ConvolutionPhases.pass = .inputGradient
        ConvolutionPhases.measure(.im2col) {
            for tap in 0..<9 {
                catdog_transpose(kernel + (8 - tap) * c * filters, c, filters, flipped.pointer + tap * filters * c)
            }
        }
        back.setKernel(flipped.pointer)
        back.run(input: dOutput, images: batch, height: g.inHeight, width: g.inWidth, output: dx, accumulate: accumulate)
    }

    /// A layer on few channels (an image's), on our kernels: forward and the kernel gradient as
    /// fp32 direct convolutions where the C kernels take the shape (`catdog_conv_direct_*`),
    /// without im2col (whose runs of 3 floats and products of k = 27 cost several times the
    /// arithmetic; docs/performance.md). Under `--precision bf16` too: there im2col's products
    /// in bf16 took twice the direct convolution's time.
    private var takesDirect: Bool {
        geometry.channels <= 4 && !geometry.isPointwise && scratch.convolution.route != .blas
    }

    /// The direct forward with this layer's bias and activation; false where it declines.
    private func directForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ images: Int) -> Bool {
        let g = geometry!
        return catdog_conv_direct_forward_bias(x, kernel, appliedBias, activation.kernelCode, y, images,
                                               g.inHeight, g.inWidth, g.channels, filters, g.kernelHeight, g.kernelWidth,
                                               g.strideHeight, g.strideWidth, g.padTop, g.padLeft, g.outHeight, g.outWidth) != 0
    }

    /// Calls a direct-convolution kernel with this layer's geometry; false where it declines.
    private func direct(_ kernel: (UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafeMutablePointer<Float>?,
                                   Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) -> Int32,
                        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ images: Int) -> Bool {
        let g = geometry!
        return kernel(a, b, out, images, g.inHeight, g.inWidth, g.channels, filters, g.kernelHeight, g.kernelWidth,
                      g.strideHeight, g.strideWidth, g.padTop, g.padLeft, g.outHeight, g.outWidth) != 0
    }

    /// Whether the bf16 products take this layer's im2col operands packed straight from the
    /// input (`packPatches`): where bf16 runs them and the layer has patches to unfold.
    private var packsPatches: Bool {
        packsPatchesFromInput && scratch.convolution.route == .bf16 && !geometry.isPointwise && catdog_bf16_products_available() != 0
    }

    /// The im2col rows `rows` of x rounded to bf16 and packed into col's memory: by rows (A of
    /// the forward product, patch/2 words a row) or in pairs of rows (Aᵀ of dW's).
    private func packPatches(rows: Range<Int>, of x: UnsafePointer<Float>, pairs: Bool) {
        let g = geometry!
        _ = catdog_im2col_bf16(x, g.inHeight, g.inWidth, g.channels, g.kernelHeight, g.kernelWidth, g.strideHeight, g.strideWidth,
                               g.padTop, g.padLeft, g.outHeight, g.outWidth, rows.lowerBound, rows.count, pairs ? 1 : 0, col.pointer)
    }

    /// Under bf16, B (k, n), row-major and read by every chunk of a pass, rounded and packed once
    /// into the network's scratch rather than by each chunk's product; nil where the pass has
    /// one chunk, or bf16 does not take the products. The same pairs either way, so the same bits.
    private func packedOnce(_ b: UnsafePointer<Float>, k: Int, n: Int, chunks: Bool) -> UnsafeRawPointer? {
        guard chunks, scratch.convolution.route == .bf16 else { return nil }
        scratch.reservePackedOperand((k + 1) / 2 * n)
        let packed = scratch.packedOperand.pointer
        let done = ConvolutionPhases.measure(.products) { catdog_bf16_pack_pair_rows(b, k, n, n, packed) != 0 }
        return done ? UnsafeRawPointer(packed) : nil
    }

    /// Where this layer's products go: the options' route (`ConvolutionOptions.route`), except
    /// that a 1×1 convolution's take OpenBLAS where our fp32 gemm is the AVX2 one. Its products
    /// span a whole pass's pixels, far larger than Winograd's or an im2col chunk's, and there
    /// OpenBLAS's blocking was faster, and needs no transposed kernel for dX
    /// (`catdog-dist bench --model efficientnet-lite0 --image-size 64 --batch-size 32`, a Zen 3:
    /// products 110–127 ms a step against 132–143 on our AVX2 gemm, and 10 ms of transposes).
    private var route: GemmRoute {
        let options = scratch.convolution.route
        return options == .own && geometry.isPointwise && catdog_kernels_avx512() == 0 ? .blas : options
    }

    /// C = A · B (or += when `accumulate`), by `route`; from `packedB` (see `packedOnce`) where
    /// given.
    private func multiply(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, rowStrideA: Int, columnStrideA: Int,
                          b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool,
                          packedB: UnsafeRawPointer? = nil) {
        if let packedB, ConvolutionPhases.measure(.products, {
            catdog_sbgemm_f32_packed_b(m, n, k, a, rowStrideA, columnStrideA, packedB, c, ldc, accumulate ? 1 : 0) != 0
        }) { return }
        ConvolutionPhases.measure(.products) {
            CatdogEngine.multiply(route: route, m: m, n: n, k: k, a: a, rowStrideA: rowStrideA,
                                  columnStrideA: columnStrideA, b: b, ldb: ldb, c: c, ldc: ldc, accumulate: accumulate)
        }
    }

    /// Under bf16, Wᵀ (F, patch) rounded and packed in pairs along F for dX's products straight
    /// from the kernel (`catdog_bf16_pack_transposed`: no fp32 transpose; the same bits as packing
    /// it), once per backward; nil where bf16 does not take the products.
    private func packedTransposedKernel() -> UnsafeRawPointer? {
        guard scratch.convolution.route == .bf16 else { return nil }
        let patch = geometry.patchSize
        scratch.reservePackedOperand((filters + 1) / 2 * patch)
        let packed = scratch.packedOperand.pointer
        let done = ConvolutionPhases.measure(.products) { catdog_bf16_pack_transposed(kernel, patch, filters, packed) != 0 }
        return done ? UnsafeRawPointer(packed) : nil
    }

    /// The kernel as (F, patch), for our gemms' dY · Wᵀ (they read B's rows in place), once per
    /// backward; nil when BLAS does that product (options, CPU, or a width our fp32 gemm declines).
    private func transposedKernel() -> UnsafePointer<Float>? {
        let patch = geometry.patchSize
        switch route {
        case .blas: return nil
        case .own: guard ownGemmTakes(width: geometry.isPointwise ? geometry.channels : patch) else { return nil }
        case .bf16: break
        }
        if transposed.count < patch * filters { transposed = FloatBuffer(count: patch * filters) }
        ConvolutionPhases.measure(.im2col) { catdog_transpose(kernel, patch, filters, transposed.pointer) }
        return UnsafePointer(transposed.pointer)
    }
}
