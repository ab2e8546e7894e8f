// swift-tools-version:6.0
import PackageDescription

// MARK: - Build settings shared by the numeric targets

/// Numeric code runs 10-50x slower unoptimised; the C kernels are always built with -O3 and pick
/// their portable / AVX2 / AVX-512 variants at run time (the default x86-64 target is SSE2 only).
/// No floating-point contraction: every level then performs the same IEEE operations in the same
/// order, so the element-wise and per-channel kernels agree bit for bit across levels (the GEMM
/// micro-kernels use explicit FMAs and are tested against bounds instead).
let cOptimised: [CSetting] = [.unsafeFlags(["-O3", "-fno-math-errno", "-ffp-contract=off"])]

let package = Package(
    name: "DualFuse",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "bench", targets: ["bench"]),
        .executable(name: "train_dual", targets: ["train_dual"]),
        .executable(name: "val_dual", targets: ["val_dual"]),
        .executable(name: "predict", targets: ["predict"]),
        .executable(name: "check_data", targets: ["check_data"]),
        .executable(name: "synth_data", targets: ["synth_data"]),
        .executable(name: "export", targets: ["export"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // MARK: - C layer
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .target(name: "CKernels", cSettings: cOptimised),
        .target(name: "CImageIO", cSettings: cOptimised,
                linkerSettings: [.linkedLibrary("png"), .linkedLibrary("jpeg")]),
        // Open MPI, loaded at run time (dlopen) only under mpirun: no link-time dependency.
        .target(name: "CMPI", linkerSettings: [.linkedLibrary("dl")]),
        // FFmpeg (paired video in predict), opened at run time on the first video.
        .target(name: "CVideo", cSettings: cOptimised, linkerSettings: [.linkedLibrary("dl"), .linkedLibrary("pthread")]),

        // oneDNN's convolution primitives (Debian's libdnnl-dev; opened at run time): the bfloat16
        // autocast convolutions and predict's.
        .target(name: "CDNNL", cSettings: cOptimised, linkerSettings: [.linkedLibrary("dl")]),

        // MARK: - Tensor + autodiff core
        .target(name: "TensorCore", dependencies: ["CBLAS", "CKernels", "CDNNL"]),

        // MARK: - Model: layers, YAML graphs, detection
        .target(name: "NN", dependencies: ["TensorCore"]),
        .target(name: "Detection", dependencies: [
            "NN", "TensorCore", .product(name: "Yams", package: "Yams"),
        ]),

        // MARK: - Protocol-buffers wire format (ONNX models, TensorBoard events)
        .target(name: "ProtoWire"),

        // MARK: - Export (ONNX), knows models and weights, not training
        .target(name: "Export", dependencies: ["Detection", "NN", "TensorCore", "ProtoWire"], exclude: ["README.md"]),

        // MARK: - Data pipeline (paired RGB-IR datasets, augmentation, loader, synthetic scenes)
        .target(name: "DataPipeline", dependencies: [
            "TensorCore", "CImageIO", "CVideo", .product(name: "Yams", package: "Yams"),
        ], exclude: ["README.md"]),

        // MARK: - Data-parallel training (processes of one job, Open MPI)
        .target(name: "DataParallel", dependencies: ["CMPI"]),

        // MARK: - Training engine
        .target(name: "Training", dependencies: [
            "Detection", "NN", "TensorCore", "DataPipeline", "ProtoWire", "DataParallel", .product(name: "Yams", package: "Yams"),
        ]),

        // MARK: - Executables
        .executableTarget(name: "val_dual", dependencies: [
            "Training", "Detection", "DataPipeline", "TensorCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "predict", dependencies: [
            "Training", "Detection", "DataPipeline", "TensorCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "train_dual", dependencies: [
            "Training", "Detection", "DataPipeline", "TensorCore", "DataParallel",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "bench", dependencies: [
            "TensorCore", "NN", "Detection", "DataPipeline", "Training", "Export", "DataParallel",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "check_data", dependencies: [
            "DataPipeline",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "export", dependencies: [
            "Export", "Detection", "NN", "TensorCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "synth_data", dependencies: [
            "DataPipeline",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: - Tests
        .target(name: "_TestSupport", dependencies: ["TensorCore"], path: "Tests/_TestSupport"),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore", "_TestSupport", "CKernels"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "DataPipeline", "Detection", "NN", "TensorCore", "_TestSupport",
                                                        "Export", "ProtoWire", "DataParallel"]),
        .testTarget(name: "NNTests", dependencies: ["NN", "Detection", "TensorCore", "_TestSupport"]),
        .testTarget(name: "DetectionTests", dependencies: ["Detection", "NN", "TensorCore", "_TestSupport"]),
        .testTarget(name: "DataPipelineTests", dependencies: ["DataPipeline", "TensorCore"]),
    ]
)
