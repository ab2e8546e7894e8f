import Foundation

/// The grad-probe rule: given the pre-clip norms of the first N steps, suggest
/// max_norm = sqrt(max(2 x mean, p95) x max), rounded to two significant digits: the geometric
/// mean of "comfortably above a typical step" and the largest spike, so typical steps pass and
/// spikes are cut (the seeds' example: mean 0.8, max 6 -> sqrt(1.6 x 6) = 3.1).
public enum GradProbe {
    public struct Summary: Equatable, Sendable {
        public let mean, p95, max, suggested: Double
    }

    public static func summarize(_ norms: [Double]) -> Summary? {
        let v = norms.filter { $0.isFinite }.sorted()
        guard !v.isEmpty else { return nil }
        let mean = v.reduce(0, +) / Double(v.count)
        let pos = 0.95 * Double(v.count - 1), lo = Int(pos), hi = min(lo + 1, v.count - 1)
        let p95 = v[lo] + (v[hi] - v[lo]) * (pos - Double(lo))     // numpy's linear percentile
        let mx = v.last!
        return Summary(mean: mean, p95: p95, max: mx, suggested: roundSignificant((max(2 * mean, p95) * mx).squareRoot(), digits: 2))
    }

    static func roundSignificant(_ x: Double, digits: Int) -> Double {
        guard x > 0 else { return 0 }
        let p = Foundation.pow(10, Double(digits) - ceil(log10(x)))
        return (x * p).rounded() / p
    }
}
