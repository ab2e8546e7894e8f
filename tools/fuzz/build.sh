#!/usr/bin/env bash
# Builds the libFuzzer targets into .build-fuzz/: the parsers of untrusted input.
#   Swift (the module under test compiled with -sanitize=fuzzer, its dependencies linked prebuilt
#   from .build/release): labels, data_yaml (DataPipeline), model_yaml (Detection),
#   hyp_yaml (Training), safetensors (NN).
#   C (clang -fsanitize=fuzzer,address): png, jpeg (CImageIO).
# Needs `swift build -c release --build-tests -Xswiftc -enable-testing` first (make test does it).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=.build/release
OUT=.build-fuzz
mkdir -p "$OUT"
rm -f "$OUT"/labels "$OUT"/data_yaml "$OUT"/model_yaml "$OUT"/hyp_yaml "$OUT"/safetensors "$OUT"/png "$OUT"/jpeg
SWIFTC=${SWIFTC:-swiftc}
CLANG=${CLANG:-$(dirname "$(command -v "$SWIFTC")")/clang}
[ -x "$CLANG" ] || CLANG=clang
for m in TensorCore NN Detection DataPipeline DataParallel ProtoWire Training Yams; do
  [ -f "$B/Modules/$m.swiftmodule" ] || { echo "build.sh: $B/Modules/$m.swiftmodule missing; run make test (or swift build --build-tests -c release -Xswiftc -enable-testing) first" >&2; exit 1; }
done

MAPS=(-Xcc -fmodule-map-file=$B/CKernels.build/module.modulemap -Xcc -fmodule-map-file=$B/CImageIO.build/module.modulemap
      -Xcc -fmodule-map-file=$B/CVideo.build/module.modulemap -Xcc -fmodule-map-file=$B/CMPI.build/module.modulemap
      -Xcc -fmodule-map-file=$B/CDNNL.build/module.modulemap
      -Xcc -fmodule-map-file=Sources/CBLAS/module.modulemap -Xcc -fmodule-map-file=.build/checkouts/Yams/Sources/CYaml/include/module.modulemap
      -Xcc -I -Xcc Sources/CKernels/include -Xcc -I -Xcc Sources/CImageIO/include -Xcc -I -Xcc Sources/CVideo/include -Xcc -I -Xcc Sources/CMPI/include -Xcc -I -Xcc Sources/CDNNL/include -Xcc -I -Xcc /usr/include/x86_64-linux-gnu/openblas-pthread)
objs() { for m in "$@"; do find "$B/$m.build" -name '*.o' ! -name '*Tests*'; done; }
LIBS=(-lopenblas -lpng -ljpeg -ldl)

# swift_target NAME MODULE-UNDER-TEST HARNESS PREBUILT-MODULES...
swift_target() {
  local name=$1 module=$2 harness=$3; shift 3
  local sources; sources=$(find "Sources/$module" -name '*.swift' | sort)
  # shellcheck disable=SC2046
  "$SWIFTC" -O -sanitize=fuzzer -parse-as-library -module-name "Fuzz_$name" -I "$B/Modules" "${MAPS[@]}" \
    "tools/fuzz/$harness" $sources $(objs "$@") "${LIBS[@]}" -o "$OUT/$name" 2>&1 | grep -v "ld.gold: warning: Cannot export local symbol" || true
  [ -x "$OUT/$name" ] || { echo "build.sh: $name failed to build" >&2; exit 1; }
  echo "built $OUT/$name"
}

swift_target labels DataPipeline labels.swift TensorCore CKernels CDNNL CImageIO CVideo Yams CYaml
swift_target data_yaml DataPipeline data_yaml.swift TensorCore CKernels CDNNL CImageIO CVideo Yams CYaml
swift_target model_yaml Detection model_yaml.swift NN TensorCore CKernels CDNNL Yams CYaml
swift_target hyp_yaml Training hyp_yaml.swift Detection NN DataPipeline DataParallel ProtoWire TensorCore CKernels CDNNL CImageIO CVideo CMPI Yams CYaml
swift_target safetensors NN safetensors.swift TensorCore CKernels CDNNL

for t in png:CIMG_FORMAT_PNG jpeg:CIMG_FORMAT_JPEG; do
  "$CLANG" -O1 -g -fsanitize=fuzzer,address -DFUZZ_FORMAT="${t#*:}" -I Sources/CImageIO/include -I Sources/CImageIO tools/fuzz/image.c \
    Sources/CImageIO/common.c Sources/CImageIO/png.c Sources/CImageIO/jpeg.c -lpng -ljpeg -o "$OUT/${t%%:*}" 2>&1 \
    | grep -v "ld.gold: warning: Cannot export local symbol" || true
  [ -x "$OUT/${t%%:*}" ] || { echo "build.sh: ${t%%:*} failed to build" >&2; exit 1; }
  echo "built $OUT/${t%%:*}"
done
