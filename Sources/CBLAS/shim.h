#ifndef DUALFUSE_CBLAS_SHIM_H
#define DUALFUSE_CBLAS_SHIM_H
// OpenBLAS's CBLAS interface plus its thread controls (pkg-config openblas adds the include path).
#include <cblas.h>
#endif
