import CatdogEngine

/// Runs `body` once with each of `sets` that this CPU runs (our C kernels switched to it), then
/// switches back to the best set; returns the sets that ran.
@discardableResult
func forEachKernelInstructionSet(_ sets: [KernelInstructionSet] = [.baseline, .avx2, .avx512f],
                                 _ body: (KernelInstructionSet) throws -> Void) rethrows -> [KernelInstructionSet] {
    defer { try? KernelInstructionSet.auto.select() }
    var ran: [KernelInstructionSet] = []
    for kernels in sets {
        guard (try? kernels.select()) != nil else { continue }
        ran.append(kernels)
        try body(kernels)
    }
    return ran
}
