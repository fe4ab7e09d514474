import CatdogSupport

/// The central difference (loss(x + ε) − loss(x − ε)) / 2ε in entry `i` of `values`, which is
/// restored afterwards: the one finite-difference step every gradient check uses.
func centralDifference(_ values: FloatBuffer, _ i: Int, epsilon: Float, loss: () -> Double) -> Double {
    let saved = values[i]
    values[i] = saved + epsilon
    let plus = loss()
    values[i] = saved - epsilon
    let minus = loss()
    values[i] = saved
    return (plus - minus) / Double(2 * epsilon)
}

/// Whether an analytic gradient matches its finite difference:
/// |analytic − numeric| ≤ absolute + relative · max(|analytic|, |numeric|). NaN never agrees.
func gradientAgrees(_ analytic: Double, _ numeric: Double, absolute: Double, relative: Double) -> Bool {
    abs(analytic - numeric) <= absolute + relative * max(abs(analytic), abs(numeric))
}
