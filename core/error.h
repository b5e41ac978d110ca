// Errors: a status code plus a message with context, kept per thread (like errno).
// A function that can fail returns a dsa_status, or NULL for functions that return a tensor;
// the message (dsa_error_message) says what was wrong and where.
#pragma once
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DSA_OK = 0,
    DSA_ERR_SHAPE,       // shapes do not fit the op
    DSA_ERR_DTYPE,       // wrong element type
    DSA_ERR_DEVICE,      // wrong device, or the build lacks it
    DSA_ERR_INDEX,       // an index outside its range
    DSA_ERR_VALUE,       // a bad argument value
    DSA_ERR_IO,          // file I/O, HDF5
    DSA_ERR_MEMORY,      // out of memory
    DSA_ERR_CUDA,        // CUDA, cuBLAS, cuRAND
    DSA_ERR_CONFIG,      // config file
    DSA_ERR_UNSUPPORTED, // not implemented for these arguments
    DSA_ERR_COMM,        // MPI, NCCL
    DSA_ERR_STATE,       // called in the wrong state (e.g. backward without a tape)
} dsa_status;

// Sets the error (the first error wins until dsa_error_clear) and returns the status.
dsa_status dsa_error_set(dsa_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Prefixes context to the current message ("while loading x.h5: ...").
void dsa_error_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
dsa_status dsa_error_status(void);
const char *dsa_error_message(void);
const char *dsa_status_name(dsa_status s);
void dsa_error_clear(void);

// For unrecoverable programming errors in host code (allocation failures at start-up, etc.).
#define DSA_FATAL(...)                                                        \
    do {                                                                      \
        fprintf(stderr, "dsa: fatal at %s:%d: ", __FILE__, __LINE__);         \
        fprintf(stderr, __VA_ARGS__);                                         \
        fprintf(stderr, "\n");                                                \
        exit(1);                                                              \
    } while (0)

// Propagate a failing status to the caller.
#define DSA_TRY(expr)                                                         \
    do {                                                                      \
        dsa_status s_ = (expr);                                               \
        if (s_ != DSA_OK) return s_;                                          \
    } while (0)

#ifdef __cplusplus
}
#endif
