import ArgumentParser

/// `bench`: prints performance figures (run in release: `swift run -c release bench <sub>`).
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "DualFuse benchmarks: figures, not pass/fail tests. Build with -c release.",
        subcommands: [ConvBench.self, ModelBench.self, LossBench.self, LoaderBench.self, TrainBench.self])
}
